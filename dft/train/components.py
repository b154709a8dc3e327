"""Load a pipeline folder's parts for training and wrap them in the family's module (pure torch/diffusers).

SD and SDXL train a UNet with the DDPM objective (``step.DiffusionModule``); SD3 and FLUX train a
transformer with rectified flow (``flow.FlowMatchingModule``). The same function builds the module in
each worker, in the bare baseline of the benchmark, and (with the same trainable spec) at export
time, so parameter names always match."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from dft.errors import DftError
from dft.models.families import Family, family_of_folder
from dft.train.step import DiffusionModule
from dft.train.trainable import TrainableSpec, apply_trainable


class UnsupportedModel(DftError, ValueError):
    pass


@dataclass
class ModelInfo:
    folder: str
    pipeline_class: str
    resolution: int
    latent_channels: int
    vae_scale: int
    prediction_type: str
    family: str = "sd"


def _json(folder: str, *parts: str) -> dict:
    path = os.path.join(folder, *parts)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def model_info(folder: str) -> ModelInfo:
    """Read what training needs from a pipeline folder's JSON configs, without loading weights."""
    family = family_of_folder(folder)
    index = _json(folder, "model_index.json")
    denoiser = _json(folder, family.denoiser, "config.json")
    vae = _json(folder, "vae", "config.json")
    sched = _json(folder, "scheduler", "scheduler_config.json")
    scale = 2 ** (len(vae.get("block_out_channels", [1])) - 1)
    sample = denoiser.get("sample_size")
    if sample is None:  # FLUX's transformer has no sample size: the VAE's is in pixels
        resolution = int(vae.get("sample_size", 1024))
    else:
        resolution = int(sample[0] if isinstance(sample, (list, tuple)) else sample) * scale
    if family.name == "flux" and (resolution // scale) % 2:
        raise UnsupportedModel(f"{folder}: FLUX packs 2x2 latent patches; {resolution} px gives odd latents")
    return ModelInfo(folder, index.get("_class_name", "?"), resolution, int(vae.get("latent_channels", 4)), scale,
                     sched.get("prediction_type", "epsilon") if not family.flow_matching else "flow",
                     family.name)


def resolve_prediction_type(configured: str, info: ModelInfo) -> str:
    return info.prediction_type if configured == "auto" else configured


def load_components(folder: str, need_vae: bool = True, need_text: bool = True):
    """(denoiser, text encoders in the family's order or None, VAE or None, training scheduler, family)."""
    import diffusers

    from dft.train.text import load_text_encoders

    family = family_of_folder(folder)
    cls = {"unet": "UNet2DConditionModel"}.get(family.denoiser)
    if cls is None:
        from dft.models.pipeline_index import component_class

        cls = component_class(folder, "transformer")
    denoiser = getattr(diffusers, cls).from_pretrained(folder, subfolder=family.denoiser, torch_dtype=torch.float32)
    encoders = load_text_encoders(folder, family) if need_text else None
    vae = diffusers.AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32) if need_vae else None
    # Training noise follows the pipeline's own schedule, whatever sampler it ships with: DDPM betas, or
    # the flow-matching sigma grid (with its shift).
    sched_cls = diffusers.FlowMatchEulerDiscreteScheduler if family.flow_matching else diffusers.DDPMScheduler
    scheduler = sched_cls.from_pretrained(folder, subfolder="scheduler")
    return denoiser, encoders, vae, scheduler, family


def vae_factors(folder: str) -> tuple[float, float | None]:
    cfg = _json(folder, "vae", "config.json")
    return float(cfg.get("scaling_factor", 0.18215)), cfg.get("shift_factor")


def check_family(family: Family, train_cfg) -> None:
    problems = train_cfg.family_problems(family)
    if problems:
        from dft.models.families import FamilyMismatch

        raise FamilyMismatch(f"the model is {family.name}: " + "; ".join(problems))


def frozen_copy(denoiser):
    """A frozen copy of the loaded denoiser, before any trainable set-up, for ``train.prior_preservation``."""
    import copy

    teacher = copy.deepcopy(denoiser)
    teacher.requires_grad_(False)
    return teacher.eval()


def build_module(folder: str, train_cfg, need_vae: bool = True):
    """The training module for a pipeline folder and a TrainConfig, trainable parts set up."""
    info = model_info(folder)
    need_text = not train_cfg.precompute_text_embeddings
    denoiser, encoders, vae, scheduler, family = load_components(folder, need_vae=need_vae, need_text=need_text)
    check_family(family, train_cfg)
    teacher = frozen_copy(denoiser) if train_cfg.prior_preservation > 0 else None  # refused for flow families
    spec = TrainableSpec.from_config(train_cfg)
    counts = apply_trainable(denoiser, encoders, vae, spec, gradient_checkpointing=train_cfg.gradient_checkpointing)
    if vae is not None:
        vae.eval()
    for i, enc in enumerate(encoders or []):
        if i > 0 or not spec.trains_text_encoder:
            enc.eval()
    scaling, shift = vae_factors(folder)
    if family.flow_matching:
        from dft.train.flow import FlowMatchingModule

        module = FlowMatchingModule(denoiser, encoders, vae, family=family, timesteps=scheduler.timesteps,
                                    sigmas=scheduler.sigmas, scaling_factor=scaling, shift_factor=shift,
                                    flow_cfg=train_cfg.flow)
    else:
        module = DiffusionModule(
            denoiser, None, vae, scheduler.alphas_cumprod,
            prediction_type=resolve_prediction_type(train_cfg.prediction_type, info),
            scaling_factor=scaling, shift_factor=shift, snr_gamma=train_cfg.snr_gamma,
            family=family, text_encoders=encoders or [], vae_scale=info.vae_scale,
            teacher=teacher, prior_weight=train_cfg.prior_preservation,
        )
    return module, counts


def denoiser_name(module: torch.nn.Module) -> str:
    return "transformer" if hasattr(module, "transformer") else "unet"


def trainable_named_parameters(module: torch.nn.Module):
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]
