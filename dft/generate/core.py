"""The generation core: prompt rows in, encoded images plus metadata out. No Ray here.

``ImageGenerator`` loads one diffusers text-to-image pipeline (SD 1.x/2.x, SDXL, SD3/SD3.5 or FLUX.1) once and is then
called with batches of prompt rows (``PROMPT_SCHEMA`` columns as numpy arrays, the shape Ray Data's
``map_batches`` hands over). It returns the same rows as ``SAMPLE_SCHEMA`` columns plus one extra
column, ``error``: ``None`` for a good image, else the message of the last failed attempt (and an
empty ``image``). Failures are reported, never raised, so one bad row cannot sink a whole batch; the
writer in ``job.py`` moves failed rows to ``failures.jsonl``.

Determinism: every row gets its own ``torch.Generator`` seeded from the row's ``seed``, so its image
depends on (model, row, settings) and not on which worker ran it. The same batch composition gives
byte-identical images; a row batched with others can differ from the same row alone by one level of
255 in a few pixels (batched matmuls round differently).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from typing import Any, Iterable

import numpy as np

from dft.errors import InputError
from dft.generate.config import GenerateConfig
from dft.schema import PROMPT_SCHEMA, SAMPLE_SCHEMA, sample_key

log = logging.getLogger(__name__)

ERROR_COLUMN = "error"
OUTPUT_COLUMNS = [f.name for f in SAMPLE_SCHEMA] + [ERROR_COLUMN]

# Scheduler names in config -> diffusers class names (resolved lazily: importing diffusers is slow).
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
}

def settings_dict(cfg: GenerateConfig) -> dict[str, Any]:
    """What decides an image besides the model and the row. Hashed into every sample key.

    Uses the configured values (``dtype: auto``), not what a machine resolves them to: the driver that
    plans the job may have no GPU while its workers do, and both must agree on every key."""
    out = {
        "scheduler": cfg.scheduler,
        "steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
        "height": cfg.height,
        "width": cfg.width,
        "negative_prompt": cfg.negative_prompt,
        "dtype": cfg.dtype,
        "image_format": cfg.image_format,
        "quality": cfg.quality if cfg.image_format != "png" else None,
    }
    # Flow-matching settings only when set, so the keys of existing runs do not change.
    for name in ("flow_shift", "max_sequence_length"):
        if getattr(cfg, name) is not None:
            out[name] = getattr(cfg, name)
    return out


def settings_hash(cfg: GenerateConfig) -> str:
    blob = json.dumps(settings_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_device_dtype(cfg: GenerateConfig):
    """'auto' -> cuda + fp16 when CUDA is present, else cpu + fp32. fp16 on CPU is refused (too slow / unsupported ops)."""
    import torch

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("generate.device is 'cuda' but torch sees no CUDA device on this worker")
    name = cfg.dtype
    if name == "auto":
        name = "fp16" if device == "cuda" else "fp32"
    if name == "fp16" and device == "cpu":
        raise InputError("generate.dtype=fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
    return device, dtype


def encode_image(pixels: np.ndarray, image_format: str, quality: int) -> bytes:
    """uint8 HxWx3 -> encoded bytes. PNG with a fixed compression level is byte-deterministic."""
    from PIL import Image

    img = Image.fromarray(pixels, mode="RGB") if pixels.ndim == 3 else Image.fromarray(pixels)
    buf = io.BytesIO()
    if image_format == "png":
        img.save(buf, format="PNG", compress_level=6)
    elif image_format == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="WEBP", quality=quality, method=4)
    return buf.getvalue()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pipeline output in [0, 1] float -> uint8, the same rounding diffusers uses for PIL output."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def _quiet_progress_bars() -> None:
    """Loading bars from every actor interleave into noise on the driver; our own progress is per shard."""
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


class ImageGenerator:
    """Loads a pipeline once; ``__call__`` turns a batch of prompt rows into sample rows.

    ``inject_row_failures`` (seeds) makes those rows fail every attempt: a test switch for the
    failure path, set by the job from ``DFT_FAULT_INJECT``."""

    def __init__(
        self,
        model_source: str,
        cfg: GenerateConfig,
        cache_dir: str | None = None,
        *,
        inject_row_failures: Iterable[int] = (),
    ):
        import torch

        from dft.models.families import FamilyMismatch, family_of_folder
        from dft.models.sources import load_pipeline, resolve_model_source

        self.cfg = cfg
        self.model = model_source
        self.settings_hash = settings_hash(cfg)
        self.device, self.dtype = resolve_device_dtype(cfg)
        self._fail_seeds = {int(s) for s in inject_row_failures}
        _quiet_progress_bars()
        t0 = time.perf_counter()
        self.family = family_of_folder(resolve_model_source(model_source, cache_dir=cache_dir))
        problems = cfg.family_problems(self.family)
        if problems:
            raise FamilyMismatch(f"model {model_source!r} is {self.family.name}: " + "; ".join(problems))
        self.pipe = load_pipeline(model_source, dtype=self.dtype, device=self.device, cache_dir=cache_dir)
        self._set_scheduler(cfg.scheduler)
        self.attention = self._use_fastest_attention()
        name = self.family.denoiser
        if cfg.compile:
            setattr(self.pipe, name, torch.compile(getattr(self.pipe, name),
                                                   mode="reduce-overhead" if self.device == "cuda" else "default"))
        self.height, self.width = cfg.height or self.default_size(), cfg.width or self.default_size()
        self.call_kwargs = self._family_kwargs()
        self.is_sdxl = self.family.name == "sdxl"
        log.info(
            "loaded %s (%s) on %s/%s in %.1fs: %dx%d, %d steps, attention %s",
            model_source, type(self.pipe).__name__, self.device, str(self.dtype).replace("torch.", ""),
            time.perf_counter() - t0, self.width, self.height, cfg.steps, self.attention,
        )

    def default_size(self) -> int:
        """The model's native resolution: the denoiser's latent sample size x the VAE's downsampling
        (FLUX's transformer has no sample size: its VAE's)."""
        scale = getattr(self.pipe, "vae_scale_factor", 8)
        denoiser = getattr(self.pipe, self.family.denoiser)
        size = getattr(denoiser.config, "sample_size", None)
        if size is None:
            return int(self.pipe.vae.config.sample_size)
        return (size if isinstance(size, int) else size[0]) * scale

    def _family_kwargs(self) -> dict:
        """Pipeline arguments only some families take: T5 tokens per prompt for SD3 and FLUX."""
        if self.family.t5_index is None:
            return {}
        tok = getattr(self.pipe, self.family.tokenizers[self.family.t5_index])
        length = self.cfg.max_sequence_length or min(self.family.default_max_sequence_length, tok.model_max_length)
        return {"max_sequence_length": int(length)}

    def _set_scheduler(self, name: str) -> None:
        if self.family.flow_matching:
            if self.cfg.flow_shift is not None:
                # A fixed shift replaces FLUX's resolution-dependent one (use_dynamic_shifting).
                cls = type(self.pipe.scheduler)
                self.pipe.scheduler = cls.from_config(self.pipe.scheduler.config, shift=self.cfg.flow_shift,
                                                      use_dynamic_shifting=False)
            return
        if name == "default":
            return
        import diffusers

        cls = getattr(diffusers, SCHEDULERS[name])
        self.pipe.scheduler = cls.from_config(self.pipe.scheduler.config)

    def _use_fastest_attention(self) -> str:
        """diffusers picks SDPA (``AttnProcessor2_0``) on torch 2 by default; make sure, and say which."""
        import torch.nn.functional as F

        if self.family.denoiser != "unet":
            # SD3's and FLUX's transformers come with their own SDPA joint-attention processors.
            return ",".join(sorted({type(p).__name__ for p in self.pipe.transformer.attn_processors.values()}))
        unet = self.pipe.unet
        kinds = {type(p).__name__ for p in unet.attn_processors.values()}
        if hasattr(F, "scaled_dot_product_attention") and kinds != {"AttnProcessor2_0"}:
            from diffusers.models.attention_processor import AttnProcessor2_0

            if kinds <= {"AttnProcessor", "AttnProcessor2_0"}:  # leave custom (e.g. LoRA) processors alone
                unet.set_attn_processor(AttnProcessor2_0())
                kinds = {"AttnProcessor2_0"}
        return ",".join(sorted(kinds)) or "none"

    # -- generation --------------------------------------------------------------------------

    def _generators(self, seeds) -> list:
        import torch

        # CPU generators even on CUDA: the latents then match across GPU models and the CPU path.
        return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    def _run(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        import torch

        for s in seeds:
            if int(s) in self._fail_seeds:
                raise RuntimeError(f"injected failure for seed {s} (DFT_FAULT_INJECT)")
        neg = [self.cfg.negative_prompt] * len(prompts) if self.cfg.negative_prompt else None
        with torch.inference_mode():
            out = self.pipe(
                prompt=prompts,
                negative_prompt=neg,
                num_inference_steps=self.cfg.steps,
                guidance_scale=self.cfg.guidance_scale,
                height=self.height,
                width=self.width,
                generator=self._generators(seeds),
                output_type="np",
                **self.call_kwargs,
            )
        images = np.asarray(out.images)
        if not np.isfinite(images).all():
            raise FloatingPointError("pipeline produced NaN/inf pixels (try fp32 or bf16)")
        return to_uint8(images)

    def generate(self, prompts: list[str], seeds: list[int]) -> tuple[list[np.ndarray | None], list[str | None]]:
        """Images (uint8 HxWx3) for the rows, and per-row errors. A failing batch is redone row by row,
        each row up to ``cfg.row_retries`` more times, so one bad row costs only itself."""
        try:
            images = self._run(prompts, seeds)
            return list(images), [None] * len(prompts)
        except Exception as exc:  # noqa: BLE001 - any failure falls back to rows
            if len(prompts) == 1 and self.cfg.row_retries == 0:
                return [None], [f"{type(exc).__name__}: {exc}"]
            log.warning("batch of %d failed (%s: %s); retrying row by row", len(prompts), type(exc).__name__, exc)
        out_images: list[np.ndarray | None] = []
        errors: list[str | None] = []
        for prompt, seed in zip(prompts, seeds):
            err = None
            for _attempt in range(self.cfg.row_retries + 1):
                try:
                    out_images.append(self._run([prompt], [seed])[0])
                    err = None
                    break
                except Exception as exc:  # noqa: BLE001
                    err = f"{type(exc).__name__}: {exc}"
            if err is not None:
                out_images.append(None)
                log.warning("row seed=%s failed after %d attempts: %s", seed, self.cfg.row_retries + 1, err)
            errors.append(err)
        return out_images, errors

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["prompt"])
        prompts = [str(p) for p in batch["prompt"]]
        seeds = [int(s) for s in batch["seed"]]
        images, errors = self.generate(prompts, seeds)
        fmt = self.cfg.image_format
        encoded: list[bytes] = []
        for img, err in zip(images, errors):
            encoded.append(b"" if err is not None else encode_image(img, fmt, self.cfg.quality))
        out: dict[str, Any] = {}
        out["key"] = np.array(
            [
                sample_key(str(batch["prompt_id"][i]), int(batch["image_index"][i]), seeds[i], self.model, self.settings_hash)
                for i in range(n)
            ],
            dtype=object,
        )
        for field in PROMPT_SCHEMA:
            out[field.name] = batch[field.name]
        out["model"] = np.array([self.model] * n, dtype=object)
        out["settings_hash"] = np.array([self.settings_hash] * n, dtype=object)
        out["image_format"] = np.array([fmt] * n, dtype=object)
        out["width"] = np.full(n, self.width, dtype=np.int32)
        out["height"] = np.full(n, self.height, dtype=np.int32)
        out["image"] = np.array(encoded, dtype=object)
        out[ERROR_COLUMN] = np.array(errors, dtype=object)
        return out
