"""The output of a generation job: its layout, how a shard is committed, and readers. No Ray here.

    OUT/_plan.json                     what this folder is being filled with (written first)
    OUT/_parts/shard-NNNNN/part-*.parquet  a batch's rows, before their shard is complete (temporary)
    OUT/_commits/shard-NNNNN.json      a shard's commit marker: written last, after its files
    OUT/webdataset/shard-NNNNN.tar     KEY.png|jpg|webp, KEY.json (every metadata column), KEY.txt (prompt)
    OUT/parquet/shard-NNNNN.parquet    SAMPLE_SCHEMA rows, image bytes included
    OUT/failures.jsonl                 rows that failed every attempt, with their error
    OUT/manifest.json                  shards, counts, bytes, sha256 checksums, settings (written last)

A shard is the rows at positions [index * shard_size, (index + 1) * shard_size) of the prompt table.
Its files are written to temporary names and moved into place whole; the commit marker follows. A
shard without a marker does not exist for a restarted job, which redoes it from scratch.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
import tarfile
from typing import IO, Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dft import storage
from dft.errors import MissingInput
from dft.schema import METADATA_COLUMNS, SAMPLE_SCHEMA

log = logging.getLogger(__name__)

FORMATS = ("webdataset", "parquet")
FILE_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
POS = "_pos"  # the row's position in the prompt table: decides its shard and its order inside it
PART_SCHEMA = SAMPLE_SCHEMA.append(pa.field("error", pa.string())).append(pa.field(POS, pa.int64(), nullable=False))
FAILURE_COLUMNS = ("key", "prompt_id", "image_index", "seed", "prompt", "error")


class ShardIncomplete(RuntimeError):
    """A shard's parts do not hold exactly its rows: committing it would drop or duplicate samples."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def shard_relpath(index: int, fmt: str) -> str:
    return f"{fmt}/{shard_name(index)}.{'tar' if fmt == 'webdataset' else 'parquet'}"


def parts_uri(out_uri: str, index: int) -> str:
    return storage.join(out_uri, "_parts", shard_name(index))


def commit_uri(out_uri: str, index: int) -> str:
    return storage.join(out_uri, "_commits", f"{shard_name(index)}.json")


def committed_shards(out_uri: str) -> dict[int, dict]:
    """Commit markers found under ``out_uri``, by shard index."""
    found = {}
    for name in storage.listdir(storage.join(out_uri, "_commits")):
        if name.startswith("shard-") and name.endswith(".json"):
            found[int(name[6:11])] = storage.read_json(storage.join(out_uri, "_commits", name))
    return found


# -- writing -----------------------------------------------------------------------------------


def write_part(out_uri: str, shard: int, table: pa.Table) -> str:
    """One batch's rows of one shard. The name derives from the rows' positions, so a retried batch
    overwrites its own part instead of adding a second copy."""
    pos = table.column(POS).to_pylist()
    name = f"part-{min(pos):012d}-{hashlib.sha256(json.dumps(sorted(pos)).encode()).hexdigest()[:12]}.parquet"
    uri = storage.join(parts_uri(out_uri, shard), name)
    with storage.atomic_local_path(uri) as tmp:
        pq.write_table(table.cast(PART_SCHEMA), tmp, compression="none")
    return uri


def _sample_json(row: dict) -> bytes:
    meta = {c: row[c] for c in METADATA_COLUMNS}
    return json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # fixed headers: the same samples give the same tar bytes
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_webdataset_shard(path: str, table: pa.Table) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for row in table.to_pylist():
            key = row["key"]
            ext = FILE_EXTENSIONS[row["image_format"]]
            _tar_add(tar, f"{key}.{ext}", row["image"])
            _tar_add(tar, f"{key}.json", _sample_json(row))
            _tar_add(tar, f"{key}.txt", row["prompt"].encode())


