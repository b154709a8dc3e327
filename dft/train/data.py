"""The Ray Data adapter of the fine-tuning job: the shards as a Ray Dataset, the preprocessing of
``preprocess.py`` mapped over it (tasks, then one actor pool for what needs a model), materialised when
it fits. Which shards: ``source.py``; the ingest options of Ray Train: ``job.ingest_config``."""

from __future__ import annotations

import io
import json
import logging

from dft import storage
from dft.train.preprocess import READ_COLUMNS, Precompute, keep_filter, preprocess_batch, webdataset_columns
from dft.train.source import DataError, DataSource, data_source

log = logging.getLogger(__name__)

MATERIALIZE_AUTO_BYTES = 512 * 1024**2


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
            webdataset_columns, batch_format="pyarrow"
        )
    if src.keep_uri:
        import pyarrow.parquet as pq

        keep = pq.read_table(io.BytesIO(storage.read_bytes(src.keep_uri)), columns=["key"]).column("key").to_pylist()
        if not keep:
            raise DataError(f"the curated keep-list {src.keep_uri} is empty")
        ds = ds.map_batches(keep_filter, fn_kwargs={"keep": frozenset(keep)}, batch_format="pyarrow")
    return ds


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
