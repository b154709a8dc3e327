"""One Ray Train worker = one DeepSpeed rank running the pure step loop: ``TrainWorker``, built from the
driver's ``WorkerSpec``; ``train_loop_per_worker`` is the function Ray Train calls.

Checkpoints hold DeepSpeed's per-rank files under ``deepspeed/`` (Ray merges the ranks' folders),
plus ``state.json`` (step, data position, world size, config) and ``ema.pt`` from rank 0, and each rank's
random-number state under ``rng/``: a run restarted from a checkpoint (a preemption, a lost node, a
re-submitted job) draws the same noise, timesteps and captions as one that never stopped, so with
``train.deterministic_data`` it ends with the same weights."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field

import torch

from dft import storage
from dft.train.components import build_module, trainable_named_parameters
from dft.train.config import TrainConfig
from dft.train.deepspeed_config import build_deepspeed_config, disable_cpu_shm_comm
from dft.train.ema import EMA
from dft.train.logs import Logs, progress_logger
from dft.train.spec import ResizeError, WorkerSpec, needs_same_world, resize_message
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


class InjectedFault(RuntimeError):
    """Raised once by the test switch train.fault_inject_step."""


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
                             self.gen, self.empty_ids, self.device, keep_prompt=self.cfg.prior_preservation > 0)


@dataclass
class Window:
    """The steps since the last report: what the next metrics average over."""

    loss: float = 0.0
    n: int = 0
    samples: int = 0
    data_s: float = 0.0
    t: float = field(default_factory=time.perf_counter)

    def add(self, stats: StepStats) -> None:
        self.loss += stats.loss
        self.n += 1
        self.samples += stats.samples
        self.data_s += stats.data_seconds

    def metrics(self, stats: StepStats) -> dict:
        dt = time.perf_counter() - self.t
        n = max(self.n, 1)
        return {"step": stats.step, "loss": self.loss / n, "lr": stats.lr, "grad_norm": stats.grad_norm,
                "samples_per_s": self.samples / dt if dt > 0 else 0.0, "steps_per_s": n / dt if dt > 0 else 0.0,
                "ingest_share": self.data_s / dt if dt > 0 else 0.0}  # of the window, waiting for batches


class TrainWorker:
    """One rank's training: the engine, EMA, data position, random streams and metric window live on
    ``self``. ``run`` = ``restore`` (the latest checkpoint, if any), ``seed``, then ``run_steps`` calling
    ``step`` after every optimizer step, which reports, saves (``save``) and injects test faults."""

    def __init__(self, spec: WorkerSpec, *, rank: int, world: int):
        import deepspeed

        from dft.models.sources import resolve_model_source

        self.spec, self.cfg, self.rank, self.world = spec, spec.train, rank, world
        cfg = self.cfg
        if not spec.use_gpu:
            torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
        disable_cpu_shm_comm()
        self.folder = resolve_model_source(spec.model_source, cache_dir=spec.cache_dir)
        torch.manual_seed(cfg.seed)  # identical initial adapters on every rank
        module, _counts = build_module(self.folder, cfg, need_vae=not cfg.precompute_latents)
        params = [p for p in module.parameters() if p.requires_grad]
        self.engine, _opt, _, _sched = deepspeed.initialize(
            model=module, model_parameters=params, config=build_deepspeed_config(cfg, world, spec.use_gpu)
        )
        self.ema = EMA(trainable_named_parameters(self.engine.module), cfg.ema_decay) if cfg.ema_decay else None
        # Where the run stands: step, data position (epoch, batch in it), samples; set by restore.
        self.start_step, self.epoch, self.position, self.samples_seen = 0, 0, 0, 0
        self.timing: dict = {}  # restore_s, checkpoint_s: reported with the next metrics
        self.last_saved = 0
        self.preemption_saved = False  # one checkpoint per notice, as Ray's pattern does
        self.window = Window()
        self.gen: torch.Generator | None = None
        self.stream: BatchStream | None = None
        self.logs: Logs | None = None

    def restore(self, ckpt) -> dict | None:
        """Load a checkpoint (Ray's ``Checkpoint``, or None); returns this rank's saved random state when
        it can continue its streams exactly (the same number of workers)."""
        if ckpt is None:
            return None
        cfg, rank, engine = self.cfg, self.rank, self.engine
        saved_rng = None
        t_restore = time.perf_counter()
        with ckpt.as_directory() as d:
            with open(os.path.join(d, STATE)) as f:
                state = json.load(f)
            step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
            self.start_step = self.last_saved = step
            self.samples_seen = state["samples_seen"]
            resized = state["world_size"] != self.world
            if resized and needs_same_world(state["zero_stage"]) and cfg.resize_policy == "fail":
                raise ResizeError(resize_message(state["world_size"], self.world, state["zero_stage"], step))
            module_only = resized and needs_same_world(state["zero_stage"])
            engine.load_checkpoint(os.path.join(d, DS_DIR), tag=state["tag"], load_module_only=module_only)
            if module_only and engine.lr_scheduler is not None:
                engine.lr_scheduler.step(step)
            if resized:
                # Positions were per worker; with another split, start the epoch over.
                self.position = 0
            if self.ema is not None and os.path.exists(os.path.join(d, EMA_FILE)):
                self.ema.load_state_dict(torch.load(os.path.join(d, EMA_FILE), map_location="cpu"))
            rng_file = os.path.join(d, RNG_DIR, f"rank-{rank}.pt")
            if not resized and os.path.exists(rng_file):
                saved_rng = torch.load(rng_file, weights_only=False)
        self.timing["restore_s"] = time.perf_counter() - t_restore
        progress_logger().info("rank %d resumed from step %d (epoch %d, batch %d)", rank, step, self.epoch,
                               self.position)
        return saved_rng

    def seed(self, saved_rng: dict | None, shard) -> None:
        """Fresh randomness per rank and per resume point (noise, timesteps, caption draws), or the saved
        streams continued; then the batch stream over this rank's data shard and the metric sinks."""
        cfg, rank, step = self.cfg, self.rank, self.start_step
        torch.manual_seed(cfg.seed * 7919 + rank * 104729 + step)
        self.gen = torch.Generator().manual_seed(cfg.seed * 31 + rank * 7 + step * 1_000_003)
        if saved_rng is not None:  # the same rank at the same step: continue its streams exactly
            restore_rng_state(saved_rng, self.gen)
        empty_ids = None
        if cfg.empty_caption_prob > 0:
            from dft.train.text import empty_caption_inputs

            empty_ids = empty_caption_inputs(self.folder, cfg)  # per caption column
        self.stream = BatchStream(shard, cfg, self.engine.device, self.epoch, self.position, self.gen, empty_ids)
        self.logs = Logs(cfg, self.spec.tb_uri, self.spec.run_name, rank)
        self.window = Window()

    def step(self, stats: StepStats) -> None:
        """After optimizer step ``stats.step``: EMA, the fault switch, then report/save when due."""
        import ray.train

        cfg, rank, s = self.cfg, self.rank, stats.step
        self.samples_seen += stats.samples
        self.window.add(stats)
        if self.ema is not None:
            self.ema.update(trainable_named_parameters(self.engine.module))
        if cfg.fault_inject_step == s and rank == self.world - 1:
            marker = self.spec.fault_marker_uri
            if marker and not storage.exists(marker):
                storage.write_text(marker, f"fault injected at step {s} on rank {rank}\n")
                raise InjectedFault(f"injected fault at step {s} on rank {rank} (train.fault_inject_step)")
        due_log = s % cfg.log_every == 0 or s == cfg.max_steps
        due_ckpt = s % cfg.checkpoint_every == 0 or s == cfg.max_steps
        preempted = False
        if s % cfg.preemption_check_every == 0 and not due_ckpt:
            # A barrier across ranks: every rank asks at the same steps, then all save or none does.
            info = ray.train.get_preemption_info()
            if info is not None and not self.preemption_saved:
                preempted = self.preemption_saved = True
                if rank == 0:
                    progress_logger().warning("node preemption notice (ranks %s): saving a checkpoint at step %d",
                                              info.preempted_ranks, s)
        if due_log or due_ckpt or preempted:
            m = {**self.window.metrics(stats), "epoch": self.stream.epoch, "samples_seen": self.samples_seen,
                 **self.timing}
            self.logs.write(m, s)
            if due_ckpt or preempted:
                self.save(m, s)
            else:
                ray.train.report(m)
            # After the report (and save): samples/s measures training, not checkpointing.
            self.window = Window()

    def save(self, metrics: dict, step: int) -> None:
        """Write this rank's part of the checkpoint of ``step`` and report it with ``metrics``."""
        import ray.train

        cfg, rank, spec = self.cfg, self.rank, self.spec
        t_save = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="dft-ckpt-") as d:
            tag = f"step-{step:08d}"
            self.engine.save_checkpoint(os.path.join(d, DS_DIR), tag=tag)
            os.makedirs(os.path.join(d, RNG_DIR), exist_ok=True)
            torch.save(rng_state(self.gen), os.path.join(d, RNG_DIR, f"rank-{rank}.pt"))
            if rank == 0:
                state = {"step": step, "epoch": self.stream.epoch, "position": self.stream.position,
                         "samples_seen": self.samples_seen, "world_size": self.world, "zero_stage": cfg.zero_stage,
                         "tag": tag, "model_source": spec.model_source, "structure": spec.structure,
                         "train": cfg.model_dump(mode="json"), "ema": self.ema is not None}
                with open(os.path.join(d, STATE), "w") as f:
                    json.dump(state, f, indent=2)
                if self.ema is not None:
                    torch.save(self.ema.state_dict(), os.path.join(d, EMA_FILE))
                self.logs.sync()
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        # Reported with the next metrics: the save of step N (DeepSpeed files + upload to storage).
        self.timing["checkpoint_s"] = time.perf_counter() - t_save
        self.last_saved = step

    def stop(self, exc: NonFiniteLoss) -> None:
        """Every rank saw the same averaged loss: all report once and end, leaving the last good checkpoint
        as the latest. Ending cleanly (not raising) keeps Ray Train from retrying a deterministic failure."""
        import ray.train

        self.logs.close()
        if self.rank == 0 and self.spec.stop_uri:
            storage.write_json(self.spec.stop_uri, {"step": exc.step, "value": str(exc.value),
                                                    "reason": "nonfinite_loss", "message": str(exc)})
        ray.train.report({"step": exc.step, "nonfinite_loss": str(exc)})

    def run(self) -> None:
        import ray.train

        cfg = self.cfg
        self.seed(self.restore(ray.train.get_checkpoint()), ray.train.get_dataset_shard("train"))
        try:
            last = run_steps(DeepSpeedBackend(self.engine, self.world), iter(self.stream),
                             start_step=self.start_step, max_steps=cfg.max_steps, grad_accum=cfg.grad_accum,
                             samples_per_micro_step=cfg.batch_size * self.world, on_step=self.step)
        except NonFiniteLoss as exc:
            self.stop(exc)
            return
        self.logs.close()
        if last > self.last_saved:
            self.save({"step": last}, last)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry function: ``config`` is ``WorkerSpec.to_dict()``."""
    import ray.train

    ctx = ray.train.get_context()
    TrainWorker(WorkerSpec.from_dict(config), rank=ctx.get_world_rank(), world=ctx.get_world_size()).run()
