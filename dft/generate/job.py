"""The Ray Data adapter of generation: plan on the driver, stream the rows through an actor pool of
``ImageGenerator``s, commit shards as they complete, write the manifest last.

    shard specs ──► read rows (task, 0 CPU) ──► ImageGenerator actors (map_batches, ActorPoolStrategy)
                                                   └─ each batch's rows written as parts of their shards
    driver: counts rows per shard ──► a shard complete ──► committer actor: tar + parquet + marker

Resumption uses our own commit markers, not ``ray.data.checkpoint``: a shard is the unit a reader
sees, so "the shard's marker exists" is exactly "its files are whole", whatever the storage, and a
restarted job plans only the shards without a marker (their leftover parts are discarded).
"""

from __future__ import annotations

from dft.errors import DftError
import logging
import os
import time
import warnings
from typing import Any

import numpy as np
import pyarrow as pa

from dft import storage
from dft.generate.config import GenerateConfig
from dft.generate.core import ERROR_COLUMN, ImageGenerator
from dft.generate.plan import Plan, PromptSource, check_or_write_plan, make_plan, prompt_source, stage_table
from dft.generate.shards import (
    POS,
    commit_shard,
    committed_shards,
    parts_uri,
    write_part,
)

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
            raise ValueError(f"{FAULT_ENV}: unknown switch {key!r} (crash_after=N;fail_seeds=S1,S2)")
    return plan


def read_shard_rows(specs: pa.Table, source: PromptSource) -> pa.Table:
    """Shard spec rows in, those shards' prompt rows (plus their table position) out."""
    tables = [source.read_rows(s, e) for s, e in zip(specs["start"].to_pylist(), specs["stop"].to_pylist())]
    return pa.concat_tables(tables)


class GenerateAndWrite:
    """The actor: an ImageGenerator whose outputs go straight into per-shard part files. Only a small
    summary (shard, position, failed or not) travels back, so image bytes never cross the object store."""

    def __init__(self, model_source, cfg, out_uri, shard_size, cache_dir=None, faults=None):
        faults = faults or {}
        self.gen = ImageGenerator(model_source, cfg, cache_dir, inject_row_failures=faults.get("fail_seeds", ()))
        self.out_uri = out_uri
        self.shard_size = shard_size
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

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._maybe_crash()
        out = self.gen(batch)
        out[POS] = batch[POS]
        shards = np.asarray(batch[POS]) // self.shard_size
        table = pa.table({k: (v.tolist() if v.dtype == object else v) for k, v in out.items()})
        for shard in np.unique(shards):
            write_part(self.out_uri, int(shard), table.filter(pa.array(shards == shard)))
        self.batches += 1
        return {
            "shard": shards.astype(np.int64),
            POS: np.asarray(batch[POS], dtype=np.int64),
            "failed": np.array([e is not None for e in out[ERROR_COLUMN]]),
        }


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


def _generate_stage(ds, plan: Plan, out_uri: str, model_source: str, cfg: GenerateConfig, cache_dir, runtime_env):
    return ds.map_batches(
        GenerateAndWrite,
        fn_constructor_kwargs=dict(model_source=model_source, cfg=cfg, out_uri=out_uri, shard_size=plan.shard_size,
                                   cache_dir=cache_dir, faults=fault_plan(cfg)),
        compute=_compute(cfg),
        batch_size=cfg.batch_size,
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
                  cfg: GenerateConfig, cache_dir: str | None, progress: bool, worker_env: dict | None) -> int:
    """Generate the shards in ``todo``; returns images made. Shards are committed as they complete."""
    import ray

    ctx = ray.data.DataContext.get_current()
    saved_bars = ctx.enable_progress_bars
    ctx.enable_progress_bars = progress
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
    # Reading prompt rows is a footnote next to diffusion: 0 CPUs, so it never waits behind the actors.
    ds = ds.map_batches(read_shard_rows, fn_kwargs={"source": source}, batch_size=1, batch_format="pyarrow",
                        num_cpus=0, runtime_env=runtime_env)
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for max_restarts / max_task_retries of map_batches actors; the
        # keyword form still works and is the documented way (it warns that it moves in 2.64).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = _generate_stage(ds, plan, out_uri, model_source, cfg, cache_dir, runtime_env)

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

    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for shard, pos, failed in zip(batch["shard"], batch[POS], batch["failed"]):
                if int(shard) in submitted:  # a late duplicate of a redone batch: already counted
                    continue
                rows = seen.setdefault(int(shard), set())
                images += int(not failed and int(pos) not in rows)
                rows.add(int(pos))
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
                     worker_env: dict[str, str] | None = None) -> dict:
    """Generate one image per prompt row into ``out_uri`` (local or s3://); resumable.

    ``prompts``: a folder URI of PROMPT_SCHEMA Parquet files, or a ``pyarrow.Table``. Needs a connected
    Ray (``dft.cluster.connect``); never shuts it down. ``worker_env``: extra environment variables for the
    workers (e.g. S3 credentials where workers have no role); the S3 endpoint, region and model cache
    variables of the driver are forwarded by themselves. Returns counts: rows, images, failures, shards,
    shards_generated, bytes, seconds, images_per_s. Raises GenerationFailed when the failed share of
    rows passes ``cfg.max_failures_fraction`` (after writing failures.jsonl and the manifest)."""
    from dft.models.sources import resolve_model_source

    t0 = time.perf_counter()
    out_uri = storage.normalize(out_uri)
    folder = stage_table(prompts, out_uri) if isinstance(prompts, pa.Table) else storage.normalize(prompts)
    source = prompt_source(folder)
    resolve_model_source(model_source, cache_dir=cache_dir)  # a bad source fails here, before any actor
    plan = make_plan(source, model_source, cfg)
    if cfg.shard_size < cfg.batch_size:
        # Ray Data bundles blocks until a batch is full: shards smaller than a batch share batches in the order
        # they arrive, so a row's batch-mates (and its last bit of rounding) may change between runs.
        log.warning("generate.shard_size (%d) < batch_size (%d): images stay within one level of 255 across "
                    "re-runs but may not be byte-identical", cfg.shard_size, cfg.batch_size)
    resumed = check_or_write_plan(plan, out_uri)
    markers = committed_shards(out_uri)
    todo = [i for i in range(plan.num_shards) if i not in markers]
    log.info("%s: %d rows in %d shards; %d committed already, %d to do", out_uri, plan.rows, plan.num_shards,
             len(markers), len(todo))
    for i in todo:  # parts of a shard a killed run left half done: redo that shard whole
        storage.remove(parts_uri(out_uri, i), recursive=True)
    made = 0
    if todo:
        made = _run_pipeline(plan, source, todo, out_uri, model_source, cfg, cache_dir, progress, worker_env)
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
