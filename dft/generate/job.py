"""The Ray Data adapter of generation: plan on the driver, stream the shards through an actor pool of
``ImageGenerator``s, commit shards as they complete, write the manifest last.

    shard specs ──► ImageGenerator actors (map_batches, ActorPoolStrategy): one call per shard
                      └─ read the shard's rows, generate them in batches, write them as parts of the shard
    driver: counts rows per shard ──► a shard complete ──► committer actor: tar + parquet + marker

Resumption uses our own commit markers, not ``ray.data.checkpoint``: a shard is the unit a reader
sees, so "the shard's marker exists" is exactly "its files are whole", whatever the storage, and a
restarted job plans only the shards without a marker (their leftover parts are discarded).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any

import numpy as np
import pyarrow as pa

from dft import storage
from dft.errors import DftError, InputError
from dft.generate.config import GenerateConfig
from dft.generate.core import ERROR_COLUMN, ImageGenerator
from dft.generate.plan import Plan, PromptSource, check_or_write_plan, make_plan, prompt_source, stage_table
from dft.generate.shards import (
    PART_SCHEMA,
    POS,
    commit_shard,
    committed_shards,
    parts_uri,
    write_part,
)
from dft.progress import task as progress_task

log = logging.getLogger(__name__)

FAULT_ENV = "DFT_FAULT_INJECT"
def _runtime_env(worker_env: dict[str, str] | None) -> dict | None:
    """What workers need to see the driver's world (dft.cluster.FORWARDED_ENV); credentials only
    when passed explicitly through ``worker_env``."""
    from dft.cluster import worker_env_vars

    env = worker_env_vars(worker_env)
    return {"env_vars": env} if env else None


class GenerationFailed(DftError, RuntimeError):
    """More rows failed than ``generate.max_failures_fraction`` allows (the outputs are still written)."""


def fault_plan(cfg: GenerateConfig) -> dict[str, Any]:
    """Test switches, from config and ``DFT_FAULT_INJECT`` (``crash_after=N;fail_seeds=S1,S2``), read on the
    driver and handed to the actors explicitly (a local Ray's workers do not see later env changes)."""
    plan: dict[str, Any] = {"crash_after": cfg.fault_inject_crash_after, "fail_seeds": []}
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(";")):
        key, _, value = item.partition("=")
        if key.strip() == "crash_after":
            plan["crash_after"] = int(value)
        elif key.strip() == "fail_seeds":
            plan["fail_seeds"] = [int(s) for s in value.split(",") if s.strip()]
        else:
            raise InputError(f"{FAULT_ENV}: unknown switch {key!r} (crash_after=N;fail_seeds=S1,S2)")
    return plan


PART_BYTES = 64 * 1024**2  # an actor writes a part when a shard's images held in memory pass this


