"""The stages of a run, in order, and the runner the command line, the demo and the jobs share.

    results = run_pipeline(cfg, STAGES, force=False, observer=None)   # [StageResult, ...]

Each stage is a library function ``(cfg, force) -> StageResult`` that reads what the stage before
wrote under the run folder and records a marker through ``dft.runs.run_stage`` (a finished stage with
the same config is reused; ``force`` redoes it). The runner times each stage, tells an observer when
one starts and ends (the command line draws its lines from that), and turns a DftError into
``StageFailed`` naming the stage; a StageConfigChanged passes through as it is (it needs ``--force``,
not a fix). It prints nothing and never exits: errors are raised, results returned."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from dft.errors import DftError, StageFailed
from dft.runs import StageConfigChanged, StageResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    function: str
    summary: str


PIPELINE = (
    Stage("prompts", "dft.prompts.stage", "prompts_stage", "build the combinatorial prompt table"),
    Stage("generate", "dft.generate.stage", "generate_stage", "generate the synthetic image set"),
    Stage("curate", "dft.evaluate.stage", "curate_stage", "drop images whose perceived attributes contradict their prompt"),
    Stage("train", "dft.train.stage", "train_stage", "fine-tune and export a diffusers pipeline"),
    Stage("evaluate", "dft.evaluate.stage", "evaluate_stage", "generate on neutral prompts, read attributes, score fairness"),
    Stage("report", "dft.evaluate.stage", "report_stage", "write the report folder"),
)
STAGES = tuple(s.name for s in PIPELINE)
BY_NAME = {s.name: s for s in PIPELINE}


def stage_function(name: str) -> Callable[..., StageResult] | None:
    """The library function behind a stage, or None when this version of dft does not build it."""
    stage = BY_NAME[name]
    try:
        module = importlib.import_module(stage.module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dft"):
            return None
        raise
    return getattr(module, stage.function, None)


class Observer(Protocol):
    """Told when each stage starts and ends (the command line prints a line for each)."""

    def stage_started(self, name: str, index: int, total: int) -> None: ...

    def stage_finished(self, result: StageResult, index: int, total: int) -> None: ...


def skip_reason(cfg, name: str) -> str | None:
    """Why a stage does not run with this config (None: it runs)."""
    if name == "curate" and not cfg.curate.enabled:
        return "curate.enabled=false"
    if stage_function(name) is None:
        return "not built in this version of dft"
    return None


def run_pipeline(cfg, stages: Iterable[str] = STAGES, force: bool = False,
                 observer: Observer | None = None) -> list[StageResult]:
    """Run ``stages`` in order; returns one StageResult per stage (run, reused or skipped).

    Raises StageConfigChanged when a finished stage's config changed (re-run with ``force``), and
    StageFailed (its ``__cause__`` the stage's own DftError) when a stage fails for a reason a person
    can fix; any other exception is a bug and propagates unchanged."""
    names = list(stages)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown stages {unknown}: one of {STAGES}")
    results: list[StageResult] = []
    for index, name in enumerate(names, 1):
        reason = skip_reason(cfg, name)
        if reason:
            result = StageResult(name, "skipped", note=reason)
            log.info("stage %s skipped: %s", name, reason)
        else:
            if observer:
                observer.stage_started(name, index, len(names))
            t0 = time.perf_counter()
            try:
                result = stage_function(name)(cfg, force=force)
            except StageConfigChanged:
                raise
            except DftError as exc:
                raise StageFailed(name, exc) from exc
            result.seconds = time.perf_counter() - t0
        results.append(result)
        if observer:
            observer.stage_finished(result, index, len(names))
    return results
