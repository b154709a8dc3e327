"""``train_loop_per_worker``: one Ray Train worker = one DeepSpeed rank running the pure step loop.

Checkpoints hold DeepSpeed's per-rank files under ``deepspeed/`` (Ray merges the ranks' folders),
plus ``state.json`` (step, data position, world size, config) and ``ema.pt`` from rank 0, and each rank's
random-number state under ``rng/``: a run restarted from a checkpoint (a preemption, a lost node, a
re-submitted job) draws the same noise, timesteps and captions as one that never stopped, so with
``train.deterministic_data`` it ends with the same weights."""

from __future__ import annotations

from dft.errors import DftError
import json
import logging
import os
import sys
import tempfile
import time

import torch

from dft import storage
from dft.train.components import build_module, trainable_named_parameters
from dft.train.config import TrainConfig
from dft.train.deepspeed_config import build_deepspeed_config, disable_cpu_shm_comm
from dft.train.ema import EMA
from dft.train.step import NonFiniteLoss, StepStats, check_finite, prepare_batch, run_steps

STATE = "state.json"
EMA_FILE = "ema.pt"
DS_DIR = "deepspeed"
RNG_DIR = "rng"


def rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "gen": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["gen"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class ResizeError(DftError, RuntimeError):
    """A ZeRO checkpoint cannot resume on another number of workers under the configured policy."""


class InjectedFault(RuntimeError):
    """Raised once by the test switch train.fault_inject_step."""


def _progress_logger() -> logging.Logger:
    lg = logging.getLogger("dft.train.progress")
    if not lg.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        lg.addHandler(h)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    return lg


def resize_message(saved_world: int, world: int, zero_stage: int, step: int) -> str:
    return (
        f"the latest checkpoint (step {step}) was written by {saved_world} workers with ZeRO stage {zero_stage}, "
        f"and this run has {world}: ZeRO's optimizer state is partitioned per worker and DeepSpeed cannot "
        f"re-partition it. Set train.num_workers={saved_world} to resume exactly, or "
        "train.resize_policy=reset_optimizer to keep the weights and step and restart the optimizer moments, "
        "or --force to start over."
    )


def needs_same_world(zero_stage: int) -> bool:
    return zero_stage >= 1


class DeepSpeedBackend:
    """The StepBackend of run_steps over a DeepSpeed engine. The loss is averaged over ranks before
    backward, so every rank sees the same value and a non-finite loss stops all of them together."""

    def __init__(self, engine, world: int):
        self.engine, self.world = engine, world

    def forward_backward(self, batch: dict, step: int) -> float:
        loss = self.engine(batch)
        mean = loss.detach().float().reshape(1).clone()
        if self.world > 1:
            torch.distributed.all_reduce(mean)
            mean /= self.world
        value = float(mean)
        check_finite(value, step)
        self.engine.backward(loss)
        self.engine.step()  # applies the update only at the gradient-accumulation boundary
        return value

    def optimizer_step(self) -> float | None:
        gn = self.engine.get_global_grad_norm()
        return None if gn is None else float(gn)

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])


class BatchStream:
    """Endless batches over epochs of this worker's dataset shard; knows its position for checkpoints.

    On resume it skips the batches already consumed in the current epoch (their count, not their
    identity: the local shuffle is not replayed exactly)."""

    def __init__(self, shard, cfg: TrainConfig, device, epoch: int, position: int, generator: torch.Generator,
                 empty_ids: torch.Tensor | None = None):
        self.shard, self.cfg, self.device, self.gen = shard, cfg, device, generator
        self.empty_ids = empty_ids
        self.epoch, self.position = epoch, position

    def __iter__(self):
        return self._gen()

    def _gen(self):
        cfg = self.cfg
        skip = self.position
        while True:
            yielded = 0
            kwargs = {}
            if cfg.shuffle_buffer:
                kwargs.update(local_shuffle_buffer_size=cfg.shuffle_buffer,
                              local_shuffle_seed=cfg.seed * 1_000_003 + self.epoch)
            for raw in self.shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=True, **kwargs):
                yielded += 1
                if skip:
                    skip -= 1
                    continue
                self.position += 1
                yield self._prepare(raw)
            if yielded == 0:
                raise RuntimeError(
                    f"this worker's data shard gave no full batch of {cfg.batch_size} in epoch {self.epoch}: "
                    "lower train.batch_size or train.num_workers, or add data"
                )
            self.epoch, self.position, skip = self.epoch + 1, 0, 0

    def _prepare(self, raw: dict) -> dict:
        return prepare_batch(raw, self.cfg.caption_policy, self.cfg.attribute_dropout, self.cfg.empty_caption_prob,
                             self.gen, self.empty_ids, self.device)


