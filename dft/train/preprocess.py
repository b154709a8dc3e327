"""Pure preprocessing of the fine-tuning job's samples: numpy/torch/pyarrow, no Ray. ``data.py`` maps
these over a Ray Dataset; each one also runs on a plain batch in-process (tests, benchmarks).

Columns handed to the trainers: ``pixels`` (uint8, 3xRxR) or ``latent_params`` (float32, 2Cxhxw: the
VAE posterior's mean and log-variance), plus ``prompt_ids`` and ``neutral_ids`` (int64, tokenised
full prompt and neutral template; ``prompt_ids_2``/``_3`` for the families' other tokenizers), or,
with ``precompute_text_embeddings``, ``prompt_embeds``/``neutral_embeds`` and ``prompt_pooled``/
``neutral_pooled`` from the frozen text encoders. SDXL rows also carry ``original_size`` and
``crop_top_left`` (its added time ids). The caption policy is applied per step in the worker
(``step.prepare_batch``), so attribute dropout draws anew every epoch."""

from __future__ import annotations

import functools
import io

import numpy as np

READ_COLUMNS = ["key", "prompt", "neutral_prompt", "image"]


def webdataset_columns(batch):
    """WebDataset rows (``ray.data.read_webdataset(decoder=None)``) -> a table of READ_COLUMNS."""
    import pyarrow as pa

    from dft.generate.shards import sample_from_webdataset

    rows = batch.to_pylist()
    samples = [sample_from_webdataset(r) for r in rows]
    return pa.table({c: [s[c] for s in samples] for c in READ_COLUMNS},
                    schema=pa.schema([("key", pa.string()), ("prompt", pa.string()),
                                      ("neutral_prompt", pa.string()), ("image", pa.binary())]))


def keep_filter(batch, keep: frozenset):
    """The rows of a table whose key is in ``keep`` (the curated keep-list)."""
    import pyarrow as pa

    mask = pa.array([k in keep for k in batch.column("key").to_pylist()])
    return batch.filter(mask)


@functools.lru_cache(maxsize=4)
def tokenizer_for(source: str, cache_dir: str | None):
    """The model source's CLIP tokenizer (cached per process)."""
    from transformers import CLIPTokenizer

    from dft.models.sources import resolve_model_source

    return CLIPTokenizer.from_pretrained(resolve_model_source(source, cache_dir=cache_dir), subfolder="tokenizer")


def tokenize(tokenizer, texts: list[str]) -> np.ndarray:
    out = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="np")
    return out["input_ids"].astype(np.int64)


def decode_image_with_geometry(data: bytes, resolution: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Encoded image -> (RGB uint8 CHW, shorter side resized to ``resolution`` and centre-cropped;
    original size (h, w); crop top-left (y, x) in the resized image): SDXL's micro-conditioning."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    scale = resolution / min(w, h)
    top = left = 0
    if (w, h) != (resolution, resolution):
        nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy(), (h, w), (top, left)


def decode_image(data: bytes, resolution: int) -> np.ndarray:
    """Encoded image -> RGB, shorter side resized to ``resolution``, centre-cropped; uint8 CHW."""
    return decode_image_with_geometry(data, resolution)[0]


def caption_columns(prefix: str, ids: dict) -> dict:
    """{"ids": a, "ids_2": b} -> {"prompt_ids": a, "prompt_ids_2": b} (the trainers' column names)."""
    return {f"{prefix}_{k}": v for k, v in ids.items()}


def preprocess_batch(batch: dict, resolution: int, source: str, cache_dir: str | None,
                     max_sequence_length: int | None = None) -> dict:
    from dft.models.sources import resolve_model_source
    from dft.train.text import caption_tokenizers, tokenize_captions

    family, toks = caption_tokenizers(resolve_model_source(source, cache_dir=cache_dir))
    decoded = [decode_image_with_geometry(b, resolution) for b in batch["image"]]
    out = {"pixels": np.stack([d[0] for d in decoded])}
    out.update(caption_columns("prompt", tokenize_captions(family, toks, list(batch["prompt"]), max_sequence_length)))
    out.update(caption_columns("neutral", tokenize_captions(family, toks, list(batch["neutral_prompt"]),
                                                             max_sequence_length)))
    if family.name == "sdxl":
        out["original_size"] = np.array([d[1] for d in decoded], dtype=np.int64)
        out["crop_top_left"] = np.array([d[2] for d in decoded], dtype=np.int64)
    return out


class LatentEncoder:
    """Pixels -> the VAE posterior's parameters (mean, log-variance).

    Keeping the parameters (not one sample) lets the trainers draw a fresh latent every epoch,
    as if they ran the VAE themselves."""

    def __init__(self, source: str, cache_dir: str | None, device: str = "cpu"):
        import torch
        from diffusers import AutoencoderKL

        from dft.models.sources import resolve_model_source

        folder = resolve_model_source(source, cache_dir=cache_dir)
        self.device = device
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32).to(device).eval()

    def __call__(self, batch: dict) -> dict:
        import torch

        with torch.no_grad():
            px = torch.from_numpy(np.asarray(batch["pixels"])).to(self.device).float() / 127.5 - 1.0
            params = self.vae.encode(px).latent_dist.parameters.float().cpu().numpy()
        return {"latent_params": params, **{k: v for k, v in batch.items() if k != "pixels"}}


class TextEmbedder:
    """Token ids -> the frozen text encoders' embeddings (``train.precompute_text_embeddings``).

    The trainers then hold no text encoder at all (T5-XXL alone is 4.7B parameters, 9.5 GB in bf16):
    ``prompt_ids*``/``neutral_ids*`` become ``prompt_embeds``/``prompt_pooled`` and the neutral ones."""

    def __init__(self, source: str, cache_dir: str | None, device: str = "cpu"):
        import torch

        from dft.models.sources import resolve_model_source
        from dft.train.text import caption_tokenizers, load_text_encoders

        folder = resolve_model_source(source, cache_dir=cache_dir)
        self.family, _ = caption_tokenizers(folder)
        self.device = device
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.encoders = [e.to(device).eval() for e in load_text_encoders(folder, self.family, dtype=dtype)]

    def __call__(self, batch: dict) -> dict:
        import torch

        from dft.train.text import encode_captions, id_columns

        out = {k: v for k, v in batch.items() if not k.startswith(("prompt_ids", "neutral_ids"))}
        for prefix in ("prompt", "neutral"):
            ids = {c: torch.from_numpy(np.asarray(batch[f"{prefix}_{c}"])).to(self.device) for c in id_columns(self.family)}
            with torch.no_grad():
                embeds, pooled = encode_captions(self.family, self.encoders, ids)
            out[f"{prefix}_embeds"] = embeds.float().cpu().numpy()
            if pooled is not None:
                out[f"{prefix}_pooled"] = pooled.float().cpu().numpy()
        return out


class Precompute:
    """A Ray Data actor: what ``train.precompute_latents`` and ``train.precompute_text_embeddings`` ask for,
    in one actor (one pool: on a small machine two pools can hold every CPU and starve the reader)."""

    def __init__(self, source: str, cache_dir: str | None, device: str = "cpu", latents: bool = True,
                 text: bool = False):
        self.steps = ([LatentEncoder(source, cache_dir, device)] if latents else []) + (
            [TextEmbedder(source, cache_dir, device)] if text else [])

    def __call__(self, batch: dict) -> dict:
        for step in self.steps:
            batch = step(batch)
        return batch
