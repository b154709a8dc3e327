"""Model families: which text-to-image architecture a pipeline folder holds, and what that implies.

A family decides the denoiser (a UNet or a transformer), the text encoders and tokenizers, the
training objective (DDPM noise/v prediction or rectified flow) and the defaults of generation. It is
read from the folder's ``model_index.json`` (no weights loaded), or, for a built-in name, known
without building the model, so a config can be checked against its family before any work starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from dft.errors import DftError


class UnknownFamily(DftError, ValueError):
    """A pipeline folder of a class this project does not support."""


@dataclass(frozen=True)
class Family:
    name: str
    pipeline: str  # diffusers pipeline class
    denoiser: str  # "unet" | "transformer"
    text_encoders: tuple[str, ...]  # pipeline attribute names, in the pipeline's order
    tokenizers: tuple[str, ...]  # same order as text_encoders
    flow_matching: bool
    default_guidance: float  # the pipeline's own default (FLUX: the distilled guidance it embeds)
    default_max_sequence_length: int | None = None  # T5 tokens (flow families)

    @property
    def t5_index(self) -> int | None:
        """Which text encoder is T5 (the last one of SD3 and FLUX), else None."""
        return len(self.text_encoders) - 1 if self.default_max_sequence_length else None


FAMILIES = {
    "sd": Family("sd", "StableDiffusionPipeline", "unet", ("text_encoder",), ("tokenizer",), False, 7.5),
    "sdxl": Family("sdxl", "StableDiffusionXLPipeline", "unet", ("text_encoder", "text_encoder_2"),
                   ("tokenizer", "tokenizer_2"), False, 5.0),
    "sd3": Family("sd3", "StableDiffusion3Pipeline", "transformer", ("text_encoder", "text_encoder_2", "text_encoder_3"),
                  ("tokenizer", "tokenizer_2", "tokenizer_3"), True, 7.0, 256),
    "flux": Family("flux", "FluxPipeline", "transformer", ("text_encoder", "text_encoder_2"),
                   ("tokenizer", "tokenizer_2"), True, 3.5, 512),
}
_BY_PIPELINE = {f.pipeline: f for f in FAMILIES.values()}

# Built-in sources, known without building them (other packages' built-ins are SD pipelines too).
BUILTIN_FAMILIES = {"tiny-sd": "sd", "small-sd": "sd", "world-base": "sd", "tiny-sdxl": "sdxl", "small-sdxl": "sdxl",
                    "tiny-sd3": "sd3", "tiny-flux": "flux"}


def family_of_folder(folder: str) -> Family:
    """The family of a diffusers pipeline folder, from its model_index.json."""
    path = os.path.join(folder, "model_index.json")
    with open(path) as f:
        cls = json.load(f).get("_class_name", "?")
    if cls in _BY_PIPELINE:
        return _BY_PIPELINE[cls]
    # Pipelines of the same architecture under another class name (img2img variants, SD 2 depth, ...).
    for prefix, name in (("StableDiffusionXL", "sdxl"), ("StableDiffusion3", "sd3"), ("Flux", "flux"),
                         ("StableDiffusion", "sd")):
        if cls.startswith(prefix):
            return FAMILIES[name]
    raise UnknownFamily(
        f"{path}: pipeline class {cls!r} is not a supported family; supported: "
        + ", ".join(f"{f.name} ({f.pipeline})" for f in FAMILIES.values())
    )


def family_hint(source: str) -> Family | None:
    """The family of a model source when it is knowable for free: a built-in name or a local folder.
    None for s3:// and hub sources (their stage checks once the folder is resolved)."""
    source = source.strip()
    if source in BUILTIN_FAMILIES:
        return FAMILIES[BUILTIN_FAMILIES[source]]
    path = source[len("file://"):] if source.startswith("file://") else os.path.expanduser(source)
    if "://" not in source and os.path.isfile(os.path.join(path, "model_index.json")):
        return family_of_folder(path)
    return None


def denoiser_of(pipe):
    """The pipeline's UNet or transformer."""
    return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


class FamilyMismatch(DftError, ValueError):
    """A setting that does not apply to the model's family; the message names the field and the value."""
