"""The training module of the flow-matching transformer families: SD3/SD3.5 (MMDiT) and FLUX.1.

Pure torch, as ``step.DiffusionModule``: batch in, scalar loss out, following diffusers'
train_dreambooth_sd3.py / train_dreambooth_flux.py. Per sample: u from the configured timestep density,
the scheduler's training timestep and sigma at index floor(u N), noisy = (1 - sigma) x0 + sigma eps,
the transformer predicts eps - x0, the squared error is weighted per sample. FLUX also gets its
packed latents (2x2 patches as tokens), the latent image ids of its rotary embedding, zero text ids
and, for guidance-distilled checkpoints (FLUX.1-dev), the guidance value in its guidance embedding."""

from __future__ import annotations

import torch

from dft.models.families import Family
from dft.train.loss import flow_loss, flow_loss_weighting, flow_noisy, flow_target, sample_flow_timesteps, timestep_density
from dft.train.step import CaptionConditioning, sample_latents


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): FluxPipeline._pack_latents."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H/2 * W/2, 4C) -> (B, C, H, W): FluxPipeline._unpack_latents, in latent units."""
    b, _n, d = tokens.shape
    x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def latent_image_ids(h2: int, w2: int, device, dtype) -> torch.Tensor:
    """(h2 * w2, 3) positions (0, row, col) of the packed tokens: FluxPipeline._prepare_latent_image_ids."""
    ids = torch.zeros(h2, w2, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h2)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w2)[None, :]
    return ids.reshape(h2 * w2, 3).to(device=device, dtype=dtype)


class FlowMatchingModule(CaptionConditioning, torch.nn.Module):
    """Batches as DiffusionModule's: ``input_ids``/``input_ids_2``/``input_ids_3`` or precomputed
    ``input_embeds`` + ``input_pooled``, and ``pixels`` or ``latent_params``."""

    def __init__(self, transformer, text_encoders: list | None, vae, *, family: Family, timesteps: torch.Tensor,
                 sigmas: torch.Tensor, scaling_factor: float, shift_factor: float | None, flow_cfg):
        super().__init__()
        self.family = family
        self.transformer = transformer
        self.set_text_encoders(text_encoders or [])
        self.vae = vae
        # The scheduler's training grid (num_train_timesteps values, sigma 1 -> sigma_min).
        self.register_buffer("train_timesteps", timesteps.float().clone(), persistent=False)
        self.register_buffer("train_sigmas", sigmas.float().clone()[: timesteps.shape[0]], persistent=False)
        self.scaling_factor, self.shift_factor = scaling_factor, shift_factor or 0.0
        self.scheme = flow_cfg.weighting_scheme
        self.logit_mean, self.logit_std, self.mode_scale = flow_cfg.logit_mean, flow_cfg.logit_std, flow_cfg.mode_scale
        self.guidance_scale = flow_cfg.guidance_scale

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def draw_timesteps(self, batch_size: int):
        u = timestep_density(self.scheme, batch_size, logit_mean=self.logit_mean, logit_std=self.logit_std,
                             mode_scale=self.mode_scale)
        t, s = sample_flow_timesteps(u, self.train_timesteps.cpu(), self.train_sigmas.cpu())
        return t, s

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor):
        """The transformer's velocity for latents (B, C, h, w), in the same layout."""
        dtype = self.dtype
        if self.family.name == "sd3":
            return self.transformer(hidden_states=noisy.to(dtype), timestep=timesteps.to(noisy.device),
                                    encoder_hidden_states=embeds.to(dtype), pooled_projections=pooled.to(dtype),
                                    return_dict=False)[0]
        b, _c, h, w = noisy.shape
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance_scale, device=noisy.device, dtype=torch.float32)
        out = self.transformer(
            hidden_states=pack_latents(noisy).to(dtype), timestep=(timesteps / 1000).to(noisy.device),
            guidance=guidance, pooled_projections=pooled.to(dtype), encoder_hidden_states=embeds.to(dtype),
            txt_ids=torch.zeros(embeds.shape[1], 3, device=noisy.device, dtype=dtype),
            img_ids=latent_image_ids(h // 2, w // 2, noisy.device, dtype), return_dict=False,
        )[0]
        return unpack_latents(out, h, w)

    def forward(self, batch: dict) -> torch.Tensor:
        latents = sample_latents(batch, self.vae, self.dtype, self.scaling_factor, self.shift_factor).float()
        noise = torch.randn_like(latents)
        timesteps, sigmas = self.draw_timesteps(latents.shape[0])
        sigmas = sigmas.to(latents.device)
        noisy = flow_noisy(latents, noise, sigmas)
        target = flow_target(latents, noise)
        embeds, pooled = self.condition(batch)
        pred = self.predict(noisy, timesteps, embeds, pooled)
        return flow_loss(pred, target, flow_loss_weighting(self.scheme, sigmas))
