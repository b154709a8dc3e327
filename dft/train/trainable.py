"""What trains: the full denoiser (UNet or transformer) or LoRA adapters (peft) on it and/or the text encoder.

Pure torch + peft. The VAE is always frozen; the text encoders are frozen unless asked for (the first
one only: text-encoder training is for SD pipelines)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from dft.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainableSpec:
    mode: str = "unet"  # "unet" / "full" (all denoiser weights) | "lora"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    lora_text_encoder: bool = False  # LoRA mode: adapters on the text encoder too
    text_encoder: bool = False  # full mode: train every text-encoder weight too
    lora_text_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, train_cfg) -> "TrainableSpec":
        lora = train_cfg.lora
        return cls(
            mode=train_cfg.trainable,
            lora_rank=lora.rank,
            lora_alpha=lora.alpha,
            lora_targets=tuple(lora.targets),
            lora_text_encoder=lora.text_encoder,
            text_encoder=train_cfg.train_text_encoder,
        )

    @property
    def trains_text_encoder(self) -> bool:
        return self.text_encoder or (self.mode == "lora" and self.lora_text_encoder)


def _lora_config(rank: int, alpha: float, targets) -> "object":
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(targets))


def apply_trainable(unet, text_encoder, vae, spec: TrainableSpec, gradient_checkpointing: bool = False) -> dict:
    """Freeze and unfreeze in place; add LoRA layers when asked. Returns counts of parameters.

    ``unet``: the denoiser (a UNet or a transformer). ``text_encoder``: one module, a list (the first is
    the one that may train; the others stay frozen) or None (captions precomputed). Call it on freshly
    loaded modules: the same call on the base model at export time rebuilds the same parameter names,
    so a checkpoint's state dict loads with strict=True."""
    encoders = [] if text_encoder is None else list(text_encoder) if isinstance(text_encoder, (list, tuple)) else [text_encoder]
    for enc in encoders:
        enc.requires_grad_(False)
    text_encoder = encoders[0] if encoders else torch.nn.Identity()
    if vae is not None:
        vae.requires_grad_(False)
    if spec.mode in ("unet", "full"):
        unet.requires_grad_(True)
        if spec.text_encoder:
            text_encoder.requires_grad_(True)
    elif spec.mode == "lora":
        # peft's injection directly: transformers 5.x's own add_adapter wants peft >= 0.22, and the
        # adapters alone stay trainable either way.
        from peft import inject_adapter_in_model

        unet.requires_grad_(False)
        inject_adapter_in_model(_lora_config(spec.lora_rank, spec.lora_alpha, spec.lora_targets), unet)
        if spec.lora_text_encoder:
            inject_adapter_in_model(_lora_config(spec.lora_rank, spec.lora_alpha, spec.lora_text_targets), text_encoder)
        for m in (unet, text_encoder):
            for n, p in m.named_parameters():
                p.requires_grad_(is_lora_name(n))
        if spec.text_encoder:
            text_encoder.requires_grad_(True)
    else:
        raise InputError(f"train.trainable must be 'unet', 'full' or 'lora', got {spec.mode!r}")
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if spec.trains_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    counts = {
        "unet_trainable": sum(p.numel() for p in unet.parameters() if p.requires_grad),
        "text_encoder_trainable": sum(p.numel() for p in text_encoder.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in unet.parameters()) + sum(p.numel() for e in encoders for p in e.parameters()),
    }
    if counts["unet_trainable"] + counts["text_encoder_trainable"] == 0:
        raise InputError(
            f"nothing to train: LoRA targets {list(spec.lora_targets)} matched no module of the {type(unet).__name__}"
        )
    log.info("trainable parameters: %s", counts)
    return counts


def is_lora_name(name: str) -> bool:
    return "lora_" in name


def merge_lora(module: torch.nn.Module) -> int:
    """Merge every LoRA layer into its base weight and put the plain layer back; returns how many."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = 0
    for name, child in list(module.named_modules()):
        if isinstance(child, BaseTunerLayer) and name:
            child.merge()
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
            merged += 1
    return merged


def lora_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only, in peft's saved naming (adapter name dropped), as diffusers'
    ``save_lora_weights`` takes them after ``convert_state_dict_to_diffusers``."""
    return {k.replace(".default", ""): v.detach().clone() for k, v in module.state_dict().items() if is_lora_name(k)}
