"""Plan a generation job before any worker starts: where the prompt rows are, which shard each row
goes to, and whether an existing output folder was started with the same plan. No Ray here.

The table's order is its files sorted by name, then the rows in file order (the prompts stage writes
the table sorted by prompt id and image index). Row ``p`` of that order goes to shard
``p // shard_size``. The plan needs only Parquet footers (row counts per row group), never the rows,
so the driver's memory does not grow with the table.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import logging
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from dft import storage
from dft.errors import DftError
from dft.generate.config import GenerateConfig
from dft.generate.core import settings_dict, settings_hash
from dft.schema import PROMPT_SCHEMA

log = logging.getLogger(__name__)

PLAN_VERSION = 1


class PromptTableError(DftError, ValueError):
    """The prompt table is missing, empty or of the wrong schema."""


class PlanChanged(DftError, RuntimeError):
    """The output folder holds a job started with other inputs or settings."""


@dataclass
class RowGroup:
    uri: str
    group: int
    start: int  # position of its first row in the whole table
    rows: int


@dataclass
class PromptSource:
    """The prompt table as a list of Parquet row groups with their global row offsets."""

    groups: list[RowGroup]
    rows: int
    fingerprint: str
    # The row group read last: consecutive shards mostly fall in the same one (a row group of the prompts
    # stage holds ~65k rows, a shard 1k), and decoding it again for each shard cost more than the shard's work.
    _last: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def _row_group(self, g: RowGroup) -> pa.Table:
        if self._last is None or self._last[0] != (g.uri, g.group):
            self._last = ((g.uri, g.group), _open(g.uri).read_row_group(g.group, columns=PROMPT_SCHEMA.names))
        return self._last[1]

    def read_rows(self, start: int, stop: int) -> pa.Table:
        """Rows [start, stop) of the table, reading only the row groups that overlap."""
        starts = [g.start for g in self.groups]
        i = max(0, bisect.bisect_right(starts, start) - 1)
        pieces = []
        while i < len(self.groups) and self.groups[i].start < stop:
            g = self.groups[i]
            lo, hi = max(start, g.start), min(stop, g.start + g.rows)
            if hi > lo:
                pieces.append(self._row_group(g).slice(lo - g.start, hi - lo))
            i += 1
        table = pa.concat_tables(pieces).cast(PROMPT_SCHEMA) if pieces else PROMPT_SCHEMA.empty_table()
        return table.append_column("_pos", pa.array(range(start, start + table.num_rows), pa.int64()))


def _open(uri: str) -> pq.ParquetFile:
    fs, path = storage.pyarrow_filesystem(uri)
    return pq.ParquetFile(fs.open_input_file(path))


def _check_schema(schema: pa.Schema, where: str) -> None:
    missing = [n for n in PROMPT_SCHEMA.names if n not in schema.names]
    if missing:
        raise PromptTableError(f"prompt table {where} lacks columns {missing} (expected PROMPT_SCHEMA)")


def prompt_source(folder_uri: str) -> PromptSource:
    """Footers of every ``*.parquet`` under ``folder_uri``; fails naming the path when there are none or no rows."""
    if not storage.exists(folder_uri):
        raise PromptTableError(
            f"no prompt table at {folder_uri}: run the prompts stage first (`dft prompts --config ...`)"
        )
    files = storage.glob(folder_uri, "*.parquet")
    if not files:
        raise PromptTableError(f"no Parquet files in {folder_uri}: run the prompts stage first (`dft prompts`)")
    groups: list[RowGroup] = []
    digest = hashlib.sha256()
    pos = 0
    for uri in files:
        pf = _open(uri)
        _check_schema(pf.schema_arrow, uri)
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if n:
                groups.append(RowGroup(uri, g, pos, n))
                # The identity of the rows: ids, indices and seeds, streamed a row group at a time.
                t = pf.read_row_group(g, columns=["prompt_id", "image_index", "seed"])
                for col in t.columns:
                    for chunk in col.chunks:
                        for buf in chunk.buffers():
                            if buf is not None:
                                digest.update(memoryview(buf))
                pos += n
    if pos == 0:
        raise PromptTableError(f"the prompt table in {folder_uri} is empty (0 rows): nothing to generate")
    return PromptSource(groups, pos, digest.hexdigest()[:16])


def stage_table(table: pa.Table, out_uri: str) -> str:
    """An in-memory table becomes ``OUT/_input/prompts.parquet``, so workers read it like any other
    (and a resumed job can check it is the same)."""
    if table.num_rows == 0:
        raise PromptTableError("the prompt table given is empty (0 rows): nothing to generate")
    _check_schema(table.schema, "(in-memory table)")
    folder = storage.join(out_uri, "_input")
    buf = io.BytesIO()
    pq.write_table(table.select(PROMPT_SCHEMA.names).cast(PROMPT_SCHEMA), buf, row_group_size=4096)
    uri = storage.join(folder, "prompts.parquet")
    data = buf.getvalue()
    if not (storage.exists(uri) and storage.read_bytes(uri) == data):
        storage.write_bytes(uri, data)
    return folder


@dataclass
class Plan:
    rows: int
    shard_size: int
    num_shards: int
    model: str
    settings_hash: str
    settings: dict
    formats: list[str]
    input_fingerprint: str
    version: int = PLAN_VERSION
    extra: dict = field(default_factory=dict)

    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.shard_size
        return start, min(self.rows, start + self.shard_size)

    def as_dict(self) -> dict:
        return asdict(self)


def make_plan(source: PromptSource, model_source: str, cfg: GenerateConfig) -> Plan:
    shards = -(-source.rows // cfg.shard_size)
    return Plan(
        rows=source.rows,
        shard_size=cfg.shard_size,
        num_shards=shards,
        model=model_source,
        settings_hash=settings_hash(cfg),
        settings=settings_dict(cfg),
        formats=list(cfg.formats),
        input_fingerprint=source.fingerprint,
    )


def check_or_write_plan(plan: Plan, out_uri: str) -> bool:
    """Write ``OUT/_plan.json``, or check it matches the one there. True when resuming."""
    uri = storage.join(out_uri, "_plan.json")
    new = plan.as_dict()
    if storage.exists(uri):
        old = storage.read_json(uri)
        keys = ("rows", "shard_size", "model", "settings_hash", "formats", "input_fingerprint", "version")
        changed = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in keys if old.get(k) != new[k]]
        old_settings = old.get("settings", {})
        changed += [f"settings.{k}: {old_settings.get(k)!r} -> {v!r}" for k, v in new["settings"].items()
                    if old_settings.get(k) != v]
        if changed:
            raise PlanChanged(
                f"{out_uri} holds a generation job started with other inputs or settings ({'; '.join(changed)}). "
                "Write to another folder, or remove this one (`dft generate --force` does it for a run)."
            )
        return True
    storage.write_json(uri, new)
    return False
