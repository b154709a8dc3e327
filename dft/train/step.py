"""The training step and loop, in pure torch.

``DiffusionModule`` holds the UNet, the text encoder(s) (unless caption embeddings were precomputed)
and (unless latents were precomputed) the VAE, and turns one batch into one loss: SD 1.x/2.x, and
SDXL with its pooled embedding and added time ids. ``flow.FlowMatchingModule`` is its counterpart
for the transformer families (SD3, FLUX). ``run_steps`` drives any ``StepBackend`` (plain torch here, a
DeepSpeed engine in ``loop.py``) over an iterator of batches and hands each step's numbers to a
callback. Nothing here knows about Ray or DeepSpeed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch

from dft.errors import DftError
from dft.models.families import FAMILIES, Family
from dft.train.loss import add_noise, diffusion_loss, prediction_target
from dft.train.text import encode_captions, id_columns


class NonFiniteLoss(DftError, RuntimeError):
    """The loss became NaN or infinite; the run stops, the last good checkpoint stays the latest.

    One class for the event: a rank raises it in the step, the driver raises it again from the rank's
    stop record, naming the latest good checkpoint (``checkpoint``)."""

    def __init__(self, step: int, value: float, checkpoint: str | None = None):
        message = (
            f"loss is {value} at step {step}: training stopped before the optimizer step, so the weights "
            "and the last checkpoint are the last good ones. Lower train.learning_rate, set "
            "train.max_grad_norm, or use precision fp32/bf16 instead of fp16."
        )
        if checkpoint is not None:
            message += f" Latest good checkpoint: {checkpoint}"
        super().__init__(message)
        self.step, self.value, self.checkpoint = step, value, checkpoint

    def __reduce__(self):  # picklable across Ray's processes with its three arguments
        return type(self), (self.step, self.value, self.checkpoint)


class DataExhausted(RuntimeError):
    pass


def _swap_rows(ids: torch.Tensor, other: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Each row of ``ids`` replaced by ``other`` (its row, or one caption for all) with probability p."""
    drop = torch.rand(ids.shape[0], generator=generator) < p
    return _where_rows(drop, other, ids)


def _where_rows(mask: torch.Tensor, other: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Row b of ``x`` replaced by row b of ``other`` (or its only row) where mask[b]; any trailing shape."""
    m = mask.to(x.device).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.where(m, other.to(x.device), x)


def prepare_batch(raw: dict, policy: str, q: float, empty_prob: float, generator: torch.Generator | None,
                  empty: dict | None, device, keep_prompt: bool = False) -> dict:
    """A data batch -> the module's batch, with the caption policy applied to every caption column.

    ``raw`` holds ``prompt_C`` and ``neutral_C`` for each caption column C (token ids per tokenizer, or
    precomputed ``embeds``/``pooled``); the output holds ``input_C``. One draw per sample decides the
    caption for all columns, so the tokenizers (or embeddings) of a sample always agree; the draws are
    those of ``choose_captions`` then ``drop_to_empty``. ``empty``: the empty caption per column.
    ``keep_prompt``: also ``full_C``, every sample's full prompt whatever caption it drew (what the
    prior-preservation term conditions on)."""
    cols = sorted(k[len("prompt_"):] for k in raw if k.startswith("prompt_"))
    n = raw["prompt_" + cols[0]].shape[0]
    neutral = torch.rand(n, generator=generator) < q if policy == "attribute_dropout" else None
    if policy not in ("prompt", "neutral", "attribute_dropout"):
        raise ValueError(f"unknown caption policy {policy!r}")
    dropped = torch.rand(n, generator=generator) < empty_prob if empty_prob > 0 else None
    out = {}
    for c in cols:
        x = raw["neutral_" + c] if policy == "neutral" else raw["prompt_" + c]
        if neutral is not None:
            x = _where_rows(neutral, raw["neutral_" + c], x)
        if dropped is not None:
            x = _where_rows(dropped, empty[c][None], x)
        out["input_" + c] = x.to(device)
        if keep_prompt:
            out["full_" + c] = raw["prompt_" + c].to(device)
    for k, v in raw.items():
        if not k.startswith(("prompt_", "neutral_")):
            out[k] = v.to(device)
    return out


def sample_latents(batch: dict, vae, dtype: torch.dtype, scaling_factor: float, shift_factor: float) -> torch.Tensor:
    """The batch's latents: a fresh draw from the precomputed posterior, or the VAE run on the pixels;
    then shifted and scaled into the denoiser's space."""
    if "latent_params" in batch:
        mean, logvar = batch["latent_params"].float().chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        lat = mean + std * torch.randn_like(mean)
    else:
        if vae is None:
            raise ValueError("batch has pixels but the module holds no VAE (latents were expected)")
        px = batch["pixels"]
        px = px.float() / 127.5 - 1.0 if px.dtype == torch.uint8 else px.float()
        with torch.no_grad():
            lat = vae.encode(px.to(dtype)).latent_dist.sample().float()
    return ((lat - shift_factor) * scaling_factor).to(dtype)


