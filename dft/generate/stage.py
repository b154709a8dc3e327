"""The generate stage of a run: RUN/prompts/diverse -> RUN/synthetic, with a stage marker."""

from __future__ import annotations

import logging

from dft import storage
from dft.generate.job import generate_dataset
from dft.generate.plan import prompt_source
from dft.runs import Run, StageResult, run_stage

log = logging.getLogger(__name__)

SECTIONS = ("model", "prompts", "generate")


def generate_stage(cfg, force: bool = False) -> StageResult:
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
        return generate_dataset(prompts, out, cfg.model.source, cfg.generate, cache_dir=cfg.model.cache_dir)

    result = run_stage(run, "generate", cfg, SECTIONS, work, force=force)
    if result.skipped:
        log.info("synthetic set already in %s (%s images)", out, f"{result.counts.get('images', 0):,}")
    return result


def run_generate(cfg, force: bool = False) -> dict:
    """The stage's counts: rows, images, failures, shards, shards_generated, bytes, seconds, images_per_s."""
    return generate_stage(cfg, force).counts
