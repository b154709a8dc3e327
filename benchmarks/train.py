"""Fine-tuning throughput: `dft train` (Ray Train + DeepSpeed ZeRO) with 1 and 2 workers against a bare
single-process PyTorch loop over the same model, batch and thread budget; and checkpoint save/restore.

    HF_HUB_OFFLINE=1 DS_ACCELERATOR=cpu .venv/bin/python benchmarks/train.py [--model tiny-sd] [--batch 16]

Each worker has `--threads` CPUs (torch threads); the bare loop for N workers runs one process with
N x threads torch threads and a batch of N x batch, i.e. the same global batch and thread budget.
Samples/s of `dft train` is its steady state: the window over the second half of the steps (the
first half absorbs start-up: Ray actors, model load, DeepSpeed init, data materialisation); the
mid-run checkpoint is timed apart, not counted in that window.
Checkpoint save = DeepSpeed's files + Ray's copy to the run's storage; restore = Ray's copy back +
DeepSpeed load, measured in the job on a resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def bare_loop(model: str, batch: int, threads: int, steps: int, rows: list[dict]) -> float:
    """The obvious single-process loop: same module, AdamW, clipping; samples/s over the second half."""
    import numpy as np
    import torch

    from dft.config.schema import RunConfig
    from dft.models.sources import resolve_model_source
    from dft.train.components import build_module
    from dft.train.data import _tokenizer, decode_image, tokenize
    from dft.train.step import TorchBackend, run_steps

    torch.set_num_threads(threads)
    cfg = RunConfig().train
    module, _ = build_module(resolve_model_source(model), cfg)
    tok = _tokenizer(model, None)
    px = torch.from_numpy(np.stack([decode_image(r["image"], 32) for r in rows]))
    ids = torch.from_numpy(tokenize(tok, [r["prompt"] for r in rows]))
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-2)

    def batches():
        i = 0
        while True:
            idx = torch.arange(i, i + batch) % len(rows)
            i += batch
            yield {"pixels": px[idx], "input_ids": ids[idx]}

    times = []
    run_steps(TorchBackend(module, opt, max_grad_norm=1.0), batches(), start_step=0, max_steps=steps, grad_accum=1,
              samples_per_micro_step=batch, on_step=lambda s: times.append(s.seconds))
    half = times[len(times) // 2:]
    return batch * len(half) / sum(half)


def dft_train(run_uri: str, model: str, batch: int, workers: int, threads: int, steps: int, data_uri: str,
              name: str) -> dict:
    from dft.config.schema import RunConfig
    from dft.train.job import fit

    cfg = RunConfig()
    cfg.run.uri, cfg.run.name, cfg.model.source = run_uri, name, model
    t = cfg.train
    t.data_uri, t.num_workers, t.cpus_per_worker, t.batch_size = data_uri, workers, threads, batch
    t.max_steps, t.log_every, t.checkpoint_every, t.zero_stage = steps, steps // 2, steps // 2, 2
    t0 = time.perf_counter()
    out = fit(cfg)
    return {**out.metrics, "wall_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-sd")
    p.add_argument("--batch", type=int, default=16, help="Samples per worker per step.")
    p.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) per worker.")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rows", type=int, default=256)
    args = p.parse_args()

    import ray

    from train_shards import rows as make_rows
    from train_shards import write_shards

    tmp = tempfile.mkdtemp(prefix="dft-bench-train-")
    data = os.path.join(tmp, "synthetic")
    rows = write_shards(data, n=args.rows, shard_size=64, formats=("parquet",))
    del make_rows
    ncpu = 2 * args.threads
    ray.init(num_cpus=ncpu, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    results = {}
    for workers in (1, 2):
        bare = bare_loop(args.model, args.batch * workers, args.threads * workers, args.steps, rows)
        ours = dft_train(os.path.join(tmp, f"run{workers}"), args.model, args.batch, workers, args.threads,
                         args.steps, data, f"bench{workers}")
        results[workers] = {"bare_samples_per_s": bare, "dft_samples_per_s": ours["samples_per_s"],
                            "ratio": ours["samples_per_s"] / bare, "checkpoint_s": ours.get("checkpoint_s"),
                            "wall_s": ours["wall_s"]}
    # Restore: resume the 1-worker run for a few more steps; the job measures its load of the checkpoint.
    resumed = dft_train(os.path.join(tmp, "run1"), args.model, args.batch, 1, args.threads, args.steps + 2, data,
                        "bench1")
    ray.shutdown()

    print(f"model {args.model}, batch {args.batch}/worker, {args.threads} thread(s)/worker, {args.steps} steps, "
          f"ZeRO 2, {os.cpu_count()} cores on this machine")
    print(f"{'workers':>7} {'bare samples/s':>15} {'dft samples/s':>14} {'ratio':>6} {'ckpt save s':>11} {'job wall s':>10}")
    for w, r in results.items():
        print(f"{w:>7} {r['bare_samples_per_s']:>15.1f} {r['dft_samples_per_s']:>14.1f} {r['ratio']:>6.2f} "
              f"{(r['checkpoint_s'] or float('nan')):>11.2f} {r['wall_s']:>10.1f}")
    print(f"checkpoint restore (1 worker): {resumed.get('restore_s', float('nan')):.2f} s; "
          f"save (final, 2 workers): {results[2]['checkpoint_s'] or float('nan'):.2f} s")
    print("goal: 1-worker ratio >= 0.8")
    print(json.dumps({"results": results, "restore_s": resumed.get("restore_s")}, default=str))


if __name__ == "__main__":
    main()
