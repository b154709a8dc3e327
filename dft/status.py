"""What a run folder says about its progress: stages done, shards committed, training step, evaluation,
last errors. Read-only, from the files the stages write (local or s3://); no Ray, no model.

The files read, by the stage that writes them:
    RUN/_stages/NAME.json, NAME.error.json                 run_stage (dft/runs.py): marker, last failure
    OUT/_plan.json, _commits/, _parts/, failures.jsonl,    generation (dft/generate/plan.py, shards.py,
        manifest.json   (OUT = RUN/synthetic, RUN/eval/images/LABEL)   job.py)
    RUN/checkpoints/NAME/checkpoint_*/state.json           the training loop (dft/train/loop.py)
    RUN/checkpoints/_stopped/NAME.json                     a deliberate stop (non-finite loss)
    RUN/eval/labels/LABEL.parquet, RUN/eval/metrics.json   evaluation (dft/evaluate/stage.py)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from dft import storage
from dft.errors import DftError
from dft.generate.shards import committed_shards, read_failures
from dft.pipeline import STAGES
from dft.runs import Run

log = logging.getLogger(__name__)

RECENT = 3  # failed rows shown per generation folder


class RunNotFound(DftError, FileNotFoundError):
    """The run folder does not exist."""


@dataclass
class ErrorNote:
    """One thing that went wrong: where it was recorded, what it says, when (if the record says)."""

    where: str
    message: str
    time: str | None = None
    type: str | None = None


@dataclass
class StageStatus:
    name: str
    state: str  # done | failed | started (outputs but no marker: running, or stopped without a record) | not started
    finished_at: str | None = None
    config_hash: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    error: ErrorNote | None = None


@dataclass
class GenerationProgress:
    """One generation output folder (the synthetic set, or one model's evaluation images)."""

    uri: str
    planned_rows: int | None
    planned_shards: int | None
    committed_shards: int
    rows_done: int
    images: int
    failures: int
    shards_in_flight: int
    finished: bool  # the manifest is written
    recent_failures: list[dict] = field(default_factory=list)


@dataclass
class Checkpoint:
    uri: str
    step: int
    time: str | None


@dataclass
class TrainProgress:
    name: str
    uri: str
    step: int | None  # of the newest checkpoint (or the finished stage)
    max_steps: int | None
    checkpoints: int
    last_checkpoint: Checkpoint | None
    stopped: dict | None  # RUN/checkpoints/_stopped/NAME.json: step, reason, message
    exported: bool
    other_names: list[str] = field(default_factory=list)


@dataclass
class ModelEvaluation:
    label: str
    images: GenerationProgress | None
    labels: int | None  # rows of RUN/eval/labels/LABEL.parquet, when written


@dataclass
class EvaluationProgress:
    planned_models: list[str] | None
    models: list[ModelEvaluation]
    metrics: bool


@dataclass
class RunStatus:
    uri: str
    stages: list[StageStatus]
    generation: GenerationProgress | None
    train: TrainProgress | None
    evaluation: EvaluationProgress | None
    errors: list[ErrorNote]

    def stage(self, name: str) -> StageStatus:
        return next(s for s in self.stages if s.name == name)

    def as_dict(self) -> dict:
        return asdict(self)


def _time(value) -> str | None:
    return value.isoformat() if value is not None else None


def generation_progress(out_uri: str) -> GenerationProgress | None:
    """Progress of a generation folder from its plan, commit markers and manifest; None before the plan."""
    plan_uri = storage.join(out_uri, "_plan.json")
    manifest_uri = storage.join(out_uri, "manifest.json")
    if not storage.exists(plan_uri) and not storage.exists(manifest_uri):
        return None
    plan = storage.read_json(plan_uri) if storage.exists(plan_uri) else {}
    if storage.exists(manifest_uri):
        # Read leniently: a folder of shards written by another tool may carry a shorter manifest.
        m = storage.read_json(manifest_uri)
        shards = m.get("shards", [])
        failed = read_failures(out_uri)
        done = sum(s.get("rows", 0) for s in shards)
        return GenerationProgress(out_uri, m.get("rows", done), m.get("num_shards", len(shards)), len(shards), done,
                                  m.get("images", sum(s.get("images", 0) for s in shards)),
                                  m.get("failures", len(failed)), 0, True, failed[-RECENT:])
    markers = committed_shards(out_uri)
    failed = [f for i in sorted(markers) for f in markers[i]["failures"]]
    return GenerationProgress(
        out_uri, plan.get("rows"), plan.get("num_shards"), len(markers), sum(m["rows"] for m in markers.values()),
        sum(m["images"] for m in markers.values()), len(failed),
        sum(1 for n in storage.listdir(storage.join(out_uri, "_parts")) if n.startswith("shard-")),
        False, failed[-RECENT:],
    )


def _train_name(run: Run, name: str | None) -> tuple[str | None, list[str]]:
    """The training run name to show: the one asked for, else the finished stage's, else the only one."""
    found = [n for n in storage.listdir(run.checkpoints) if not n.startswith((".", "_"))]
    marker = run.marker("train") or {}
    name = name or marker.get("config", {}).get("run_name") or (found[0] if found else None)
    return name, [n for n in found if n != name]


def train_progress(run: Run, name: str | None = None, max_steps: int | None = None) -> TrainProgress | None:
    name, others = _train_name(run, name)
    if name is None:
        return None
    exp = storage.join(run.checkpoints, name)
    states = [(u, storage.read_json(u)) for u in storage.glob(exp, "checkpoint_*/state.json")]
    stop_uri = storage.join(run.checkpoints, "_stopped", f"{name}.json")
    stopped = storage.read_json(stop_uri) if storage.exists(stop_uri) else None
    marker = run.marker("train")
    if not states and stopped is None and marker is None:
        return None
    last = None
    if states:
        uri, state = max(states, key=lambda us: us[1]["step"])
        last = Checkpoint(uri.rsplit("/", 1)[0], int(state["step"]), _time(storage.modified(uri)))
        max_steps = max_steps or state.get("train", {}).get("max_steps")
    if marker:
        max_steps = max_steps or marker.get("config", {}).get("train", {}).get("max_steps")
    steps = [s for s in (last.step if last else None, (marker or {}).get("counts", {}).get("steps")) if s is not None]
    return TrainProgress(
        name, exp, max(steps) if steps else None, max_steps, len(states), last, stopped,
        storage.exists(storage.join(run.finetuned_model, "model_index.json")), others,
    )


def _parquet_rows(uri: str) -> int:
    import pyarrow.parquet as pq

    fs, path = storage.pyarrow_filesystem(uri)
    with fs.open_input_file(path) as f:
        return pq.read_metadata(f).num_rows


def evaluation_progress(run: Run, planned_models: list[str] | None = None) -> EvaluationProgress | None:
    images_root, labels_root = storage.join(run.eval, "images"), storage.join(run.eval, "labels")
    labels = {n[: -len(".parquet")] for n in storage.listdir(labels_root) if n.endswith(".parquet")}
    names = sorted(set(storage.listdir(images_root)) | labels)
    marker = run.marker("evaluate")
    if planned_models is None and marker:
        planned_models = marker.get("config", {}).get("evaluate", {}).get("models")
    if not names and marker is None:
        return None
    models = [ModelEvaluation(n, generation_progress(storage.join(images_root, n)),
                              _parquet_rows(storage.join(labels_root, f"{n}.parquet")) if n in labels else None)
              for n in names]
    return EvaluationProgress(planned_models, models, storage.exists(storage.join(run.eval, "metrics.json")))


def _started(run: Run, stage: str, train_name: str | None) -> bool:
    where = {
        "prompts": run.prompts,
        "generate": storage.join(run.synthetic, "_plan.json"),
        "curate": run.curated,
        "train": storage.join(run.checkpoints, train_name) if train_name else None,
        "evaluate": run.eval,
        "report": run.report,
    }[stage]
    return where is not None and storage.exists(where)


def stage_status(run: Run, stage: str, train_name: str | None = None) -> StageStatus:
    marker, error = run.marker(stage), run.error(stage)
    note = (ErrorNote(f"stage {stage}", error.get("message", ""), error.get("time"), error.get("type"))
            if error else None)
    if marker:
        return StageStatus(stage, "done", marker.get("finished_at"), marker.get("config_hash"),
                           marker.get("counts", {}), note)
    state = "failed" if error else "started" if _started(run, stage, train_name) else "not started"
    return StageStatus(stage, state, error=note)


def _failure_notes(where: str, progress: GenerationProgress | None) -> list[ErrorNote]:
    if progress is None or not progress.failures:
        return []
    last = progress.recent_failures[-1] if progress.recent_failures else {}
    text = f"{progress.failures:,} row(s) failed every retry; last: {last.get('error')} (prompt {last.get('prompt')!r})"
    return [ErrorNote(where, text)]


def run_status(uri: str, *, train_name: str | None = None, max_steps: int | None = None,
               planned_models: list[str] | None = None) -> RunStatus:
    """Everything ``dft status`` shows for the run at ``uri``. ``train_name``, ``max_steps`` and
    ``planned_models`` come from a config when one is given (else from the run's own records).

    Raises RunNotFound when the folder does not exist."""
    run = Run(uri)
    if not storage.exists(run.uri):
        raise RunNotFound(f"no run at {run.uri}: the folder does not exist (check the path or run.uri)")
    train = train_progress(run, train_name, max_steps)
    stages = [stage_status(run, s, train.name if train else train_name) for s in STAGES]
    generation = generation_progress(run.synthetic)
    evaluation = evaluation_progress(run, planned_models)
    errors = [s.error for s in stages if s.error is not None]
    errors += _failure_notes(f"generate: {storage.join(run.synthetic, 'failures.jsonl')}"
                             if generation and generation.finished else "generate: shard commit markers", generation)
    if train and train.stopped:
        stop_uri = storage.join(run.checkpoints, "_stopped", f"{train.name}.json")
        errors.append(ErrorNote(f"train: {stop_uri}", train.stopped.get("message", ""),
                                _time(storage.modified(stop_uri)), train.stopped.get("reason")))
    for m in evaluation.models if evaluation else []:
        errors += _failure_notes(f"evaluate ({m.label}): {m.images.uri if m.images else ''}", m.images)
    errors.sort(key=lambda e: e.time or "", reverse=True)
    log.debug("status of %s: %d stage(s) done", run.uri, sum(s.state == "done" for s in stages))
    return RunStatus(run.uri, stages, generation, train, evaluation, errors)
