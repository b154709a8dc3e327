"""The Ray Train job on the driver: validate, build the data, run TorchTrainer, return the result.

Resumption: Ray Train V2 restores the latest checkpoint of ``RunConfig(name, storage_path)`` when the
same run is fitted again (a re-submitted job) or a worker group restarts (``FailureConfig``); the
loop picks it up with ``ray.train.get_checkpoint()``."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass

from dft import storage
from dft.cluster import worker_env_vars
from dft.errors import DftError, InputError
from dft.runs import Run
from dft.train.spec import WorkerSpec, needs_same_world, resize_message

log = logging.getLogger(__name__)


class TrainingFailed(DftError, RuntimeError):
    """The worker group failed more often than train.max_failures allows (a lost node, a crash)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


@dataclass
class TrainOutcome:
    checkpoint_dir_uri: str
    metrics: dict
    data: dict
    use_gpu: bool
    resolution: int


def structure(cfg) -> dict:
    """What must not change between a checkpoint and a resumed run (the parameter layout)."""
    t = cfg.train
    return {"model_source": cfg.model.source, "trainable": t.trainable, "lora": t.lora.model_dump(mode="json"),
            "train_text_encoder": t.train_text_encoder, "precompute_latents": t.precompute_latents}


def resolve_use_gpu(setting) -> bool:
    if setting == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def experiment_uri(cfg) -> str:
    return storage.join(Run(cfg.run.uri).checkpoints, cfg.run.name)


def stop_uri(cfg) -> str:
    return storage.join(Run(cfg.run.uri).checkpoints, "_stopped", f"{cfg.run.name}.json")


def latest_state(cfg) -> dict | None:
    """state.json of the newest checkpoint in storage, if any (read before claiming resources)."""
    found = storage.glob(experiment_uri(cfg), "checkpoint_*/state.json")
    states = [storage.read_json(u) for u in found]
    return max(states, key=lambda s: s["step"]) if states else None


def check_resume(cfg, state: dict | None) -> None:
    if state is None:
        return
    if state.get("structure") != structure(cfg):
        raise InputError(
            f"the checkpoints under {experiment_uri(cfg)} were made for another model layout "
            f"({json.dumps(state.get('structure'))}); this config has {json.dumps(structure(cfg))}. "
            "Use --force to start over (the old checkpoints are removed), or another run.name."
        )
    if (state["world_size"] != cfg.train.num_workers and needs_same_world(state["zero_stage"])
            and cfg.train.resize_policy == "fail"):
        raise InputError(resize_message(state["world_size"], cfg.train.num_workers, state["zero_stage"], state["step"]))
    if state["zero_stage"] != cfg.train.zero_stage:
        raise InputError(
            f"the latest checkpoint (step {state['step']}) used ZeRO stage {state['zero_stage']}, this config "
            f"{cfg.train.zero_stage}: set train.zero_stage={state['zero_stage']} to resume, or --force to start over"
        )


def _s3_storage(env: dict | None):
    """Ray Train's storage filesystem for s3:// runs: s3fs (the same client dft.storage uses) wrapped
    for pyarrow. pyarrow's native S3 client completes an empty object (Ray's storage marker) as a
    zero-part multipart upload, which S3-compatible servers such as moto reject.

    Ray pickles this filesystem into its controller and workers. With explicit keys (``env``: a test's
    local S3 server) they travel with it; otherwise every process uses its own credential chain."""
    import pyarrow.fs as pafs
    import s3fs

    kwargs: dict = {}
    endpoint = (env or {}).get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["client_kwargs"] = {"endpoint_url": endpoint}
    if env and env.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(key=env["AWS_ACCESS_KEY_ID"], secret=env.get("AWS_SECRET_ACCESS_KEY", ""))
    return pafs.PyFileSystem(pafs.FSSpecHandler(s3fs.S3FileSystem(**kwargs)))


def ingest_config(t):
    """Ray Train's ingest options: Ray Data's defaults, in a fixed block order with deterministic_data."""
    from ray.train import DataConfig

    if not t.deterministic_data:
        return DataConfig()
    opts = DataConfig.default_ingest_options()
    opts.preserve_order = True
    return DataConfig(execution_options=opts)


