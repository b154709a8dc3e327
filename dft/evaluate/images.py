"""Image sources for labelling: a folder of image files, WebDataset tar shards, or Parquet files with
image bytes, each read as batches of the readers' batch contract (``image`` bytes, ``key``,
``prompt`` when known, and whatever metadata the source carries).

The prompt's own attribute columns (``gender``, ``age``, ``ethnicity`` of SAMPLE_SCHEMA) are renamed
``prompt_gender``... so they cannot be confused with the *perceived* attributes readers write.
"""

from __future__ import annotations

import json
import logging
from typing import Iterator

import numpy as np

from dft import storage
from dft.errors import InputError
from dft.schema import ATTRIBUTE_COLUMNS

log = logging.getLogger(__name__)

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
IMAGE_COLUMNS = ("image", "png", "jpg", "jpeg", "webp")


def rename_prompt_attributes(row: dict) -> dict:
    return {(f"prompt_{k}" if k in ATTRIBUTE_COLUMNS else k): v for k, v in row.items()}


def _to_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    cols: dict[str, list] = {}
    for r in rows:
        for k in r:
            cols.setdefault(k, [])
    for k in cols:
        vals = [r.get(k) for r in rows]
        arr = np.empty(len(vals), dtype=object)
        arr[:] = vals
        cols[k] = arr
    return cols


def detect_kind(path: str) -> str:
    """'parquet', 'webdataset' or 'folder' for a file or folder URI."""
    p = str(path).rstrip("/")
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith(".tar"):
        return "webdataset"
    if storage.isdir(p):
        if storage.glob(p, "**/*.parquet"):
            return "parquet"
        if storage.glob(p, "**/*.tar"):
            return "webdataset"
        return "folder"
    raise InputError(f"{path}: not a .parquet file, a .tar shard, or a folder")


def iter_batches(path: str, batch_size: int = 64, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Batches of rows from any supported source, in a stable order."""
    kind = detect_kind(path)
    rows = {"parquet": _parquet_rows, "webdataset": _tar_rows, "folder": _folder_rows}[kind](path)
    buf: list[dict] = []
    n = 0
    for row in rows:
        buf.append(row)
        n += 1
        if len(buf) >= batch_size:
            yield _to_batch(buf)
            buf = []
        if limit is not None and n >= limit:
            break
    if buf:
        yield _to_batch(buf)


def _files(path: str, pattern: str) -> list[str]:
    return [path] if not storage.isdir(path) else storage.glob(path, pattern)


def _parquet_rows(path: str) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for uri in _files(path, "**/*.parquet"):
        fs, p = storage.pyarrow_filesystem(uri)
        pf = pq.ParquetFile(fs.open_input_file(p))
        image_col = next((c for c in IMAGE_COLUMNS if c in pf.schema_arrow.names), None)
        if image_col is None:
            raise InputError(f"{uri}: no image bytes column (one of {IMAGE_COLUMNS})")
        for batch in pf.iter_batches(batch_size=256):
            for row in batch.to_pylist():
                row["image"] = row.pop(image_col)
                row.setdefault("key", None)
                yield rename_prompt_attributes(row)


def _tar_rows(path: str) -> Iterator[dict]:
    from dft.generate.shards import iter_webdataset

    for uri in _files(path, "**/*.tar"):
        for sample in iter_webdataset(uri):
            row = {"key": sample["__key__"]}
            for ext, data in sample.items():
                if ext != "__key__":
                    _tar_field(row, ext.lower(), data)
            if row.get("image") is not None:
                yield rename_prompt_attributes(row)


def _tar_field(row: dict, ext: str, data: bytes) -> None:
    last = ext.rsplit(".", 1)[-1]
    if last in IMAGE_EXTS or ext == "image":
        row["image"] = data
    elif last == "json":
        try:
            meta = json.loads(data)
        except ValueError:
            return
        if isinstance(meta, dict):
            for k, v in meta.items():
                if k not in ("image", "key") and (v is None or isinstance(v, (str, int, float, bool))):
                    row.setdefault(k, v)
    elif last in ("txt", "prompt", "caption", "text"):
        row.setdefault("prompt", data.decode("utf-8", "replace").strip())
    elif len(data) <= 4096:  # a per-column member as Ray's write_webdataset makes them ("KEY.model")
        try:
            row.setdefault(ext, data.decode("utf-8"))
        except UnicodeDecodeError:
            pass


def _folder_rows(path: str) -> Iterator[dict]:
    root = storage.normalize(path) if not storage.is_s3(path) else path
    files = [u for u in storage.glob(root, "**/*") if u.rsplit(".", 1)[-1].lower() in IMAGE_EXTS]
    for uri in files:
        rel = uri[len(root) :].lstrip("/")
        stem = rel.rsplit(".", 1)[0]
        row = {"key": stem, "path": rel, "image": storage.read_bytes(uri)}
        caption = storage.join(root, stem + ".txt")
        if storage.exists(caption):
            row["prompt"] = storage.read_text(caption).strip()
        yield row
