"""The training step and loop, in pure torch.

``DiffusionModule`` holds the UNet, the text encoder and (unless latents were precomputed) the VAE,
and turns one batch into one loss. ``run_steps`` drives any ``StepBackend`` (plain torch here, a
DeepSpeed engine in ``loop.py``) over an iterator of batches and hands each step's numbers to a
callback. Nothing here knows about Ray or DeepSpeed."""

from __future__ import annotations

from dft.errors import DftError
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch

from dft.train.loss import add_noise, diffusion_loss, prediction_target


class NonFiniteLoss(DftError, RuntimeError):
    """The loss became NaN or infinite; the run stops, the last good checkpoint stays the latest."""

    def __init__(self, step: int, value: float):
        super().__init__(
            f"loss is {value} at step {step}: training stopped before the optimizer step, so the weights "
            "and the last checkpoint are the last good ones. Lower train.learning_rate, set "
            "train.max_grad_norm, or use precision fp32/bf16 instead of fp16."
        )
        self.step, self.value = step, value


class DataExhausted(RuntimeError):
    pass


def _swap_rows(ids: torch.Tensor, other: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Each row of ``ids`` replaced by ``other`` (its row, or one caption for all) with probability p."""
    drop = torch.rand(ids.shape[0], generator=generator) < p
    return torch.where(drop.to(ids.device)[:, None], other.to(ids.device), ids)


def choose_captions(
    prompt_ids: torch.Tensor, neutral_ids: torch.Tensor, policy: str, q: float, generator: torch.Generator | None
) -> torch.Tensor:
    """The caption policy: the full prompt, the neutral template, or the prompt whose attribute words
    are dropped (i.e. the neutral template) with probability q per sample, drawn anew every step."""
    if policy == "prompt":
        return prompt_ids
    if policy == "neutral":
        return neutral_ids
    if policy == "attribute_dropout":
        return _swap_rows(prompt_ids, neutral_ids, q, generator)
    raise ValueError(f"unknown caption policy {policy!r}")


def drop_to_empty(ids: torch.Tensor, empty_ids: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Replace each sample's caption by the empty caption with probability p (drawn anew every step),
    so the model also learns the unconditional prediction classifier-free guidance subtracts."""
    if p <= 0:
        return ids
    return _swap_rows(ids, empty_ids[None, :], p, generator)


class DiffusionModule(torch.nn.Module):
    """One module for the engine: batch in, scalar loss out.

    A batch holds ``input_ids`` (B, L) and either ``pixels`` (B, 3, H, W, uint8 or float in [-1, 1])
    or ``latent_params`` (B, 2C, h, w: the VAE posterior's mean and log-variance, precomputed)."""

    def __init__(self, unet, text_encoder, vae, alphas_cumprod: torch.Tensor, prediction_type: str,
                 scaling_factor: float, snr_gamma: float | None = None, shift_factor: float | None = None):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.vae = vae
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)
        self.prediction_type = prediction_type
        self.scaling_factor = scaling_factor
        self.shift_factor = shift_factor or 0.0
        self.snr_gamma = snr_gamma

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def latents(self, batch: dict) -> torch.Tensor:
        dtype = self.dtype
        if "latent_params" in batch:
            mean, logvar = batch["latent_params"].float().chunk(2, dim=1)
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            lat = mean + std * torch.randn_like(mean)
        else:
            if self.vae is None:
                raise ValueError("batch has pixels but the module holds no VAE (latents were expected)")
            px = batch["pixels"]
            px = px.float() / 127.5 - 1.0 if px.dtype == torch.uint8 else px.float()
            with torch.no_grad():
                lat = self.vae.encode(px.to(dtype)).latent_dist.sample().float()
        return ((lat - self.shift_factor) * self.scaling_factor).to(dtype)

    def forward(self, batch: dict) -> torch.Tensor:
        latents = self.latents(batch)
        noise = torch.randn_like(latents)
        n = self.alphas_cumprod.shape[0]
        timesteps = torch.randint(0, n, (latents.shape[0],), device=latents.device)
        noisy = add_noise(latents, noise, timesteps, self.alphas_cumprod)
        target = prediction_target(latents, noise, timesteps, self.alphas_cumprod, self.prediction_type)
        hidden = self.text_encoder(batch["input_ids"], return_dict=False)[0]
        pred = self.unet(noisy, timesteps, hidden.to(self.dtype), return_dict=False)[0]
        return diffusion_loss(pred, target, timesteps, self.alphas_cumprod, self.prediction_type, self.snr_gamma)


class StepBackend(Protocol):
    def forward_backward(self, batch: dict, step: int) -> float:
        """Forward one micro-batch, check the loss is finite (raise NonFiniteLoss otherwise, before any
        gradient is applied), backward; return the loss averaged over workers."""

    def optimizer_step(self) -> float | None:
        """Apply the accumulated gradients; return the gradient norm when known."""

    def lr(self) -> float: ...


@dataclass
class StepStats:
    step: int
    loss: float
    lr: float
    grad_norm: float | None
    samples: int  # samples of this step, all workers together
    seconds: float
    data_seconds: float = 0.0  # of ``seconds``, the time spent waiting for the batch iterator (the ingest)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("inf")


def check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLoss(step, loss)


def run_steps(
    backend: StepBackend,
    batches: Iterator[dict],
    *,
    start_step: int,
    max_steps: int,
    grad_accum: int,
    samples_per_micro_step: int,
    on_step: Callable[[StepStats], None] | None = None,
) -> int:
    """Run optimizer steps start_step+1..max_steps; returns the last step done."""
    step = start_step
    while step < max_steps:
        t0 = time.perf_counter()
        losses = []
        waited = 0.0
        for _ in range(grad_accum):
            t_data = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration as exc:
                raise DataExhausted(f"the batch iterator ended at step {step} of {max_steps}") from exc
            waited += time.perf_counter() - t_data
            losses.append(backend.forward_backward(batch, step + 1))
        grad_norm = backend.optimizer_step()
        step += 1
        if on_step is not None:
            on_step(StepStats(step, sum(losses) / len(losses), backend.lr(), grad_norm,
                              samples_per_micro_step * grad_accum, time.perf_counter() - t0, waited))
    return step


class TorchBackend:
    """A plain single-process optimizer step: the baseline the DeepSpeed engine is measured against."""

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float | None = None,
                 grad_accum: int = 1, scheduler=None):
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.max_grad_norm, self.grad_accum = max_grad_norm, grad_accum

    def forward_backward(self, batch: dict, step: int) -> float:
        loss = self.module(batch)
        value = float(loss.detach())
        check_finite(value, step)
        (loss / self.grad_accum).backward()
        return value

    def optimizer_step(self) -> float | None:
        params = [p for p in self.module.parameters() if p.requires_grad]
        norm = None
        if self.max_grad_norm:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        return norm

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])
