"""Which shards the fine-tuning job reads, checked before any cluster resource is claimed: train.data_uri,
else the curated set (train.use_curated), else RUN/synthetic. No Ray here."""

from __future__ import annotations

import io
from dataclasses import dataclass

from dft import storage
from dft.errors import DftError
from dft.generate.shards import iter_webdataset, shard_files


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
