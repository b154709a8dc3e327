"""Export: a training checkpoint -> a diffusers pipeline folder (safetensors) at RUN/models/finetuned.

The folder holds the base pipeline's components with the trained denoiser (the UNet of SD/SDXL, the
transformer of SD3/FLUX; and the text encoder, when it trained). LoRA adapters are merged into the weights
(``lora.merge_on_export``), or kept apart as
``pytorch_lora_weights.safetensors`` beside an unchanged base pipeline. ``load_pipeline(folder)``
and ``DiffusionPipeline.from_pretrained(folder)`` both load it; it is a model source like any other."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import torch

from dft import storage
from dft.models.families import family_of_folder
from dft.models.sources import resolve_model_source
from dft.train.config import TrainConfig
from dft.train.trainable import TrainableSpec, apply_trainable, lora_state_dict, merge_lora

log = logging.getLogger(__name__)

PROVENANCE = "dft_finetune.json"


def read_state(checkpoint_dir: str) -> dict:
    with open(os.path.join(checkpoint_dir, "state.json")) as f:
        return json.load(f)


def checkpoint_state_dict(checkpoint_dir: str, state: dict | None = None) -> dict[str, torch.Tensor]:
    """The trained module's fp32 weights (names of DiffusionModule: ``unet.*``, ``text_encoder.*``)."""
    state = state or read_state(checkpoint_dir)
    ds_dir = os.path.join(checkpoint_dir, "deepspeed")
    if state["zero_stage"] == 0:
        path = os.path.join(ds_dir, state["tag"], "mp_rank_00_model_states.pt")
        sd = torch.load(path, map_location="cpu", weights_only=False)["module"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        sd = get_fp32_state_dict_from_zero_checkpoint(ds_dir, tag=state["tag"])
    return {k: v.float() for k, v in sd.items()}


def _load_part(module: torch.nn.Module, prefix: str, sd: dict, what: str) -> None:
    part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(part, strict=False)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    lost = sorted(trainable & set(missing))
    if lost or unexpected:
        raise RuntimeError(
            f"checkpoint does not match the {what}: {len(lost)} trained weights missing (e.g. {lost[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
        )


def export_pipeline(checkpoint_dir: str, out_uri: str, *, model_source: str, train_cfg: TrainConfig,
                    cache_dir: str | None = None, extra: dict | None = None) -> str:
    from dft.models.sources import load_pipeline

    state = read_state(checkpoint_dir)
    spec = TrainableSpec.from_config(train_cfg)
    sd = checkpoint_state_dict(checkpoint_dir, state)
    pipe = load_pipeline(model_source, cache_dir=cache_dir)
    family = family_of_folder(resolve_model_source(model_source, cache_dir=cache_dir))
    denoiser = getattr(pipe, family.denoiser)
    apply_trainable(denoiser, [getattr(pipe, n) for n in family.text_encoders], pipe.vae, spec)
    _load_part(denoiser, family.denoiser + ".", sd, family.denoiser)
    if spec.trains_text_encoder:
        _load_part(pipe.text_encoder, "text_encoder.", sd, "text encoder")
    ema_path = os.path.join(checkpoint_dir, "ema.pt")
    if state.get("ema") and os.path.exists(ema_path):
        shadow = torch.load(ema_path, map_location="cpu")["shadow"]
        for prefix, mod in ((family.denoiser + ".", denoiser), ("text_encoder.", pipe.text_encoder)):
            for name, p in mod.named_parameters():
                if prefix + name in shadow:
                    p.data.copy_(shadow[prefix + name])
        log.info("exported the EMA weights")
    denoiser.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)

    tmp = tempfile.mkdtemp(prefix="dft-export-")
    try:
        adapters = spec.mode == "lora" and not train_cfg.lora.merge_on_export
        if spec.mode == "lora" and not adapters:
            n = merge_lora(denoiser) + merge_lora(pipe.text_encoder)
            log.info("merged %d LoRA layers into the weights", n)
        if adapters:
            denoiser_lora = lora_state_dict(denoiser)
            te_lora = lora_state_dict(pipe.text_encoder) if spec.lora_text_encoder else None
            base = load_pipeline(model_source, cache_dir=cache_dir)
            base.save_pretrained(tmp, safe_serialization=True)
            from diffusers.utils import convert_state_dict_to_diffusers

            type(base).save_lora_weights(
                tmp, **{f"{family.denoiser}_lora_layers": convert_state_dict_to_diffusers(denoiser_lora)},
                text_encoder_lora_layers=convert_state_dict_to_diffusers(te_lora) if te_lora else None,
                safe_serialization=True,
            )
        else:
            pipe.save_pretrained(tmp, safe_serialization=True)
        provenance = {"base_model": model_source, "step": state["step"], "samples_seen": state["samples_seen"],
                      "trainable": spec.mode, "lora_adapters": adapters, "ema": bool(state.get("ema")),
                      "train": state["train"], **(extra or {})}
        with open(os.path.join(tmp, PROVENANCE), "w") as f:
            json.dump(provenance, f, indent=2, sort_keys=True)
        _publish(tmp, out_uri)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported the fine-tuned pipeline to %s", out_uri)
    return out_uri


def _publish(local: str, out_uri: str) -> None:
    """Replace ``out_uri`` with the folder: a rename locally, file by file on S3 (stale files removed first)."""
    if storage.is_remote(out_uri):
        storage.remove(out_uri, recursive=True)
        storage.upload_folder(local, out_uri)
        return
    dest = storage.normalize(out_uri)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    staged = dest + ".tmp-export"
    if os.path.exists(staged):
        shutil.rmtree(staged)
    shutil.copytree(local, staged)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.replace(staged, dest)
