"""The one Ray Data adapter of the readers: an actor pool that holds a ``ReaderChain`` per actor.

Each actor builds its readers once (a model is loaded once per actor, on its GPU when the readers
ask for one) and reads batches of images streamed from the generated Parquet shards; only the
labels come back to the driver (images stay in the object store).
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from dft import storage
from dft.evaluate.config import ReaderConfig
from dft.evaluate.labels import batch_to_table

log = logging.getLogger(__name__)


class ReadAttributes:
    """A Ray Data callable class: image batch -> label batch (without the image bytes)."""

    def __init__(self, reader_cfgs: list[dict], extra_columns: dict | None = None):
        from dft.evaluate.registry import ReaderChain

        self.chain = ReaderChain([ReaderConfig(**c) for c in reader_cfgs])
        self.extra = extra_columns or {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from dft.evaluate.images import rename_prompt_attributes

        batch = rename_prompt_attributes(dict(batch))
        n = len(batch["image"])
        for k, v in self.extra.items():
            batch[k] = np.array([v] * n, dtype=object)
        out = self.chain(batch)
        out.pop("image", None)
        # Ray turns object columns of str/None into Arrow strings; an all-None column would have
        # no type, so reasons are written as strings with "" for "none" and mapped back on the driver.
        for k, v in list(out.items()):
            if v.dtype == object and k.endswith("_reason"):
                out[k] = np.array(["" if x is None else str(x) for x in v], dtype=object)
        return out


def read_with_ray(
    parquet_files: list[str],
    reader_cfgs: list[ReaderConfig],
    num_actors: int = 1,
    extra_columns: dict | None = None,
) -> pa.Table:
    """Labels of every image in ``parquet_files`` (SAMPLE_SCHEMA shards), read by an actor pool.

    Needs a connected Ray (``dft.cluster.connect``)."""
    import ray

    if not parquet_files:
        return pa.table({})
    # Reading is I/O: tasks of 0 CPUs, so on a small node they never wait behind the reader actors for a
    # CPU (ray.data.read_parquet lists files in a 1-CPU task that can deadlock a 1-CPU node).
    ds = ray.data.from_items([{"uri": u} for u in parquet_files], override_num_blocks=len(parquet_files))
    ds = ds.map_batches(read_parquet_rows, batch_size=1, batch_format="pyarrow", num_cpus=0)
    batch_size = min(c.batch_size for c in reader_cfgs)
    num_gpus = max(c.num_gpus for c in reader_cfgs)
    from dft.cluster import wait_for_resources

    # Ray Data's default of 1 CPU per actor.
    wait_for_resources([{"CPU": 1, "GPU": num_gpus}] * num_actors, f"evaluate: {num_actors} reader actor(s)")
    labelled = ds.map_batches(
        ReadAttributes,
        fn_constructor_args=([c.model_dump(mode="json") for c in reader_cfgs], extra_columns),
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        batch_size=batch_size,
        batch_format="numpy",
        num_gpus=num_gpus if num_gpus > 0 else None,
    )
    tables = [_fix_reasons(t) for t in _arrow_tables(labelled)]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


READ_ROWS = 256  # rows per block read from a shard


def read_parquet_rows(files: pa.Table):
    """Rows of the Parquet files named in ``files["uri"]``, a block of READ_ROWS at a time."""
    import pyarrow.parquet as pq

    for uri in files["uri"].to_pylist():
        fs, p = storage.pyarrow_filesystem(uri)
        with fs.open_input_file(p) as f:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=READ_ROWS):
                yield pa.Table.from_batches([rb])


def _arrow_tables(ds) -> list[pa.Table]:
    import ray

    return [t if isinstance(t, pa.Table) else pa.Table.from_pandas(t) for t in ray.get(ds.to_arrow_refs())]


def _fix_reasons(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    for i, name in enumerate(table.column_names):
        if name.endswith("_reason"):
            col = table.column(i).cast(pa.string())
            table = table.set_column(i, name, pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col))
    return table


def read_local(parquet_files: list[str], reader_cfgs: list[ReaderConfig], extra_columns: dict | None = None) -> pa.Table:
    """The same as ``read_with_ray`` in this process (tests, small inputs)."""
    import pyarrow.parquet as pq

    actor = ReadAttributes([c.model_dump(mode="json") for c in reader_cfgs], extra_columns)
    bs = min(c.batch_size for c in reader_cfgs)
    tables = []
    for uri in parquet_files:
        fs, p = storage.pyarrow_filesystem(uri)
        for rb in pq.ParquetFile(fs.open_input_file(p)).iter_batches(batch_size=bs):
            batch = {name: rb.column(name).to_numpy(zero_copy_only=False) for name in rb.schema.names}
            tables.append(_fix_reasons(batch_to_table(actor(batch))))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
