"""``dft train``: fine-tune, then export the pipeline; a stage marker makes a finished run a no-op."""

from __future__ import annotations

import logging
import tempfile
import threading

from dft import progress, storage
from dft.runs import Run, StageResult, run_stage

log = logging.getLogger(__name__)

HASHED_SECTIONS = ("model", "train")


def _local_checkpoint(uri: str, tmp: str) -> str:
    if storage.is_remote(uri):
        storage.download_folder(uri, tmp)
        return tmp
    return storage.normalize(uri)


def _watch_steps(cfg, bar, stop: threading.Event, every_s: float = 5.0) -> None:
    """Move the steps bar to the newest checkpoint's step (the driver sees no step before one lands)."""
    from dft.train.job import latest_state

    while not stop.wait(every_s):
        try:
            state = latest_state(cfg)
        except Exception as exc:  # noqa: BLE001 - a checkpoint being written: ask again
            log.debug("steps watch: %s", exc)
            continue
        if state:
            bar.update(state["step"])


def train_stage(cfg, force: bool = False, *, worker_env: dict | None = None) -> StageResult:
    """Train (resuming from the latest checkpoint) and export to RUN/models/finetuned; returns counts.

    ``worker_env``: extra environment variables for the training workers (e.g. a test's dummy S3
    credentials); the usual ones (offline hub, S3 endpoint, caches) are forwarded already."""
    from dft.train.export import export_pipeline
    from dft.train.job import experiment_uri, fit

    run = Run(cfg.run.uri)

    def work() -> dict:
        if force and storage.exists(experiment_uri(cfg)):
            log.info("--force: removing the checkpoints under %s", experiment_uri(cfg))
            storage.remove(experiment_uri(cfg), recursive=True)
        with progress.task("train", total=cfg.train.max_steps, unit="steps") as bar:
            stop = threading.Event()
            watch = threading.Thread(target=_watch_steps, args=(cfg, bar, stop), daemon=True, name="dft-steps")
            if progress.active():
                watch.start()
            try:
                outcome = fit(cfg, worker_env=worker_env)
            finally:
                stop.set()
                if watch.is_alive():
                    watch.join(timeout=10)
            bar.update(int(outcome.metrics.get("step", cfg.train.max_steps)))
        with tempfile.TemporaryDirectory(prefix="dft-ckpt-") as tmp:
            local = _local_checkpoint(outcome.checkpoint_dir_uri, tmp)
            export_pipeline(local, run.finetuned_model, model_source=cfg.model.source, train_cfg=cfg.train,
                            cache_dir=cfg.model.cache_dir, extra={"checkpoint": outcome.checkpoint_dir_uri})
        m = outcome.metrics
        return {
            "steps": int(m.get("step", cfg.train.max_steps)),
            "final_loss": m.get("loss"),
            "samples_seen": m.get("samples_seen"),
            "samples_per_s": m.get("samples_per_s"),
            "rows": outcome.data.get("rows"),
            "shards": outcome.data.get("shards"),
            "checkpoint": outcome.checkpoint_dir_uri,
            "model": run.finetuned_model,
        }

    # The run name is an input: it names the checkpoint folder the stage resumes from.
    return run_stage(run, "train", cfg, HASHED_SECTIONS, work, force=force, inputs={"run_name": cfg.run.name})


def run_train(cfg, force: bool = False, *, worker_env: dict | None = None) -> dict:
    """The stage's counts: steps, final_loss, samples_seen, samples_per_s, rows, shards, checkpoint, model."""
    return train_stage(cfg, force, worker_env=worker_env).counts
