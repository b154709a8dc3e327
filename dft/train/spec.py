"""What the driver hands each Ray Train worker (``WorkerSpec``), and the resume rules both sides check.

The spec travels through ``train_loop_config`` as plain JSON types (``to_dict``/``from_dict``) and is
typed again on the worker: the training config is validated once more there, so a worker never reads
an unknown or misspelt key. No Ray, DeepSpeed or torch here: the driver imports this before it claims
any cluster resource."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from dft.errors import DftError
from dft.train.config import TrainConfig


class ResizeError(DftError, RuntimeError):
    """A ZeRO checkpoint cannot resume on another number of workers under the configured policy."""


def needs_same_world(zero_stage: int) -> bool:
    return zero_stage >= 1


def resize_message(saved_world: int, world: int, zero_stage: int, step: int) -> str:
    return (
        f"the latest checkpoint (step {step}) was written by {saved_world} workers with ZeRO stage {zero_stage}, "
        f"and this run has {world}: ZeRO's optimizer state is partitioned per worker and DeepSpeed cannot "
        f"re-partition it. Set train.num_workers={saved_world} to resume exactly, or "
        "train.resize_policy=reset_optimizer to keep the weights and step and restart the optimizer moments, "
        "or --force to start over."
    )


@dataclass(frozen=True)
class WorkerSpec:
    """One training worker's inputs. ``structure``: the parameter layout a checkpoint must match
    (``job.structure``), recorded in every checkpoint's state.json."""

    train: TrainConfig
    # Workers resolve the source themselves (s3:// copies land in each node's cache).
    model_source: str
    use_gpu: bool
    structure: dict = field(default_factory=dict)
    cache_dir: str | None = None
    run_name: str = "dft"
    tb_uri: str | None = None  # TensorBoard folder (rank 0)
    # Where rank 0 records a deliberate stop (non-finite loss): Ray keeps only checkpointed metrics.
    stop_uri: str | None = None
    # train.fault_inject_step's once-only marker: the fault fires when it does not exist yet.
    fault_marker_uri: str | None = None

    def to_dict(self) -> dict:
        """JSON types only, for ``train_loop_config``."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**d, "train": self.train.model_dump(mode="json"), "structure": dict(self.structure)}

    @classmethod
    def from_dict(cls, config: dict) -> WorkerSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown worker spec keys {unknown}: the driver and the workers run different dft versions")
        return cls(**{**config, "train": TrainConfig.model_validate(config["train"])})