class GenerateAndWrite:
    """The actor: one call per shard. It reads the shard's prompt rows, runs the generator over them in
    batches of ``generate.batch_size`` cut from the shard's first row, and writes the outputs as part
    files of the shard (one per shard, or one per ``PART_BYTES`` of images). Only a small summary
    (shard, position, failed or not) travels back, so image bytes never cross the object store.

    One call per shard, not per batch: Ray Data's per-call work (slicing the block, converting it to
    numpy, shaping the output) and a part file per batch cost more than encoding the images when the
    model is fast, and a shard always reaching one actor whole makes its batches the same in every run."""

    def __init__(self, model_source, cfg, out_uri, shard_size, source, cache_dir=None, faults=None,
                 generator_cls=ImageGenerator):
        faults = faults or {}
        self.gen = generator_cls(model_source, cfg, cache_dir, inject_row_failures=faults.get("fail_seeds", ()))
        self.out_uri = out_uri
        self.shard_size = shard_size
        self.batch_size = cfg.batch_size
        self.source = source
        self.crash_after = faults.get("crash_after")
        self.batches = 0

    def _maybe_crash(self) -> None:
        if self.crash_after is None or self.batches < self.crash_after:
            return
        marker = storage.join(self.out_uri, "_fault_injected")
        if storage.exists(marker):  # once per output folder: the replacement actor must get through
            return
        storage.write_text(marker, f"pid {os.getpid()} after {self.batches} batches\n")
        log.warning("fault injection: actor pid %d exits after %d batches", os.getpid(), self.batches)
        os._exit(17)

    def _shard(self, shard: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.source.read_rows(start, stop)
        pending: list[pa.Table] = []
        held = 0
        failed = np.zeros(rows.num_rows, dtype=bool)
        for lo in range(0, rows.num_rows, self.batch_size):
            self._maybe_crash()
            part = rows.slice(lo, self.batch_size)
            out = self.gen({c: part.column(c).to_numpy(zero_copy_only=False) for c in part.column_names})
            out[POS] = part.column(POS).to_numpy()
            failed[lo:lo + part.num_rows] = [e is not None for e in out[ERROR_COLUMN]]
            pending.append(pa.table({k: (v.tolist() if v.dtype == object else v) for k, v in out.items()}).cast(PART_SCHEMA))
            held += sum(len(b) for b in out["image"])
            self.batches += 1
            if held >= PART_BYTES:
                write_part(self.out_uri, shard, pa.concat_tables(pending))
                pending, held = [], 0
        if pending:
            write_part(self.out_uri, shard, pa.concat_tables(pending))
        return rows.column(POS).to_numpy(), failed

    def __call__(self, specs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards, positions, failures = [], [], []
        for shard, start, stop in zip(specs["shard"], specs["start"], specs["stop"]):
            pos, failed = self._shard(int(shard), int(start), int(stop))
            shards.append(np.full(len(pos), int(shard), dtype=np.int64))
            positions.append(pos.astype(np.int64))
            failures.append(failed)
        return {"shard": np.concatenate(shards), POS: np.concatenate(positions), "failed": np.concatenate(failures)}


class ShardCommitter:
    """Commits shards for the driver (``commit_shard``): one long-lived 0-CPU actor with a few threads,
    started with the pipeline, so a commit costs a method call rather than a worker process start, and
    shards completing together commit in parallel (they are I/O: reading parts, writing tar + parquet)."""

    def commit(self, out_uri: str, index: int, start: int, stop: int, formats: list[str]) -> dict:
        return commit_shard(out_uri, index, start, stop, formats)


COMMIT_THREADS = 4


def _compute(cfg: GenerateConfig):
    import ray

    if cfg.max_actors and cfg.max_actors > cfg.num_actors:
        return ray.data.ActorPoolStrategy(min_size=cfg.num_actors, max_size=cfg.max_actors)
    return ray.data.ActorPoolStrategy(size=cfg.num_actors)


def _generate_stage(ds, plan: Plan, source: PromptSource, out_uri: str, model_source: str, cfg: GenerateConfig,
                    cache_dir, runtime_env, generator_cls):
    return ds.map_batches(
        GenerateAndWrite,
        fn_constructor_kwargs=dict(model_source=model_source, cfg=cfg, out_uri=out_uri, shard_size=plan.shard_size,
                                   source=source, cache_dir=cache_dir, faults=fault_plan(cfg),
                                   generator_cls=generator_cls),
        compute=_compute(cfg),
        batch_size=1,  # one shard spec per call: the actor reads and batches the shard's rows itself
        batch_format="numpy",
        num_gpus=cfg.num_gpus_per_actor,
        num_cpus=cfg.num_cpus_per_actor,
        # A dead actor is restarted and its batch redone, a bounded number of times: a batch that kills
        # its actor every time (a segfault, OOM) must end the job, not loop forever. The bound is on
        # restarts; a batch is retried for as long as its actor may still come back, since while a lost
        # node's actor waits for a replacement node each retry fails at once ("actor unavailable") and a
        # bounded retry count ran out in seconds.
        max_restarts=cfg.actor_max_restarts,
        max_task_retries=-1,
        runtime_env=runtime_env,
    )


def _run_pipeline(plan: Plan, source: PromptSource, todo: list[int], out_uri: str, model_source: str,
                  cfg: GenerateConfig, cache_dir: str | None, progress: bool, worker_env: dict | None,
                  generator_cls: type = ImageGenerator) -> int:
    """Generate the shards in ``todo``; returns images made. Shards are committed as they complete."""
    import ray

    ctx = ray.data.DataContext.get_current()
    saved_bars = ctx.enable_progress_bars
    ctx.enable_progress_bars = progress and saved_bars  # the console decides whether Ray Data draws bars
    runtime_env = _runtime_env(worker_env)
    from dft.cluster import wait_for_resources

    wait_for_resources([{"CPU": cfg.num_cpus_per_actor, "GPU": cfg.num_gpus_per_actor}] * cfg.num_actors,
                       f"generate: {cfg.num_actors} generation actor(s)")
    # Started first, so its process comes up while Ray Data plans. A committer lost with its node is
    # restarted and the commit redone (commit_shard is idempotent).
    committer = ray.remote(ShardCommitter).options(
        num_cpus=0, max_concurrency=COMMIT_THREADS, max_restarts=3, max_task_retries=-1, runtime_env=runtime_env
    ).remote()
    specs = [{"shard": i, "start": plan.bounds(i)[0], "stop": plan.bounds(i)[1]} for i in todo]
    ds = ray.data.from_items(specs, override_num_blocks=len(specs))
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for max_restarts / max_task_retries of map_batches actors; the
        # keyword form still works and is the documented way (it warns that it moves in 2.64).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = _generate_stage(ds, plan, source, out_uri, model_source, cfg, cache_dir, runtime_env, generator_cls)

    seen: dict[int, set[int]] = {}
    pending: dict[int, Any] = {}
    submitted: set[int] = set()
    images = 0
    done = 0
    t0 = time.perf_counter()

    def collect(block: bool) -> None:
        nonlocal done
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=1, timeout=None if block else 0)
            if not ready:
                return
            index = next(i for i, r in pending.items() if r == ready[0])
            marker = ray.get(pending.pop(index))
            done += 1
            log.info("committed shard %d (%d images, %d failed) [%d/%d]", index, marker["images"],
                     len(marker["failures"]), done, len(todo))

    rows_todo = sum(plan.bounds(i)[1] - plan.bounds(i)[0] for i in todo)
    try:
        # The bar is named after the output folder: "generate synthetic", "generate base" (evaluation), ...
        with progress_task(f"generate {out_uri.rstrip('/').rsplit('/', 1)[-1]}", total=rows_todo, unit="images") as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                before = images
                for shard, pos, failed in zip(batch["shard"], batch[POS], batch["failed"]):
                    if int(shard) in submitted:  # a late duplicate of a redone batch: already counted
                        continue
                    rows = seen.setdefault(int(shard), set())
                    images += int(not failed and int(pos) not in rows)
                    rows.add(int(pos))
                bar.advance(images - before)
                for shard in [s for s, p in seen.items() if len(p) == plan.bounds(s)[1] - plan.bounds(s)[0]]:
                    del seen[shard]
                    submitted.add(shard)
                    start, stop = plan.bounds(shard)
                    pending[shard] = committer.commit.remote(out_uri, shard, start, stop, plan.formats)
                collect(block=False)
            collect(block=True)
    finally:
        ctx.enable_progress_bars = saved_bars
        ray.kill(committer)
    if seen:  # every row of the table has an output row, or Ray Data lost some: never commit a short shard
        raise RuntimeError(f"generation ended with incomplete shards {sorted(seen)[:10]}")
    log.info("generated %d images in %.1fs", images, time.perf_counter() - t0)
    return images


def _write_summary(out_uri: str, plan: Plan, markers: dict[int, dict], extra: dict) -> dict:
    shards, failures = [], []
    for i in range(plan.num_shards):
        m = markers[i]
        failures += m["failures"]
        shards.append({k: m[k] for k in ("index", "start", "stop", "rows", "images", "files")} | {"failures": len(m["failures"])})
    lines = "".join(_json_line(f) for f in failures)
    storage.write_text(storage.join(out_uri, "failures.jsonl"), lines)
    images = sum(s["images"] for s in shards)
    manifest = {
        "version": 1,
        "rows": plan.rows,
        "images": images,
        "keys": images,  # one key per image; keys are unique (checked by the readers' tests)
        "failures": len(failures),
        "num_shards": plan.num_shards,
        "shard_size": plan.shard_size,
        "formats": plan.formats,
        "bytes": sum(f["bytes"] for s in shards for f in s["files"].values()),
        "model": plan.model,
        "settings": plan.settings,
        "settings_hash": plan.settings_hash,
        "input_fingerprint": plan.input_fingerprint,
        "shards": shards,
        **extra,
    }
    storage.write_json(storage.join(out_uri, "manifest.json"), manifest)
    return manifest


def _json_line(obj: dict) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str) + "\n"


