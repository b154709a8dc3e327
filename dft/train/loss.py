"""The diffusion training loss: noise the latents, predict, regress the scheduler's target.

Pure torch. The noise schedule comes in as ``alphas_cumprod`` (from the pipeline's scheduler config),
so the loss is testable without any pipeline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PREDICTION_TYPES = ("epsilon", "v_prediction")


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def add_noise(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor):
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps (the forward process, DDPM eq. 4)."""
    a = alphas_cumprod.to(latents.device)[timesteps]
    return _expand(a.sqrt(), latents) * latents + _expand((1 - a).sqrt(), latents) * noise


def prediction_target(
    latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the UNet regresses: eps, or v = sqrt(a_t) eps - sqrt(1 - a_t) x_0 (Salimans & Ho 2022)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a = alphas_cumprod.to(latents.device)[timesteps]
        return _expand(a.sqrt(), latents) * noise - _expand((1 - a).sqrt(), latents) * latents
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def snr(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return a / (1 - a)


def min_snr_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float, prediction_type: str):
    """Min-SNR-gamma loss weights (Hang et al. 2023), as in diffusers' train_text_to_image.py:
    min(SNR, gamma) / SNR for epsilon targets, min(SNR, gamma) / (SNR + 1) for v targets."""
    s = snr(timesteps, alphas_cumprod)
    clipped = torch.clamp(s, max=gamma)
    if prediction_type == "epsilon":
        return clipped / s
    if prediction_type == "v_prediction":
        return clipped / (s + 1)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def diffusion_loss(
    model_pred: torch.Tensor,
    target: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """Mean squared error in fp32, optionally min-SNR weighted per sample."""
    pred, target = model_pred.float(), target.float()
    if snr_gamma is None:
        return F.mse_loss(pred, target, reduction="mean")
    per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=list(range(1, pred.ndim)))
    weights = min_snr_weights(timesteps, alphas_cumprod, snr_gamma, prediction_type).to(per_sample.device)
    return (per_sample * weights).mean()
