"""The generate stage of a run: RUN/prompts/diverse -> RUN/synthetic, with a stage marker."""

from __future__ import annotations

import logging

from dft import storage
from dft.generate.job import generate_dataset
from dft.generate.plan import prompt_source
from dft.runs import Run, run_stage

log = logging.getLogger(__name__)

SECTIONS = ("model", "prompts", "generate")


def print_summary(counts: dict, out_uri: str, console=None) -> None:
    """The rich summary table of the CLI path."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=True)
    table = Table(title=f"generate: {out_uri}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("rows", f"{counts.get('rows', 0):,}"),
        ("images", f"{counts.get('images', 0):,}"),
        ("failures", f"{counts.get('failures', 0):,}"),
        ("shards (generated now)", f"{counts.get('shards', 0):,} ({counts.get('shards_generated', 0):,})"),
        ("bytes", f"{counts.get('bytes', 0) / 1e6:,.1f} MB"),
        ("seconds", f"{counts.get('seconds', 0):,.1f}"),
        ("images/s", f"{counts.get('images_per_s', 0):,.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def run_generate(cfg, force: bool = False) -> dict:
    """Generate RUN/synthetic from RUN/prompts/diverse. Fails fast, before Ray starts, when the prompt
    table is missing or empty or the model source cannot be resolved."""
    from dft.cluster import connect
    from dft.models.sources import resolve_model_source

    run = Run(cfg.run.uri)
    prompts = storage.join(run.prompts, "diverse")
    out = run.synthetic

    def work() -> dict:
        prompt_source(prompts)  # names the path if the prompts stage has not run or left no rows
        resolve_model_source(cfg.model.source, cache_dir=cfg.model.cache_dir, revision=cfg.model.revision)
        if force:
            log.info("--force: removing %s", out)
            storage.remove(out, recursive=True)
        connect(cfg.ray)
        counts = generate_dataset(prompts, out, cfg.model.source, cfg.generate, cache_dir=cfg.model.cache_dir)
        print_summary(counts, out)
        return counts

    config = {n: getattr(cfg, n).model_dump(mode="json") for n in SECTIONS}
    result = run_stage(run, "generate", cfg.section_hash(*SECTIONS), config, work, force=force)
    if result.skipped:
        log.info("synthetic set already in %s (%s images)", out, f"{result.counts.get('images', 0):,}")
    return result.counts