class CaptionConditioning:
    """What the families' modules share: the text encoders by their pipeline names, and captions to
    (embeds, pooled), from token ids or precomputed."""

    family: Family

    def set_text_encoders(self, encoders) -> None:
        self.text_encoder_names = tuple(self.family.text_encoders) if encoders else ()
        for name, enc in zip(self.text_encoder_names, encoders or ()):
            setattr(self, name, enc)

    @property
    def text_encoders(self) -> list:
        return [getattr(self, n) for n in self.text_encoder_names]

    def train(self, mode: bool = True):
        """Frozen parts stay in eval mode whatever the engine asks (T5 has dropout; its recipes never train it)."""
        super().train(mode)
        for part in [self.vae, *self.text_encoders]:
            if part is not None and not any(p.requires_grad for p in part.parameters()):
                part.eval()
        return self

    def condition(self, batch: dict, prefix: str = "input_") -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embeds, pooled) of the batch's captions ``{prefix}C`` (``input_``: the drawn ones; ``full_``: the
        full prompts, see ``prepare_batch``)."""
        if prefix + "embeds" in batch:
            return batch[prefix + "embeds"], batch.get(prefix + "pooled")
        if not self.text_encoder_names:
            raise ValueError("batch has token ids but the module holds no text encoder (embeddings were expected)")
        return encode_captions(self.family, self.text_encoders, {c: batch[prefix + c] for c in id_columns(self.family)})


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


class DiffusionModule(CaptionConditioning, torch.nn.Module):
    """One module for the engine (UNet families): batch in, scalar loss out.

    A batch holds ``input_ids`` (B, L; SDXL also ``input_ids_2``) or precomputed ``input_embeds`` (and
    SDXL's ``input_pooled``), and either ``pixels`` (B, 3, H, W, uint8 or float in [-1, 1]) or
    ``latent_params`` (B, 2C, h, w: the VAE posterior's mean and log-variance, precomputed). SDXL
    batches may hold ``original_size`` and ``crop_top_left`` (B, 2) per sample for the added time ids
    (default: the training size, uncropped).

    ``teacher`` (a frozen copy of the base UNet) with ``prior_weight`` > 0 adds the prior-preservation
    term: prior_weight x MSE between the UNet's prediction on each sample's full prompt (``full_C``) and
    the teacher's, at the same noisy latent and timestep. Whatever caption a sample drew (a neutral one
    under attribute dropout), its full prompt's behaviour is held to the base model's. The teacher is
    kept out of the module's parameters and state dict (it is neither trained, averaged nor saved)."""

    def __init__(self, unet, text_encoder, vae, alphas_cumprod: torch.Tensor, prediction_type: str,
                 scaling_factor: float, snr_gamma: float | None = None, shift_factor: float | None = None,
                 *, family: Family | None = None, text_encoders: list | None = None, vae_scale: int = 8,
                 teacher=None, prior_weight: float = 0.0):
        super().__init__()
        if prior_weight > 0 and teacher is None:
            raise ValueError("prior_weight > 0 needs a teacher (a frozen copy of the base UNet)")
        object.__setattr__(self, "_teacher", teacher)  # not a submodule: no parameters, no state dict
        self.prior_weight = prior_weight
        self.family = family or FAMILIES["sd"]
        self.vae_scale = vae_scale  # pixels per latent: SDXL's time ids are in pixels
        self.unet = unet
        if text_encoders is None:
            text_encoders = [text_encoder] if text_encoder is not None else []
        self.set_text_encoders(text_encoders)
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
        return sample_latents(batch, self.vae, self.dtype, self.scaling_factor, self.shift_factor)

    def forward(self, batch: dict) -> torch.Tensor:
        latents = self.latents(batch)
        noise = torch.randn_like(latents)
        n = self.alphas_cumprod.shape[0]
        timesteps = torch.randint(0, n, (latents.shape[0],), device=latents.device)
        noisy = add_noise(latents, noise, timesteps, self.alphas_cumprod)
        target = prediction_target(latents, noise, timesteps, self.alphas_cumprod, self.prediction_type)
        hidden, pooled = self.condition(batch)
        pred = self._denoise(self.unet, noisy, timesteps, hidden, pooled, batch, latents)
        loss = diffusion_loss(pred, target, timesteps, self.alphas_cumprod, self.prediction_type, self.snr_gamma)
        if self.prior_weight > 0:
            loss = loss + self.prior_weight * self.prior_loss(batch, noisy, timesteps, latents, pred)
        return loss

    def _denoise(self, unet, noisy, timesteps, hidden, pooled, batch, latents) -> torch.Tensor:
        dtype = next(unet.parameters()).dtype
        kwargs = {}
        if self.family.name == "sdxl":
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(dtype),
                                           "time_ids": sdxl_time_ids(batch, latents, self.vae_scale).to(dtype)}
        return unet(noisy.to(dtype), timesteps, hidden.to(dtype), return_dict=False, **kwargs)[0]

    def prior_loss(self, batch: dict, noisy, timesteps, latents, pred: torch.Tensor | None = None) -> torch.Tensor:
        """MSE (fp32) between the UNet's and the frozen teacher's predictions on the full prompts.

        ``pred``: the UNet's prediction on the drawn captions at the same noisy latent and timestep. A
        sample that drew its full prompt already has the student's answer there, so the student runs
        again only on the samples whose caption differs (a neutral or an empty one): the same value and
        gradient, a smaller second forward."""
        if not any(k.startswith("full_") for k in batch):
            raise ValueError("prior preservation needs the full prompts in the batch (prepare_batch keep_prompt=True)")
        teacher = self._teacher
        p = next(teacher.parameters())
        if p.device != noisy.device or p.dtype != self.dtype:  # the engine moved and cast the student only
            teacher.to(device=noisy.device, dtype=self.dtype)
        hidden, pooled = self.condition(batch, prefix="full_")
        with torch.no_grad():
            reference = self._denoise(teacher, noisy, timesteps, hidden, pooled, batch, latents)
        if pred is None:
            student = self._denoise(self.unet, noisy, timesteps, hidden, pooled, batch, latents)
        else:
            redo = drew_other_caption(batch)
            idx = redo.nonzero().flatten()
            if idx.numel() == 0:
                # Still one second forward, on one sample (it gives that sample's prediction again): every
                # rank runs the same forwards, as ZeRO-3 gathers each module's parameters collectively.
                idx = torch.zeros(1, dtype=torch.long, device=redo.device)
            sub = {k: v[idx] if torch.is_tensor(v) and v.ndim and v.shape[0] == redo.shape[0] else v
                   for k, v in batch.items()}
            again = self._denoise(self.unet, noisy[idx], timesteps[idx], hidden[idx],
                                  None if pooled is None else pooled[idx], sub, latents[idx])
            student = pred.index_copy(0, idx, again)
        return torch.nn.functional.mse_loss(student.float(), reference.float())


def drew_other_caption(batch: dict) -> torch.Tensor:
    """Per sample: whether its drawn caption (``input_C``) differs from its full prompt (``full_C``) in any
    caption column."""
    redo = None
    for k, full in batch.items():
        if not k.startswith("full_"):
            continue
        drawn = batch["input_" + k[len("full_"):]]
        differs = (drawn != full).reshape(full.shape[0], -1).any(dim=1)
        redo = differs if redo is None else redo | differs
    return redo


def sdxl_time_ids(batch: dict, latents: torch.Tensor, vae_scale: int) -> torch.Tensor:
    """SDXL's micro-conditioning per sample: original size (h, w), crop top-left (y, x), target size
    (h, w), as train_text_to_image_sdxl.py's ``compute_time_ids``. Missing columns: the training size,
    uncropped."""
    b, _, h, w = latents.shape
    target = torch.tensor([h * vae_scale, w * vae_scale], dtype=torch.float32, device=latents.device).expand(b, 2)
    original = batch.get("original_size")
    crop = batch.get("crop_top_left")
    original = target if original is None else original.to(latents.device).float()
    crop = torch.zeros_like(target) if crop is None else crop.to(latents.device).float()
    return torch.cat([original, crop, target], dim=1)


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