def generate_dataset(prompts, out_uri: str, model_source: str, cfg: GenerateConfig, *,
                     cache_dir: str | None = None, progress: bool = True,
                     worker_env: dict[str, str] | None = None, generator_cls: type = ImageGenerator) -> dict:
    """Generate one image per prompt row into ``out_uri`` (local or s3://); resumable.

    ``prompts``: a folder URI of PROMPT_SCHEMA Parquet files, or a ``pyarrow.Table``. Needs a connected
    Ray (``dft.cluster.connect``); never shuts it down. ``worker_env``: extra environment variables for the
    workers (e.g. S3 credentials where workers have no role); the S3 endpoint, region and model cache
    variables of the driver are forwarded by themselves. ``generator_cls``: what each actor builds to turn
    prompt rows into sample rows, called like ``ImageGenerator`` (the default); the pipeline-overhead
    benchmark passes a stand-in that returns a fixed image. Returns counts: rows, images, failures, shards,
    shards_generated, bytes, seconds, images_per_s. Raises GenerationFailed when the failed share of
    rows passes ``cfg.max_failures_fraction`` (after writing failures.jsonl and the manifest)."""
    from dft.models.sources import resolve_model_source

    t0 = time.perf_counter()
    out_uri = storage.normalize(out_uri)
    folder = stage_table(prompts, out_uri) if isinstance(prompts, pa.Table) else storage.normalize(prompts)
    source = prompt_source(folder)
    resolve_model_source(model_source, cache_dir=cache_dir)  # a bad source fails here, before any actor
    plan = make_plan(source, model_source, cfg)
    resumed = check_or_write_plan(plan, out_uri)
    markers = committed_shards(out_uri)
    todo = [i for i in range(plan.num_shards) if i not in markers]
    log.info("%s: %d rows in %d shards; %d committed already, %d to do", out_uri, plan.rows, plan.num_shards,
             len(markers), len(todo))
    for i in todo:  # parts of a shard a killed run left half done: redo that shard whole
        storage.remove(parts_uri(out_uri, i), recursive=True)
    made = 0
    if todo:
        made = _run_pipeline(plan, source, todo, out_uri, model_source, cfg, cache_dir, progress, worker_env,
                             generator_cls)
        markers = committed_shards(out_uri)
    storage.remove(storage.join(out_uri, "_parts"), recursive=True)
    seconds = time.perf_counter() - t0
    manifest = _write_summary(out_uri, plan, markers, {"resumed": resumed})
    counts = {
        "rows": plan.rows,
        "images": manifest["images"],
        "failures": manifest["failures"],
        "shards": plan.num_shards,
        "shards_generated": len(todo),
        "shards_skipped": plan.num_shards - len(todo),
        "bytes": manifest["bytes"],
        "seconds": round(seconds, 2),
        "images_per_s": round(made / seconds, 3) if made else 0.0,
    }
    log.info("generation done: %s", counts)
    if manifest["failures"] > cfg.max_failures_fraction * plan.rows:
        raise GenerationFailed(
            f"{manifest['failures']} of {plan.rows} rows failed (max_failures_fraction={cfg.max_failures_fraction}); "
            f"see {storage.join(out_uri, 'failures.jsonl')}"
        )
    return counts