class Logs:
    """Rank 0's metric sinks: the progress line, TensorBoard in the run folder, MLflow when configured."""

    def __init__(self, cfg: TrainConfig, tb_uri: str | None, run_name: str, rank: int):
        self.cfg, self.rank, self.tb_uri = cfg, rank, tb_uri
        self.log = _progress_logger()
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


def train_loop_per_worker(config: dict) -> None:
    import deepspeed
    import ray.train

    from dft.models.sources import resolve_model_source

    cfg = TrainConfig.model_validate(config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    use_gpu = bool(config["use_gpu"])
    if not use_gpu:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    disable_cpu_shm_comm()

    folder = resolve_model_source(config["model_source"], cache_dir=config.get("cache_dir"))
    torch.manual_seed(cfg.seed)  # identical initial adapters on every rank
    module, _counts = build_module(folder, cfg, need_vae=not cfg.precompute_latents)
    params = [p for p in module.parameters() if p.requires_grad]
    engine, _opt, _, _sched = deepspeed.initialize(
        model=module, model_parameters=params, config=build_deepspeed_config(cfg, world, use_gpu)
    )
    ema = EMA(trainable_named_parameters(engine.module), cfg.ema_decay) if cfg.ema_decay else None

    step, epoch, position, samples_seen = 0, 0, 0, 0
    saved_rng = None
    timing: dict = {}
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        t_restore = time.perf_counter()
        with ckpt.as_directory() as d:
            with open(os.path.join(d, STATE)) as f:
                state = json.load(f)
            step, epoch, position = state["step"], state["epoch"], state["position"]
            samples_seen = state["samples_seen"]
            resized = state["world_size"] != world
            if resized and needs_same_world(state["zero_stage"]) and cfg.resize_policy == "fail":
                raise ResizeError(resize_message(state["world_size"], world, state["zero_stage"], step))
            module_only = resized and needs_same_world(state["zero_stage"])
            engine.load_checkpoint(os.path.join(d, DS_DIR), tag=state["tag"], load_module_only=module_only)
            if module_only and engine.lr_scheduler is not None:
                engine.lr_scheduler.step(step)
            if resized:
                # Positions were per worker; with another split, start the epoch over.
                position = 0
            if ema is not None and os.path.exists(os.path.join(d, EMA_FILE)):
                ema.load_state_dict(torch.load(os.path.join(d, EMA_FILE), map_location="cpu"))
            rng_file = os.path.join(d, RNG_DIR, f"rank-{rank}.pt")
            if not resized and os.path.exists(rng_file):
                saved_rng = torch.load(rng_file, weights_only=False)
        timing["restore_s"] = time.perf_counter() - t_restore
        _progress_logger().info("rank %d resumed from step %d (epoch %d, batch %d)", rank, step, epoch, position)

    # Fresh randomness per rank and per resume point: noise, timesteps and caption draws.
    torch.manual_seed(cfg.seed * 7919 + rank * 104729 + step)
    gen = torch.Generator().manual_seed(cfg.seed * 31 + rank * 7 + step * 1_000_003)
    if saved_rng is not None:  # the same rank at the same step: continue its streams exactly
        restore_rng_state(saved_rng, gen)
    empty_ids = None
    if cfg.empty_caption_prob > 0:
        from dft.train.text import empty_caption_inputs

        empty_ids = empty_caption_inputs(folder, cfg)  # per caption column
    stream = BatchStream(ray.train.get_dataset_shard("train"), cfg, engine.device, epoch, position, gen, empty_ids)
    batches = iter(stream)
    logs = Logs(cfg, config.get("tb_uri"), config.get("run_name", "dft"), rank)
    window = {"loss": 0.0, "n": 0, "samples": 0, "data_s": 0.0, "t": time.perf_counter()}
    last_saved = {"step": step}
    preemption = {"saved": False}  # one checkpoint per notice, as Ray's pattern does
    per_micro = cfg.batch_size * world

    def metrics_for(stats: StepStats) -> dict:
        dt = time.perf_counter() - window["t"]
        n = max(window["n"], 1)
        m = {"step": stats.step, "loss": window["loss"] / n, "lr": stats.lr, "grad_norm": stats.grad_norm,
             "samples_per_s": window["samples"] / dt if dt > 0 else 0.0, "steps_per_s": n / dt if dt > 0 else 0.0,
             "ingest_share": window["data_s"] / dt if dt > 0 else 0.0,  # of the window, waiting for batches
             "epoch": stream.epoch, "samples_seen": samples_seen_now[0], **timing}
        return m

    samples_seen_now = [samples_seen]

    def save(metrics: dict, step_: int) -> None:
        t_save = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="dft-ckpt-") as d:
            tag = f"step-{step_:08d}"
            engine.save_checkpoint(os.path.join(d, DS_DIR), tag=tag)
            os.makedirs(os.path.join(d, RNG_DIR), exist_ok=True)
            torch.save(rng_state(gen), os.path.join(d, RNG_DIR, f"rank-{rank}.pt"))
            if rank == 0:
                state = {"step": step_, "epoch": stream.epoch, "position": stream.position,
                         "samples_seen": samples_seen_now[0], "world_size": world, "zero_stage": cfg.zero_stage,
                         "tag": tag, "model_source": config["model_source"], "structure": config["structure"],
                         "train": cfg.model_dump(mode="json"), "ema": ema is not None}
                with open(os.path.join(d, STATE), "w") as f:
                    json.dump(state, f, indent=2)
                if ema is not None:
                    torch.save(ema.state_dict(), os.path.join(d, EMA_FILE))
                logs.sync()
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        # Reported with the next metrics: the save of step N (DeepSpeed files + upload to storage).
        timing["checkpoint_s"] = time.perf_counter() - t_save
        last_saved["step"] = step_

    def on_step(stats: StepStats) -> None:
        s = stats.step
        samples_seen_now[0] += stats.samples
        window["loss"] += stats.loss
        window["n"] += 1
        window["samples"] += stats.samples
        window["data_s"] += stats.data_seconds
        if ema is not None:
            ema.update(trainable_named_parameters(engine.module))
        if cfg.fault_inject_step == s and rank == world - 1:
            marker = config.get("fault_marker_uri")
            if marker and not storage.exists(marker):
                storage.write_text(marker, f"fault injected at step {s} on rank {rank}\n")
                raise InjectedFault(f"injected fault at step {s} on rank {rank} (train.fault_inject_step)")
        due_log = s % cfg.log_every == 0 or s == cfg.max_steps
        due_ckpt = s % cfg.checkpoint_every == 0 or s == cfg.max_steps
        preempted = False
        if s % cfg.preemption_check_every == 0 and not due_ckpt:
            # A barrier across ranks: every rank asks at the same steps, then all save or none does.
            info = ray.train.get_preemption_info()
            if info is not None and not preemption["saved"]:
                preempted = preemption["saved"] = True
                if rank == 0:
                    _progress_logger().warning("node preemption notice (ranks %s): saving a checkpoint at step %d",
                                               info.preempted_ranks, s)
        if due_log or due_ckpt or preempted:
            m = metrics_for(stats)
            logs.write(m, s)
            if due_ckpt or preempted:
                save(m, s)
            else:
                ray.train.report(m)
            # After the report (and save): samples/s measures training, not checkpointing.
            window.update(loss=0.0, n=0, samples=0, data_s=0.0, t=time.perf_counter())

    try:
        last = run_steps(DeepSpeedBackend(engine, world), batches, start_step=step, max_steps=cfg.max_steps,
                         grad_accum=cfg.grad_accum, samples_per_micro_step=per_micro, on_step=on_step)
    except NonFiniteLoss as exc:
        # Every rank saw the same averaged loss: all report once and end, leaving the last good checkpoint
        # as the latest. Ending cleanly (not raising) keeps Ray Train from retrying a deterministic failure.
        logs.close()
        if rank == 0 and config.get("stop_uri"):
            storage.write_json(config["stop_uri"], {"step": exc.step, "value": str(exc.value), "reason": "nonfinite_loss",
                                                 "message": str(exc)})
        ray.train.report({"step": exc.step, "nonfinite_loss": str(exc)})
        return
    logs.close()
    if last > last_saved["step"]:
        save({"step": last}, last)
