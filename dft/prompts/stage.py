"""The prompts stage: write the diverse table and the neutral evaluation table under RUN/prompts."""

from __future__ import annotations

import logging

from dft import storage
from dft.errors import InputError
from dft.prompts.table import PromptTable, neutral_table, write_table
from dft.runs import Run, StageResult, run_stage

log = logging.getLogger(__name__)

SECTIONS = ("prompts",)


def build_prompts(cfg, out: str) -> dict:
    """Write ``out/diverse/part-*.parquet`` and ``out/neutral.parquet``; return counts (``per_attribute``:
    images per value of each attribute, what ``dft prompts`` shows as a table)."""
    table = PromptTable(cfg.prompts)
    if table.num_rows == 0:
        raise InputError("prompts: the table is empty (check prompts.include/exclude and prompts.sample_fraction)")
    storage.remove(storage.join(out, "diverse"), recursive=True)
    files = write_table(table.batches(), storage.join(out, "diverse"))
    neutral = neutral_table(cfg.prompts)
    write_table(iter(neutral.to_batches()), storage.join(out, "neutral"))
    counts = {
        "combinations": len(table.combos),
        "rows": table.num_rows,
        "files": len(files),
        "neutral_prompts": len(set(neutral.column("prompt").to_pylist())),
        "neutral_rows": neutral.num_rows,
        "per_attribute": {a: dict(c) for a, c in table.counts().items()},
    }
    log.info("wrote %s rows in %d files to %s", f"{table.num_rows:,}", len(files), out)
    return counts


def prompts_stage(cfg, force: bool = False) -> StageResult:
    run = Run(cfg.run.uri)
    result = run_stage(run, "prompts", cfg, SECTIONS, lambda: build_prompts(cfg, run.prompts), force=force)
    if result.skipped:
        log.info("prompt table already in %s (%s rows)", run.prompts, f"{result.counts.get('rows', 0):,}")
    return result


def run_prompts(cfg, force: bool = False, out: str | None = None) -> dict:
    """The stage's counts; with ``out``, a one-off export of the table there (not a run stage: no marker)."""
    if out:
        return build_prompts(cfg, out)
    return prompts_stage(cfg, force).counts
