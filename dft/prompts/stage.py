"""The prompts stage: write the diverse table and the neutral evaluation table under RUN/prompts."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.table import Table

from dft import storage
from dft.prompts.table import ORDER, PromptTable, neutral_table, write_table
from dft.runs import Run, run_stage

log = logging.getLogger(__name__)


def print_counts(table: PromptTable, console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    counts = table.counts()
    summary = Table(title=f"prompt table: {len(table.combos):,} combinations, {table.num_rows:,} images")
    summary.add_column("attribute")
    summary.add_column("values", justify="right")
    summary.add_column("images per value (min / max)", justify="right")
    summary.add_column("examples")
    for attr in ORDER:
        c = counts[attr]
        summary.add_row(attr, str(len(c)), f"{min(c.values()):,} / {max(c.values()):,}", ", ".join(list(c)[:4]))
    console.print(summary)


def build_prompts(cfg, out: str) -> dict:
    """Write ``out/diverse/part-*.parquet`` and ``out/neutral.parquet``; return counts."""
    table = PromptTable(cfg.prompts)
    if table.num_rows == 0:
        raise ValueError("prompts: the table is empty (check include/exclude and sample_fraction)")
    storage.remove(storage.join(out, "diverse"), recursive=True)
    files = write_table(table.batches(), storage.join(out, "diverse"))
    neutral = neutral_table(cfg.prompts)
    write_table(iter(neutral.to_batches()), storage.join(out, "neutral"))
    print_counts(table)
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


def run_prompts(cfg, force: bool = False, out: str | None = None) -> dict:
    if out:  # an explicit destination is a one-off export, not a run stage
        return build_prompts(cfg, out)
    run = Run(cfg.run.uri)
    result = run_stage(
        run,
        "prompts",
        cfg.section_hash("prompts"),
        cfg.prompts.model_dump(mode="json"),
        lambda: build_prompts(cfg, run.prompts),
        force=force,
    )
    if result.skipped:
        log.info("prompt table already in %s (%s rows)", run.prompts, f"{result.counts.get('rows', 0):,}")
    return result.counts
