"""Ray Data input of the fine-tuning job: shards -> decoded, cropped images -> (optionally) VAE latents.

Columns handed to the trainers: ``pixels`` (uint8, 3xRxR) or ``latent_params`` (float32, 2Cxhxw: the
VAE posterior's mean and log-variance), plus ``prompt_ids`` and ``neutral_ids`` (int64, tokenised
full prompt and neutral template; ``prompt_ids_2``/``_3`` for the families' other tokenizers), or,
with ``precompute_text_embeddings``, ``prompt_embeds``/``neutral_embeds`` and ``prompt_pooled``/
``neutral_pooled`` from the frozen text encoders. SDXL rows also carry ``original_size`` and
``crop_top_left`` (its added time ids). The caption policy is applied per step in the worker
(``step.prepare_batch``), so attribute dropout draws anew every epoch."""

from __future__ import annotations

from dft.errors import DftError
import functools
import io
import json
import logging
from dataclasses import dataclass

import numpy as np

from dft import storage
from dft.generate.shards import iter_webdataset, shard_files

log = logging.getLogger(__name__)

READ_COLUMNS = ["key", "prompt", "neutral_prompt", "image"]
MATERIALIZE_AUTO_BYTES = 512 * 1024**2


class DataError(DftError, ValueError):
    """The training data cannot be used; the message names the path."""


@dataclass
class DataSource:
    uri: str
    fmt: str
    files: list[str]
    keep_uri: str | None = None
    total_bytes: int = 0


def data_source(train_cfg, run) -> DataSource:
    """Which shards to read: train.data_uri, else the curated set (train.use_curated), else RUN/synthetic."""
    fmt = train_cfg.data_format
    keep_uri = None
    if train_cfg.data_uri:
        uri = storage.normalize(train_cfg.data_uri)
    elif train_cfg.use_curated:
        keep = storage.join(run.curated, "keep.parquet")
        if storage.exists(keep):
            uri, keep_uri = run.synthetic, keep
        elif storage.exists(storage.join(run.curated, "manifest.json")) or storage.isdir(storage.join(run.curated, fmt)):
            uri = run.curated
        else:
            raise DataError(
                f"train.use_curated is set but {run.curated} holds neither keep.parquet nor curated {fmt} shards: "
                "run `dft curate` first, or set train.use_curated=false"
            )
    else:
        uri = run.synthetic
    files = find_shards(uri, fmt)
    total = sum(storage.size(f) for f in files)
    return DataSource(uri, fmt, files, keep_uri, total)


def find_shards(uri: str, fmt: str) -> list[str]:
    """The shard files, checked: none, a missing file or an empty file fails here, naming the path."""
    try:
        files = shard_files(uri, fmt)
    except (FileNotFoundError, KeyError) as exc:
        raise DataError(f"no {fmt} shards under {uri}: {exc}") from exc
    if not files:
        raise DataError(
            f"no {fmt} shards under {uri} (expected {storage.join(uri, fmt)}/shard-NNNNN.* listed in "
            f"{storage.join(uri, 'manifest.json')} or _commits/): run `dft generate` first, or point "
            "train.data_uri at a generation output folder"
        )
    for f in files:
        if not storage.exists(f):
            raise DataError(f"shard {f} is listed under {uri} but does not exist")
        n = storage.size(f)
        if n == 0 or (n <= 64 * 1024 and _small_shard_is_empty(f, fmt)):
            raise DataError(f"shard {f} is empty ({n} bytes, no samples)")
    return files


def _small_shard_is_empty(uri: str, fmt: str) -> bool:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(io.BytesIO(storage.read_bytes(uri))).metadata.num_rows == 0
    return next(iter_webdataset(uri), None) is None


def _pyarrow_paths(files: list[str]):
    fs, _ = storage.pyarrow_filesystem(files[0])
    return [storage.pyarrow_filesystem(f)[1] for f in files], fs


