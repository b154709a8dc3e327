"""A run is a folder (local or s3://) with a fixed layout; finished stages leave a marker.

    RUN/prompts/      the prompt table (Parquet)          RUN/models/finetuned/  exported pipeline
    RUN/synthetic/    generated shards + manifest         RUN/eval/              eval images, labels, metrics
    RUN/curated/      the curated keep-list or shards     RUN/report/            index.html, report.md, charts
    RUN/checkpoints/  Ray Train checkpoints               RUN/_stages/NAME.json  stage markers
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

from dft import storage
from dft.errors import DftError

log = logging.getLogger(__name__)

LAYOUT = ("prompts", "synthetic", "curated", "checkpoints", "models", "eval", "report")
MAX_ERROR_CHARS = 4000  # of a failed stage's message in RUN/_stages/NAME.error.json


class StageConfigChanged(DftError, RuntimeError):
    """A finished stage's config differs from the current one; re-running needs --force."""


@dataclass
class Run:
    uri: str

    def __post_init__(self):
        self.uri = storage.normalize(self.uri)

    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    @property
    def prompts(self) -> str:
        return self.path("prompts")

    @property
    def synthetic(self) -> str:
        return self.path("synthetic")

    @property
    def curated(self) -> str:
        return self.path("curated")

    @property
    def checkpoints(self) -> str:
        return self.path("checkpoints")

    @property
    def finetuned_model(self) -> str:
        return self.path("models", "finetuned")

    @property
    def eval(self) -> str:
        return self.path("eval")

    @property
    def report(self) -> str:
        return self.path("report")

    @property
    def local_logs(self) -> str:
        """A local folder for the console's logs: RUN/logs of a local run; for an s3:// run, one under
        the dft cache (DFT_CACHE or ~/.cache/dft) named after the run's URI (log files are appended to)."""
        if not storage.is_remote(self.uri):
            return storage.normalize(self.path("logs"))
        import os
        import re

        cache = os.environ.get("DFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dft")
        return os.path.join(cache, "logs", re.sub(r"[^A-Za-z0-9_.-]+", "-", self.uri).strip("-"))

    def marker_uri(self, stage: str) -> str:
        return self.path("_stages", f"{stage}.json")

    def marker(self, stage: str) -> dict[str, Any] | None:
        uri = self.marker_uri(stage)
        return storage.read_json(uri) if storage.exists(uri) else None

    def write_marker(self, stage: str, config_hash: str, counts: dict[str, Any], config: dict | None = None) -> None:
        storage.write_json(
            self.marker_uri(stage),
            {
                "stage": stage,
                "config_hash": config_hash,
                "counts": counts,
                "config": config or {},
                "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            },
        )

    def clear_marker(self, stage: str) -> None:
        storage.remove(self.marker_uri(stage))

    def error_uri(self, stage: str) -> str:
        return self.path("_stages", f"{stage}.error.json")

    def error(self, stage: str) -> dict[str, Any] | None:
        """The record of the stage's last failed attempt (``run_stage`` removes it on success)."""
        uri = self.error_uri(stage)
        return storage.read_json(uri) if storage.exists(uri) else None

    def write_error(self, stage: str, exc: BaseException) -> None:
        """Record a failed attempt so ``dft status`` can show it; never raises (the stage's own error wins)."""
        message = str(exc) or repr(exc)
        record = {
            "stage": stage,
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
            "message": message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS] + " [...]",
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        }
        try:
            storage.write_json(self.error_uri(stage), record)
        except Exception as write_exc:  # noqa: BLE001 - e.g. the store is what failed
            log.warning("could not record the failure of stage %s in %s: %s", stage, self.error_uri(stage), write_exc)


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


Status = Literal["run", "reused", "skipped"]


@dataclass
class StageResult:
    """What one stage did: ``run`` (its work ran now), ``reused`` (an earlier run's marker matched: no
    work) or ``skipped`` (disabled, or not built); its counts (the marker's) and the seconds it took."""

    stage: str
    status: Status
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""

    @property
    def skipped(self) -> bool:
        """No work ran now (reused or skipped)."""
        return self.status != "run"


def stage_config(cfg, sections: Iterable[str], inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a stage's marker records of the config it ran with: the dump of each section it reads,
    plus ``inputs`` (other things its outputs depend on, e.g. the run name or a hash of an input file)."""
    record = {name: getattr(cfg, name).model_dump(mode="json") for name in sections}
    clash = set(record) & set(inputs or {})
    if clash:
        raise ValueError(f"stage inputs {sorted(clash)} have the names of config sections")
    return record | dict(inputs or {})


def config_hash(record: dict[str, Any]) -> str:
    """The marker's hash of a config record (for sections only, the same as ``cfg.section_hash``)."""
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_stage(
    run: Run,
    stage: str,
    cfg,
    sections: Iterable[str],
    work: Callable[[], dict[str, Any]],
    force: bool = False,
    inputs: dict[str, Any] | None = None,
) -> StageResult:
    """Run ``work`` unless the stage already finished with the same config.

    The marker records ``stage_config(cfg, sections, inputs)`` and its hash, the same shape for every
    stage. A finished stage with the same hash is reused (no work); with a different one it raises
    StageConfigChanged listing what changed, unless ``force`` (then it re-runs). ``work`` returns the
    counts recorded in the marker, which is written last. When ``work`` raises, the error (type,
    message, time) goes to ``RUN/_stages/NAME.error.json``, which a later success removes."""
    config = stage_config(cfg, sections, inputs)
    digest = config_hash(config)
    done = run.marker(stage)
    if done and not force:
        if done.get("config_hash") == digest:
            log.info("stage %s already finished (config %s): nothing to do", stage, digest)
            return StageResult(stage, "reused", done.get("counts", {}))
        changes = _diff(done.get("config", {}), config) or ["(config hash differs)"]
        raise StageConfigChanged(
            f"stage {stage!r} finished earlier in {run.uri} with another config; changed: "
            + "; ".join(changes)
            + ". Re-run with --force to redo it (its outputs are replaced)."
        )
    if done and force:
        run.clear_marker(stage)
    t0 = time.perf_counter()
    try:
        counts = work()
    except BaseException as exc:  # KeyboardInterrupt too: a stopped job is worth a line in `dft status`
        run.write_error(stage, exc)
        raise
    run.write_marker(stage, digest, counts, config)
    storage.remove(run.error_uri(stage))
    return StageResult(stage, "run", counts, time.perf_counter() - t0)