def run_config(cfg, worker_env: dict | None = None):
    import ray.train

    t = cfg.train
    uri = Run(cfg.run.uri).checkpoints
    env = worker_env_vars(worker_env)
    kwargs = {}
    if storage.is_s3(uri):
        kwargs.update(storage_path=uri.split("://", 1)[1], storage_filesystem=_s3_storage(worker_env))
    else:
        storage.makedirs(uri)
        kwargs.update(storage_path=storage.normalize(uri))
    return ray.train.RunConfig(
        name=cfg.run.name,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.keep_checkpoints),
        failure_config=ray.train.FailureConfig(max_failures=t.max_failures,
                                               max_preemption_failures=t.max_preemption_failures),
        worker_runtime_env={"env_vars": env} if env else None,
        **kwargs,
    )


def fit(cfg, *, worker_env: dict | None = None) -> TrainOutcome:
    """Train to ``train.max_steps`` (resuming from the latest checkpoint when there is one)."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig

    from dft.cluster import connect, wait_for_resources
    from dft.models.sources import resolve_model_source
    from dft.train.components import model_info
    from dft.train.controller_watch import DftTorchTrainer
    from dft.train.data import build_dataset
    from dft.train.deepspeed_config import resolve_precision
    from dft.train.loop import train_loop_per_worker
    from dft.train.step import NonFiniteLoss

    t = cfg.train
    if t.mlflow_tracking_uri and importlib.util.find_spec("mlflow") is None:
        raise InputError("train.mlflow_tracking_uri is set but mlflow is not installed: `pip install mlflow`")
    check_resume(cfg, latest_state(cfg))
    connect(cfg.ray)
    use_gpu = resolve_use_gpu(t.use_gpu)
    resolve_precision(t.precision, use_gpu)
    folder = resolve_model_source(cfg.model.source, cache_dir=cfg.model.cache_dir, revision=cfg.model.revision)
    info = model_info(folder)
    resolution = t.resolution or info.resolution
    run = Run(cfg.run.uri)
    resources = {"CPU": t.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    wait_for_resources([resources] * t.num_workers, f"train: {t.num_workers} Ray Train worker(s)")
    ds, data_info = build_dataset(t, run, source=cfg.model.source, cache_dir=cfg.model.cache_dir,
                                  resolution=resolution, use_gpu=use_gpu)
    spec = WorkerSpec(
        train=t, model_source=cfg.model.source, cache_dir=cfg.model.cache_dir, use_gpu=use_gpu,
        structure=structure(cfg), run_name=cfg.run.name, tb_uri=run.path("logs", "train"), stop_uri=stop_uri(cfg),
        fault_marker_uri=run.path("checkpoints", "_faults", f"step-{t.fault_inject_step}") if t.fault_inject_step else None,
    )
    trainer = DftTorchTrainer(
        train_loop_per_worker,
        train_loop_config=spec.to_dict(),
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=run_config(cfg, worker_env),
        datasets={"train": ds},
        dataset_config=ingest_config(t),
    )
    log.info("training %s on %d worker(s) (%s), ZeRO %d, %d steps of %d x %d x %d samples", cfg.model.source,
             t.num_workers, "GPU" if use_gpu else "CPU", t.zero_stage, t.max_steps, t.batch_size, t.grad_accum,
             t.num_workers)
    storage.remove(stop_uri(cfg))
    import ray.train

    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        state = latest_state(cfg)
        kept = f"the checkpoint of step {state['step']} is kept" if state else "no checkpoint was written yet"
        cause = exc.__cause__ or exc
        raise TrainingFailed(
            f"training failed and train.max_failures={t.max_failures} allows no further restart: "
            f"{type(cause).__name__}: {_first_line(cause)}. {kept.capitalize()} under {experiment_uri(cfg)}; "
            "re-submit the same job to resume from it, or allow restarts with train.max_failures."
        ) from exc
    metrics = dict(result.metrics or {})
    if storage.exists(stop_uri(cfg)):
        stop = storage.read_json(stop_uri(cfg))
        kept = result.checkpoint.path if result.checkpoint else "none yet"
        raise NonFiniteLoss(stop["step"], float(stop.get("value", "nan")), checkpoint=kept)
    if result.checkpoint is None:
        raise RuntimeError(f"training ended without a checkpoint under {experiment_uri(cfg)}")
    ckpt_uri = result.checkpoint.path
    if storage.is_s3(Run(cfg.run.uri).checkpoints) and not ckpt_uri.startswith("s3://"):
        ckpt_uri = "s3://" + ckpt_uri.lstrip("/")
    return TrainOutcome(ckpt_uri, metrics, data_info, use_gpu, resolution)
