"""Curation: drop synthetic images whose perceived attributes contradict their prompt.

The readers run over RUN/synthetic (the same actor pool as evaluation). An image is dropped for an
attribute when its prompt names a value listed in ``curate.expect[attribute]`` and the perceived
group is not one of the agreeing groups (e.g. prompt gender "man", perceived "woman"); with
``skin_tone_by_prompt``, when the perceived Monk tone is more than ``skin_tone_tolerance`` away from
the tone the prompt's ethnicity value names. Unreadable images are kept unless ``drop_unreadable``.
With ``keep_per_prompt``, each prompt keeps at most that many passing images (lowest image_index
first; the rest are dropped as ``over_quota``): generate more per prompt than you keep, and prompts
whose images fail more often still train with as many as the others.

Outputs, under RUN/curated/:
- ``keep.parquet``: column ``key``, the images to train on (both modes);
- ``dropped.parquet``: ``key``, ``reason`` (the attribute that disagreed), the prompt's value and
  the perceived one, so a person can audit what was removed;
- ``parquet/shard-NNNNN.parquet`` (mode ``filter``): the kept samples, SAMPLE_SCHEMA;
- ``summary.json``: counts, and drops per attribute.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dft import storage
from dft.schema import ATTRIBUTE_COLUMNS

log = logging.getLogger(__name__)


def _prompt_col(attr: str, cfg) -> str:
    col = cfg.prompt_column.get(attr, attr)
    return f"prompt_{col}" if col in ATTRIBUTE_COLUMNS else col


def decide(labels: pa.Table, cfg) -> tuple[np.ndarray, list[str | None], list[tuple]]:
    """Per row: keep (bool), the drop reason, and (prompt value, perceived value) of the drop."""
    n = labels.num_rows
    keep = np.ones(n, dtype=bool)
    reason: list[str | None] = [None] * n
    detail: list[tuple] = [(None, None)] * n

    def col(name):
        return labels.column(name).to_pylist() if name in labels.column_names else [None] * n

    checks = []
    for attr, agree in cfg.expect.items():
        if attr not in labels.column_names:
            continue
        checks.append((attr, col(_prompt_col(attr, cfg)), col(attr),
                       lambda pv, seen, agree=agree: seen in agree.get(pv, [seen]) if pv in agree else True))
    if cfg.skin_tone_by_prompt and "skin_tone" in labels.column_names:
        tol = cfg.skin_tone_tolerance
        want = cfg.skin_tone_by_prompt
        checks.append(
            ("skin_tone", col(_prompt_col("ethnicity", cfg)), col("skin_tone"),
             lambda pv, seen: pv not in want or abs(int(seen) - int(want[pv])) <= tol)
        )
    for attr, prompt_vals, seen_vals, ok in checks:
        for i in range(n):
            if not keep[i]:
                continue
            pv, seen = prompt_vals[i], seen_vals[i]
            if seen is None:
                if cfg.drop_unreadable and pv is not None:
                    keep[i], reason[i], detail[i] = False, f"{attr}_unreadable", (pv, None)
                continue
            if pv is not None and not ok(pv, seen):
                keep[i], reason[i], detail[i] = False, attr, (pv, seen)
    if cfg.keep_per_prompt is not None:
        _apply_quota(labels, keep, reason, detail, cfg.keep_per_prompt)
    return keep, reason, detail


def _apply_quota(labels: pa.Table, keep: np.ndarray, reason: list, detail: list, quota: int) -> None:
    """Per prompt, keep only the first ``quota`` passing images (lowest image_index, then key): the
    others are dropped as ``over_quota``. The order is the prompt table's, so the kept set does not
    depend on the order the readers returned rows in."""
    for name in ("prompt_id", "image_index", "key"):
        if name not in labels.column_names:
            raise ValueError(f"curate.keep_per_prompt needs the column {name!r} in the labels; it has {labels.column_names}")
    prompt_ids = labels.column("prompt_id").to_pylist()
    index = labels.column("image_index").to_pylist()
    keys = labels.column("key").to_pylist()
    taken: dict[str, int] = {}
    for i in sorted(np.flatnonzero(keep), key=lambda i: (prompt_ids[i], index[i], keys[i])):
        pid = prompt_ids[i]
        if taken.get(pid, 0) >= quota:
            keep[i], reason[i], detail[i] = False, "over_quota", (quota, None)
        else:
            taken[pid] = taken.get(pid, 0) + 1


def curate_run(cfg, run, force: bool = False) -> dict:
    from dft.cluster import connect
    from dft.errors import MissingInput
    from dft.evaluate.pipeline import read_with_ray
    from dft.generate.shards import shard_files

    files = shard_files(run.synthetic, "parquet")
    if not files:
        raise MissingInput(f"no Parquet shards under {run.synthetic}: run `dft generate` first")
    connect(cfg.ray)
    labels = read_with_ray(files, cfg.curate.readers, num_actors=cfg.curate.num_actors)
    return apply_curation(labels, files, run.curated, cfg.curate)


def apply_curation(labels: pa.Table, shard_uris: list[str], out_uri: str, cfg) -> dict:
    """Write the keep-list, the dropped list, the summary and (mode filter) the filtered shards."""
    keep, reason, detail = decide(labels, cfg)
    keys = labels.column("key")
    kept = pa.table({"key": pc.filter(keys, pa.array(keep))})
    drop_idx = np.flatnonzero(~keep)
    dropped = pa.table(
        {
            "key": pc.take(keys, pa.array(drop_idx, pa.int64())),
            "reason": pa.array([reason[i] for i in drop_idx], pa.string()),
            "prompt_value": pa.array([None if detail[i][0] is None else str(detail[i][0]) for i in drop_idx], pa.string()),
            "perceived_value": pa.array([None if detail[i][1] is None else str(detail[i][1]) for i in drop_idx], pa.string()),
        }
    )
    for name, table in (("keep.parquet", kept), ("dropped.parquet", dropped)):
        with storage.atomic_local_path(storage.join(out_uri, name)) as tmp:
            pq.write_table(table, tmp)
    by_attr: dict[str, int] = {}
    for i in drop_idx:
        by_attr[reason[i]] = by_attr.get(reason[i], 0) + 1
    counts = {"images": labels.num_rows, "kept": int(keep.sum()), "dropped": int((~keep).sum()), "dropped_by": by_attr}
    if cfg.keep_per_prompt is not None:
        per_prompt = pc.value_counts(pc.filter(labels.column("prompt_id"), pa.array(keep))).field("counts").to_pylist()
        n_prompts = len(pc.unique(labels.column("prompt_id")))
        short = n_prompts - sum(1 for c in per_prompt if c >= cfg.keep_per_prompt)
        counts["keep_per_prompt"] = cfg.keep_per_prompt
        counts["prompts_short_of_quota"] = short
        if short:
            log.warning("curation: %d of %d prompts kept fewer than curate.keep_per_prompt=%d images "
                        "(too many dropped; generate more per prompt)", short, n_prompts, cfg.keep_per_prompt)
    if cfg.mode == "filter":
        keep_set = pa.array(kept.column("key").to_pylist(), pa.string())
        folder = storage.join(out_uri, "parquet")
        storage.remove(folder, recursive=True)
        written = 0
        for i, uri in enumerate(shard_uris):
            fs, p = storage.pyarrow_filesystem(uri)
            t = pq.read_table(p, filesystem=fs)
            t = t.filter(pc.is_in(t.column("key"), value_set=keep_set))
            if t.num_rows:
                with storage.atomic_local_path(storage.join(folder, f"shard-{i:05d}.parquet")) as tmp:
                    pq.write_table(t, tmp)
                written += t.num_rows
        counts["filtered_rows"] = written
    storage.write_json(storage.join(out_uri, "summary.json"), counts)
    log.info("curation: kept %d of %d images; dropped by reason: %s", counts["kept"], counts["images"], by_attr)
    return counts
