"""The label table (``dft label PATH --out LABELS`` writes one: dft/cli/evaluate.py).

One row per image: ``key``, ``model`` and ``prompt`` when known, one column per perceived
attribute (the group as text, null when unreadable), ``<attr>_reason`` (why it is unreadable),
the skin tone's ITA and CIELAB centre colour, scores of model readers, and the prompt's own
attributes as ``prompt_<attr>``. Parquet tables carry ``dft.attributes`` in their schema metadata:
each attribute's full list of groups (``dft fairness`` needs it to count empty groups).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa

from dft import storage
from dft.evaluate.fairness import METADATA_KEY

log = logging.getLogger(__name__)

LEADING = ("key", "model", "prompt")
DROP = ("image",)


def batch_to_table(batch: dict[str, np.ndarray]) -> pa.Table:
    cols = {}
    for k, v in batch.items():
        if k in DROP:
            continue
        arr = np.asarray(v)
        if arr.dtype.kind == "f":
            cols[k] = pa.array(arr, from_pandas=True)  # NaN -> null
        elif arr.dtype.kind in "iub":
            cols[k] = pa.array(arr)
        else:
            vals = [None if x is None else (x if isinstance(x, (str, int, float, bool)) else str(x)) for x in arr.tolist()]
            cols[k] = pa.array(vals)
    return pa.table(cols)


def label_table(tables: list[pa.Table], attributes: dict[str, list[str] | None]) -> pa.Table:
    """Concatenate labelled batches into the label table, columns ordered, groups in the metadata."""
    if not tables:
        cols = {c: pa.array([], pa.string()) for c in (*LEADING, *attributes)}
        table = pa.table(cols)
    else:
        table = pa.concat_tables(tables, promote_options="permissive")
    for c in ("prompt", "model"):
        if c not in table.column_names:
            table = table.append_column(c, pa.nulls(table.num_rows, pa.string()))
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type):  # an all-null column (no reasons in this batch) is still text
            table = table.set_column(i, f.name, table.column(i).cast(pa.string()))
    first = [c for c in LEADING if c in table.column_names] + [a for a in attributes if a in table.column_names]
    rest = [c for c in table.column_names if c not in first]
    table = table.select(first + rest)
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps({a: g for a, g in attributes.items()}).encode()
    return table.replace_schema_metadata(meta)


def write_labels(table: pa.Table, out: str) -> None:
    """Parquet (with the groups metadata) or CSV by the extension of ``out``; a CSV gets its groups
    in the sidecar ``OUT.groups.json`` (written first: a table is never newer than its groups)."""
    from dft.evaluate.attributes import sidecar_json, sidecar_uri

    if str(out).endswith(".csv"):
        meta = (table.schema.metadata or {}).get(METADATA_KEY)
        if meta:
            storage.write_text(sidecar_uri(out), sidecar_json(json.loads(meta)))
    with storage.atomic_local_path(out) as tmp:
        if str(out).endswith(".csv"):
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, compression="zstd")


def label_local(path: str, reader_cfgs, batch_size: int = 32, model: str | None = None, progress: bool = True) -> pa.Table:
    """Read every image under ``path`` with the readers, in this process (no Ray)."""
    from dft.evaluate.images import iter_batches
    from dft.evaluate.registry import ReaderChain

    chain = ReaderChain(reader_cfgs)
    tables = []
    done = 0
    for batch in iter_batches(path, batch_size=batch_size):
        if model is not None and "model" not in batch:
            batch["model"] = np.array([model] * len(batch["image"]), dtype=object)
        tables.append(batch_to_table(chain(batch)))
        done += len(batch["image"])
        if progress:
            log.info("labelled %d images", done)
    return label_table(tables, chain.attributes)