def read_samples(src: DataSource):
    """A Ray Dataset of key, prompt, neutral_prompt, image (encoded bytes)."""
    import ray

    paths, fs = _pyarrow_paths(src.files)
    if src.fmt == "parquet":
        ds = ray.data.read_parquet(paths, filesystem=fs, columns=READ_COLUMNS)
    else:
        ds = ray.data.read_webdataset(paths, filesystem=fs, decoder=None).map_batches(
            _webdataset_columns, batch_format="pyarrow"
        )
    if src.keep_uri:
        import pyarrow.parquet as pq

        keep = pq.read_table(io.BytesIO(storage.read_bytes(src.keep_uri)), columns=["key"]).column("key").to_pylist()
        if not keep:
            raise DataError(f"the curated keep-list {src.keep_uri} is empty")
        ds = ds.map_batches(_keep_filter, fn_kwargs={"keep": frozenset(keep)}, batch_format="pyarrow")
    return ds


def _webdataset_columns(batch):
    import pyarrow as pa

    from dft.generate.shards import sample_from_webdataset

    rows = batch.to_pylist()
    samples = [sample_from_webdataset(r) for r in rows]
    return pa.table({c: [s[c] for s in samples] for c in READ_COLUMNS},
                    schema=pa.schema([("key", pa.string()), ("prompt", pa.string()),
                                      ("neutral_prompt", pa.string()), ("image", pa.binary())]))


def _keep_filter(batch, keep: frozenset):
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


def build_dataset(train_cfg, run, *, source: str, cache_dir: str | None, resolution: int, use_gpu: bool):
    """The training dataset and a description of it (for logs and the stage's counts)."""
    import ray

    src = data_source(train_cfg, run)
    ds = read_samples(src)
    if train_cfg.deterministic_data:
        # Blocks otherwise come out in the order their tasks finish, which varies run to run, and
        # with them the local shuffle's input: the same seed would not give the same batches.
        ds.context.execution_options.preserve_order = True
    ds = ds.map_batches(
        preprocess_batch,
        fn_kwargs={"resolution": resolution, "source": source, "cache_dir": cache_dir,
                   "max_sequence_length": train_cfg.max_sequence_length},
        batch_format="numpy",
        batch_size=64,
    )
    if train_cfg.precompute_latents or train_cfg.precompute_text_embeddings:
        ds = ds.map_batches(
            Precompute,
            fn_constructor_kwargs={"source": source, "cache_dir": cache_dir, "device": "cuda" if use_gpu else "cpu",
                                   "latents": train_cfg.precompute_latents,
                                   "text": train_cfg.precompute_text_embeddings},
            compute=ray.data.ActorPoolStrategy(size=train_cfg.latent_actors),
            num_gpus=1 if use_gpu else 0,
            batch_size=64,
            batch_format="numpy",
        )
    mode = train_cfg.materialize
    in_memory = mode == "always" or (mode == "auto" and src.total_bytes <= MATERIALIZE_AUTO_BYTES)
    rows = None
    if in_memory:
        # Decode (and encode latents) once; every epoch then reads the object store only, and the
        # trainers need no CPU left over for Ray Data.
        ds = ds.materialize()
        rows = ds.count()
        if rows == 0:
            raise DataError(f"no samples to train on in {src.uri} ({len(src.files)} {src.fmt} shards"
                            + (f", keep-list {src.keep_uri}" if src.keep_uri else "") + ")")
        per_worker = rows // train_cfg.num_workers
        if per_worker < train_cfg.batch_size:
            raise DataError(
                f"{rows} samples in {src.uri} give each of {train_cfg.num_workers} workers {per_worker}, fewer "
                f"than train.batch_size={train_cfg.batch_size}: lower the batch size or add data"
            )
    info = {"data_uri": src.uri, "format": src.fmt, "shards": len(src.files), "shard_bytes": src.total_bytes,
            "rows": rows, "in_memory": in_memory, "latents": bool(train_cfg.precompute_latents),
            "text_embeddings": bool(train_cfg.precompute_text_embeddings)}
    log.info("training data: %s", json.dumps(info))
    return ds, info
