"""Fine-tuning throughput through the path users take: `dft train`'s ``fit`` (an embedded Ray started by
``dft.cluster.connect``, Ray Train, DeepSpeed ZeRO-2, Ray Data ingest) with 1 worker, against a bare
single-process torch loop of the same step.

    .venv/bin/python benchmarks/train.py [--model tiny-sd] [--batch 16] [--steps 60] [--pairs 3] [--smoke]

- bare loop: one process, ``torch.set_num_threads(threads)``; the same ``DiffusionModule`` (built by
  ``build_module`` from the same config), torch AdamW, gradient clipping, ``run_steps``; the batches are
  indexed from tensors decoded and tokenised up front (what the obvious script does).
- dft: ``dft.train.job.fit`` on the same shards, model, batch and thread budget (1 worker of
  ``threads`` CPUs), connecting through ``dft.cluster.connect`` as ``dft train`` does (workers at
  niceness 0, logs to the driver), with checkpoints every ``steps/2`` steps.

Both report samples/s over the second half of the steps (the first half absorbs start-up: actors, model
load, DeepSpeed init, Ray Data's first blocks); dft's window excludes its mid-run checkpoint, which is
timed apart. The ingest's share is the time the training loop waited for its next batch, over the
same window (``ingest_share`` in the job's metrics). Each side of a pair runs in a fresh process;
pairs alternate their order and the median ratio is reported (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets the environment and sys.path first)

GOAL_RATIO = 0.9


def _train_cfg(args):
    from dft.config.schema import RunConfig

    cfg = RunConfig()
    cfg.model.source = args.model
    cfg.ray.num_cpus = args.cpus
    t = cfg.train
    t.data_uri, t.num_workers, t.cpus_per_worker, t.batch_size = args.data, 1, args.threads, args.batch
    t.max_steps, t.zero_stage = args.steps, 2
    t.log_every = t.checkpoint_every = max(1, args.steps // 2)
    return cfg


def bare(args) -> dict:
    """The obvious single-process loop over the same module, optimizer and clipping."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from dft.generate.shards import shard_files
    from dft.models.sources import resolve_model_source
    from dft.train.components import build_module, model_info
    from dft.train.preprocess import decode_image, tokenize, tokenizer_for
    from dft.train.step import TorchBackend, run_steps

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = _train_cfg(args).train
    folder = resolve_model_source(args.model)
    resolution = model_info(folder).resolution
    module, _ = build_module(folder, cfg)
    rows = pq.read_table(shard_files(args.data, "parquet"), columns=["prompt", "image"]).to_pylist()
    px = torch.from_numpy(np.stack([decode_image(r["image"], resolution) for r in rows]))
    ids = torch.from_numpy(tokenize(tokenizer_for(args.model, None), [r["prompt"] for r in rows]))
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=cfg.learning_rate,
                            weight_decay=cfg.weight_decay)

    def batches():
        i = 0
        while True:
            idx = torch.arange(i, i + args.batch) % len(rows)
            i += args.batch
            yield {"pixels": px[idx], "input_ids": ids[idx]}

    stats = []
    run_steps(TorchBackend(module, opt, max_grad_norm=cfg.max_grad_norm), batches(), start_step=0,
              max_steps=args.steps, grad_accum=1, samples_per_micro_step=args.batch, on_step=stats.append)
    half = stats[len(stats) // 2:]
    seconds = sum(s.seconds for s in half)
    return {"samples_per_s": args.batch * len(half) / seconds, "step_s": seconds / len(half),
            "ingest_share": sum(s.data_seconds for s in half) / seconds, "load": os.getloadavg()[0]}


def dft(args) -> dict:
    import logging

    from dft.train.job import fit

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # what `dft train` shows, without rich
    cfg = _train_cfg(args)
    cfg.run.uri, cfg.run.name = args.run, "bench"
    t0 = time.perf_counter()
    out = fit(cfg)
    wall = time.perf_counter() - t0
    m = out.metrics
    result = {"samples_per_s": m["samples_per_s"], "step_s": 1 / m["steps_per_s"], "ingest_share": m.get("ingest_share"),
              "checkpoint_s": m.get("checkpoint_s"), "wall_s": wall, "load": os.getloadavg()[0]}
    if args.resume:  # the restore time: the same run, two more steps, resumed from the last checkpoint
        cfg.train.max_steps = args.steps + 2
        result["restore_s"] = fit(cfg).metrics.get("restore_s")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-sd")
    p.add_argument("--batch", type=int, default=16, help="samples per step")
    p.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) of the worker and of the bare loop")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rows", type=int, default=256, help="training images (32x32 PNG shards)")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the benchmark runs")
    p.add_argument("--child", choices=["bare", "dft"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--cpus", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        common.emit(bare(args) if args.child == "bare" else dft(args))
        return
    if args.smoke:
        args.steps, args.rows, args.pairs, args.batch = 6, 32, 1, 4
    args.cpus = os.cpu_count() or 2

    sys.path.insert(0, os.path.join(common.ROOT, "tests"))
    from train_shards import write_shards  # the training tests' learnable synthetic shards

    work = tempfile.mkdtemp(prefix="dft-bench-train-")
    try:
        data = os.path.join(work, "synthetic")
        write_shards(data, n=args.rows, shard_size=64, formats=("parquet",))
        base = ["--model", args.model, "--batch", str(args.batch), "--threads", str(args.threads), "--steps",
                str(args.steps), "--data", data, "--cpus", str(args.cpus)]
        print(f"fine-tuning: {args.model}, batch {args.batch}, {args.threads} thread(s), {args.steps} steps (the second "
              f"half measured), ZeRO 2, 1 worker; Ray with {args.cpus} CPUs; {os.cpu_count()} CPUs on this machine "
              "(shared: compare ratios, not absolute figures)", flush=True)

        def side(mode):
            def go(i):
                argv = ["--child", mode, *base]
                if mode == "dft":
                    argv += ["--run", os.path.join(work, f"run{i}")] + (["--resume"] if i == 0 and not args.smoke else [])
                r = common.run_child(__file__, argv)
                print(f"  [{i + 1}] {mode:4s}: {r['samples_per_s']:7.2f} samples/s, {1e3 * r['step_s']:7.1f} ms/step, "
                      f"ingest {100 * (r['ingest_share'] or 0):4.1f}% of it, load {r['load']:.1f}"
                      + (f", checkpoint {r['checkpoint_s']:.2f} s, job {r['wall_s']:.0f} s" if mode == "dft" else ""),
                      flush=True)
                return r
            return go

        pairs = common.alternate(args.pairs, side("bare"), side("dft"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    ratios = [common.ratio("train.samples_per_s", [o["samples_per_s"] / b["samples_per_s"] for b, o in pairs], GOAL_RATIO,
                           what=f"dft train (1 worker) samples/s / bare torch loop samples/s, {args.model}")]
    first = pairs[0][1]
    common.table(
        "fine-tuning, 1 worker vs bare loop (median over pairs)",
        ["measure", "bare loop", "dft train"],
        [
            ["samples/s", f"{med([b['samples_per_s'] for b, _ in pairs]):.2f}",
             f"{med([o['samples_per_s'] for _, o in pairs]):.2f}"],
            ["ms per step", f"{1e3 * med([b['step_s'] for b, _ in pairs]):.1f}",
             f"{1e3 * med([o['step_s'] for _, o in pairs]):.1f}"],
            ["ingest share of step time", f"{100 * med([b['ingest_share'] for b, _ in pairs]):.2f}%",
             f"{100 * med([o['ingest_share'] for _, o in pairs]):.2f}%"],
            ["checkpoint save (s)", "-", f"{med([o['checkpoint_s'] for _, o in pairs]):.2f}"],
            ["checkpoint restore (s)", "-", f"{first.get('restore_s') or float('nan'):.2f}"],
            ["job wall time (s)", "-", f"{med([o['wall_s'] for _, o in pairs]):.1f}"],
        ],
    )
    common.print_ratios(ratios)
    common.emit({"benchmark": "train", "ratios": ratios, "ingest_share": med([o["ingest_share"] for _, o in pairs]),
                 "pairs": [{"bare": b, "dft": o} for b, o in pairs]})


if __name__ == "__main__":
    main()
