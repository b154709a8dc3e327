"""Load a pipeline folder's parts for training and wrap them in a DiffusionModule (pure torch/diffusers).

The same function builds the module in each worker, in the bare baseline of the benchmark, and
(with the same trainable spec) at export time, so parameter names always match."""

from __future__ import annotations

from dft.errors import DftError
import json
import os
from dataclasses import dataclass

import torch

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


def model_info(folder: str) -> ModelInfo:
    """Read what training needs from a pipeline folder's JSON configs, without loading weights."""
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    cls = index.get("_class_name", "?")
    if "text_encoder_2" in index or "XL" in cls:
        raise UnsupportedModel(
            f"{folder} is a {cls} (two text encoders): fine-tuning supports single-text-encoder "
            "Stable Diffusion pipelines (tiny-sd, small-sd, SD 1.x/2.x)"
        )
    with open(os.path.join(folder, "unet", "config.json")) as f:
        unet = json.load(f)
    with open(os.path.join(folder, "vae", "config.json")) as f:
        vae = json.load(f)
    sched_path = os.path.join(folder, "scheduler", "scheduler_config.json")
    sched = json.load(open(sched_path)) if os.path.exists(sched_path) else {}
    scale = 2 ** (len(vae.get("block_out_channels", [1])) - 1)
    sample = unet.get("sample_size", 64)
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    return ModelInfo(folder, cls, int(sample) * scale, int(vae.get("latent_channels", 4)), scale,
                     sched.get("prediction_type", "epsilon"))


def resolve_prediction_type(configured: str, info: ModelInfo) -> str:
    return info.prediction_type if configured == "auto" else configured


def load_components(folder: str, need_vae: bool = True):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32) if need_vae else None
    # Training noise follows the pipeline's own schedule (betas), whatever sampler it ships with.
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    return unet, text_encoder, vae, scheduler


def vae_factors(folder: str) -> tuple[float, float | None]:
    with open(os.path.join(folder, "vae", "config.json")) as f:
        cfg = json.load(f)
    return float(cfg.get("scaling_factor", 0.18215)), cfg.get("shift_factor")


def build_module(folder: str, train_cfg, need_vae: bool = True) -> tuple[DiffusionModule, dict]:
    """The training module for a pipeline folder and a TrainConfig, trainable parts set up."""
    info = model_info(folder)
    unet, text_encoder, vae, scheduler = load_components(folder, need_vae=need_vae)
    counts = apply_trainable(unet, text_encoder, vae, TrainableSpec.from_config(train_cfg),
                             gradient_checkpointing=train_cfg.gradient_checkpointing)
    if vae is not None:
        vae.eval()
    if not TrainableSpec.from_config(train_cfg).trains_text_encoder:
        text_encoder.eval()
    scaling, shift = vae_factors(folder)
    module = DiffusionModule(
        unet, text_encoder, vae, scheduler.alphas_cumprod,
        prediction_type=resolve_prediction_type(train_cfg.prediction_type, info),
        scaling_factor=scaling, shift_factor=shift, snr_gamma=train_cfg.snr_gamma,
    )
    return module, counts


def trainable_named_parameters(module: torch.nn.Module):
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]
