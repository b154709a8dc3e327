"""Rank 0's metric sinks of a training worker: the progress line, TensorBoard in the run folder, MLflow
when configured. No Ray here."""

from __future__ import annotations

import logging
import sys
import tempfile
import time

from dft import storage
from dft.train.config import TrainConfig


def progress_logger() -> logging.Logger:
    lg = logging.getLogger("dft.train.progress")
    if not lg.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        lg.addHandler(h)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    return lg


class Logs:
    """Rank 0's metric sinks: the progress line, TensorBoard in the run folder, MLflow when configured."""

    def __init__(self, cfg: TrainConfig, tb_uri: str | None, run_name: str, rank: int):
        self.cfg, self.rank, self.tb_uri = cfg, rank, tb_uri
        self.log = progress_logger()
        self.writer = self.mlflow = None
        self.t_start = time.perf_counter()
        if rank != 0:
            return
        if tb_uri:
            from torch.utils.tensorboard import SummaryWriter

            self.tb_local = tb_uri if not storage.is_remote(tb_uri) else tempfile.mkdtemp(prefix="dft-tb-")
            self.writer = SummaryWriter(self.tb_local)
        if cfg.mlflow_tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
            mlflow.set_experiment(run_name)
            self.mlflow = mlflow.start_run(run_name=run_name)
            mlflow.log_params({k: v for k, v in cfg.model_dump().items() if not isinstance(v, dict)})

    def write(self, metrics: dict, step: int) -> None:
        if self.rank != 0:
            return
        c = self.cfg
        eta = (c.max_steps - step) / max(metrics["steps_per_s"], 1e-9)
        gn = metrics.get("grad_norm")
        self.log.info(
            "train step %d/%d (%.0f%%) | loss %.4f | lr %.2e | grad %s | %.1f samples/s | epoch %d | eta %s",
            step, c.max_steps, 100 * step / c.max_steps, metrics["loss"], metrics["lr"],
            "-" if gn is None else f"{gn:.3f}", metrics["samples_per_s"], metrics["epoch"],
            time.strftime("%H:%M:%S", time.gmtime(eta)),
        )
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.flush()
        if self.mlflow is not None:
            import mlflow

            mlflow.log_metrics(scalars, step=step)

    def sync(self) -> None:
        """Publish TensorBoard files to an s3:// run folder (local run folders are written in place)."""
        if self.writer is not None and storage.is_remote(self.tb_uri):
            self.writer.flush()
            storage.upload_folder(self.tb_local, self.tb_uri)

    def close(self) -> None:
        self.sync()
        if self.writer is not None:
            self.writer.close()
        if self.mlflow is not None:
            import mlflow

            mlflow.end_run()
