"""The diffusion training losses: noise the latents, predict, regress the target.

Pure torch. DDPM families (SD, SDXL): the noise schedule comes in as ``alphas_cumprod`` (from the
pipeline's scheduler config). Flow-matching families (SD3, FLUX): the scheduler's sigma grid comes in
as ``sigmas``; noisy = (1 - sigma) x0 + sigma eps, the target is eps - x0, with the timestep densities
and loss weightings of diffusers' SD3/FLUX recipes (``training_utils.compute_density_for_timestep_sampling``
and ``compute_loss_weighting_for_sd3``, re-written here with the same formulas and tested against
them). Everything is testable without any pipeline."""

from __future__ import annotations

import math

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
        # min(SNR, gamma) / SNR -> 1 as SNR -> 0: a zero-terminal-SNR schedule (alphas_cumprod[-1] == 0)
        # would give 0/0 = NaN at its last timestep (diffusers sets those weights to 1 as well).
        return torch.where(s > 0, clipped / s.clamp_min(torch.finfo(s.dtype).tiny), torch.ones_like(s))
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


# -- flow matching (SD3, FLUX) -----------------------------------------------------------------------

WEIGHTING_SCHEMES = ("logit_normal", "mode", "none", "sigma_sqrt", "cosmap")


def timestep_density(scheme: str, batch_size: int, *, logit_mean: float = 0.0, logit_std: float = 1.0,
                     mode_scale: float = 1.29, generator: torch.Generator | None = None) -> torch.Tensor:
    """u in [0, 1) per sample; the timestep index is floor(u * num_train_timesteps) (SD3 paper, sec. 3.1)."""
    if scheme == "logit_normal":
        u = torch.normal(mean=logit_mean, std=logit_std, size=(batch_size,), generator=generator)
        return torch.sigmoid(u)
    u = torch.rand(size=(batch_size,), generator=generator)
    if scheme == "mode":
        return 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    return u


def flow_loss_weighting(scheme: str, sigmas: torch.Tensor) -> torch.Tensor:
    """Per-sample loss weights: sigma^-2 (sigma_sqrt), 2 / (pi (1 - 2 sigma + 2 sigma^2)) (cosmap), else 1."""
    if scheme == "sigma_sqrt":
        return (sigmas.float() ** -2.0)
    if scheme == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigmas.float() + 2 * sigmas.float() ** 2))
    return torch.ones_like(sigmas, dtype=torch.float32)


def sample_flow_timesteps(u: torch.Tensor, timesteps: torch.Tensor, sigmas: torch.Tensor):
    """(timesteps, sigmas) of the scheduler's training grid at indices floor(u * N), as the recipes index
    ``noise_scheduler.timesteps``; u that rounds to 1.0 takes the last index."""
    n = timesteps.shape[0]
    idx = (u * n).long().clamp(0, n - 1)
    return timesteps[idx], sigmas[idx]


def flow_noisy(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_sigma = (1 - sigma) x0 + sigma eps: the straight path from data (sigma 0) to noise (sigma 1)."""
    s = _expand(sigmas, latents)
    return (1.0 - s) * latents + s * noise


def flow_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity d x_sigma / d sigma = eps - x0 that the transformer regresses."""
    return noise - latents


def flow_loss(model_pred: torch.Tensor, target: torch.Tensor, weighting: torch.Tensor) -> torch.Tensor:
    """mean_b mean_i w_b (pred - target)^2, in fp32 (the recipes' reduction)."""
    err = (model_pred.float() - target.float()) ** 2
    per_sample = err.reshape(err.shape[0], -1).mean(dim=1)
    return (weighting.to(per_sample.device).float() * per_sample).mean()