def _sha256_file(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def commit_shard(out_uri: str, index: int, start: int, stop: int, formats: list[str]) -> dict:
    """Gather a shard's parts, write its files in table order, then its commit marker; drop the parts.

    Raises ShardIncomplete if the parts do not hold exactly positions [start, stop). A shard already
    committed is left as it is (a retried commit whose first attempt got as far as the marker)."""
    done = commit_uri(out_uri, index)
    if storage.exists(done):
        return storage.read_json(done)
    part_files = storage.glob(parts_uri(out_uri, index), "part-*.parquet")
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(u))) for u in part_files]
    table = pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table()
    table = table.sort_by(POS)
    pos = table.column(POS).to_pylist()
    # A retried batch may have left a second part holding the same rows: keep the first of each position.
    keep = [i for i in range(len(pos)) if i == 0 or pos[i] != pos[i - 1]]
    if len(keep) != len(pos):
        table = table.take(keep)
        pos = table.column(POS).to_pylist()
    if pos != list(range(start, stop)):
        missing = sorted(set(range(start, stop)) - set(pos))[:5]
        raise ShardIncomplete(
            f"{shard_name(index)}: parts hold {len(pos)} rows, expected {stop - start} "
            f"(positions {start}..{stop - 1}; first missing {missing})"
        )
    errors = table.column("error")
    failed_mask = pc.is_valid(errors)
    good = table.filter(pc.invert(failed_mask)).select(SAMPLE_SCHEMA.names).cast(SAMPLE_SCHEMA)
    failed = table.filter(failed_mask)
    files: dict[str, dict] = {}
    for fmt in formats:
        rel = shard_relpath(index, fmt)
        with storage.atomic_local_path(storage.join(out_uri, *rel.split("/"))) as tmp:
            if fmt == "parquet":
                pq.write_table(good, tmp, compression="zstd", row_group_size=256)
            else:
                write_webdataset_shard(tmp, good)
            nbytes, digest = _sha256_file(tmp)
        files[fmt] = {"path": rel, "bytes": nbytes, "sha256": digest}
    marker = {
        "index": index,
        "start": start,
        "stop": stop,
        "rows": stop - start,
        "images": good.num_rows,
        "failures": [{c: r[c] for c in FAILURE_COLUMNS} for r in failed.select(list(FAILURE_COLUMNS)).to_pylist()],
        "files": files,
    }
    storage.write_json(commit_uri(out_uri, index), marker)
    storage.remove(parts_uri(out_uri, index), recursive=True)
    return marker


# -- reading -----------------------------------------------------------------------------------


def read_manifest(out_uri: str) -> dict:
    """The manifest of a finished job; FileNotFoundError naming the path when the job has not finished."""
    uri = storage.join(out_uri, "manifest.json")
    if not storage.exists(uri):
        raise MissingInput(f"no manifest at {uri}: the generation job has not finished there")
    return storage.read_json(uri)


def shard_files(out_uri: str, fmt: str) -> list[str]:
    """URIs of a format's shard files, in shard order. From the manifest when the job finished,
    else from the commit markers (the shards finished so far)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {FORMATS}")
    out_uri = storage.normalize(out_uri)
    try:
        shards = read_manifest(out_uri)["shards"]
    except FileNotFoundError:
        shards = [committed_shards(out_uri)[i] for i in sorted(committed_shards(out_uri))]
    return [storage.join(out_uri, *s["files"][fmt]["path"].split("/")) for s in shards if fmt in s["files"]]


def sample_from_webdataset(files: dict[str, Any]) -> dict:
    """One WebDataset sample (``{"__key__": ..., "png": bytes, "json": bytes, ...}``, the shape of
    ``webdataset`` with ``decoder=None`` and of ``ray.data.read_webdataset(decoder=None)`` rows) as a
    SAMPLE_SCHEMA dict."""
    meta = files["json"]
    meta = json.loads(meta if isinstance(meta, (str, bytes)) else bytes(meta))
    ext = FILE_EXTENSIONS[meta["image_format"]]
    image = files[ext]
    return {**meta, "image": bytes(image)}


def iter_webdataset(source: str | IO[bytes]) -> Iterator[dict[str, Any]]:
    """The one WebDataset tar reader: a shard (a URI, or an open binary file) as its samples, in tar order,
    each ``{"__key__": KEY, EXT: bytes, ...}`` (``webdataset``'s grouping with ``decoder=None``).

    A member ``DIR/KEY.EXT`` belongs to sample ``DIR/KEY``; EXT is everything after the first dot
    of its name (``png``, ``json``, ``seg.png``), as written. The tar is streamed, not held whole."""
    if isinstance(source, str):
        fs, path = storage.filesystem(source)
        with fs.open(path, "rb") as f:
            yield from iter_webdataset(f)
        return
    group: dict[str, Any] = {}
    with tarfile.open(fileobj=source, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, base = posixpath.split(member.name)
            stem, _, ext = base.partition(".")
            key = posixpath.join(folder, stem) if folder else stem
            if group and group["__key__"] != key:
                yield group
                group = {}
            group["__key__"] = key
            group[ext] = tar.extractfile(member).read()
    if group:
        yield group


def iter_samples(out_uri: str, fmt: str = "parquet") -> Iterator[dict]:
    """Every sample as a dict of SAMPLE_SCHEMA fields, shard by shard (small tools and tests)."""
    for uri in shard_files(out_uri, fmt):
        if fmt == "webdataset":
            yield from (sample_from_webdataset(g) for g in iter_webdataset(uri))
        else:
            pf = pq.ParquetFile(io.BytesIO(storage.read_bytes(uri)))
            for batch in pf.iter_batches(batch_size=256):
                yield from batch.to_pylist()


def read_failures(out_uri: str) -> list[dict]:
    uri = storage.join(out_uri, "failures.jsonl")
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]
