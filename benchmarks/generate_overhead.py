"""Pipeline overhead at scale: 100,000 prompt rows through the real generation stage with a model
stand-in that costs nothing, against a bare loop that encodes and writes the same shards.

    .venv/bin/python benchmarks/generate_overhead.py [--rows 100000] [--pairs 2] [--mem-rows 10000] [--smoke]

The stand-in (``FixedImageGenerator``, below) is an ``ImageGenerator`` whose ``generate`` returns one
fixed image for every row; everything after it is the real stage: the row's key, its metadata, the
PNG encoding of the image (64x64 with noise by default, about 7.6 kB), the part files, the committer,
the commit markers, the checksums, the manifest. ``generate_dataset(..., generator_cls=...)`` is how
the stage is told to build it in its actors.

1. bare loop: one process reads the same prompt table (all of it, with pyarrow), calls the stand-in
   over it shard by shard in batches (encoding included) and writes each shard's tar and Parquet file
   with the stage's writers. That is all a user must have: no part files, no markers, no manifest.
2. stage: ``generate_dataset`` on the same table, settings, batch and shard size, one actor of one
   CPU, on an embedded local Ray started through ``dft.cluster.connect`` and warmed by a trivial Ray
   Data job before the clock starts (as on a running cluster).

Printed: rows/s of each and their ratio (median over alternating pairs; goal >= 0.9), the CPU seconds
of each (the stage's: every process of its Ray session, sampled from /proc) and their ratio, shard
commits/s, the overhead per row in milliseconds (wall and CPU), and the driver's peak RSS after a
``--mem-rows`` job and after a ``--rows`` job in the same process (goal: within 1.2x; the first stage
run does both). Each side of a pair runs in a fresh process. Anchor (published, not measured here):
img2dataset writes about 1,350 images/s per machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets the environment and sys.path first)
import numpy as np  # noqa: E402

from dft.generate.core import ImageGenerator, settings_hash  # noqa: E402

GOAL_RATIO = 0.9
GOAL_MEMORY = 1.2


def fixed_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A gradient with noise: compresses like a photograph (about 1.9 bytes a pixel as PNG), not like a flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height) * 2], -1)
    return np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)


class FixedImageGenerator(ImageGenerator):
    """A model stand-in that costs nothing: every row gets the same fixed image, encoded and keyed by
    the real ``ImageGenerator.__call__``. Built like ``ImageGenerator`` (the stage's actors call it so)."""

    def __init__(self, model_source, cfg, cache_dir=None, *, inject_row_failures=()):
        self.cfg, self.model = cfg, model_source
        self.settings_hash = settings_hash(cfg)
        self.height, self.width = cfg.height or 64, cfg.width or 64
        self._image = fixed_image(self.height, self.width)

    def generate(self, prompts, seeds):
        return [self._image] * len(prompts), [None] * len(prompts)


def _cfg(args):
    from dft.generate.config import GenerateConfig

    return GenerateConfig(height=args.size, width=args.size, batch_size=args.batch_size, shard_size=args.shard_size,
                          num_actors=1, num_cpus_per_actor=1)


def write_prompts(folder: str, rows: int) -> None:
    """The first ``rows`` rows of the default diverse prompt table (2 images per combination) as Parquet."""
    import pyarrow as pa

    from dft.prompts.config import PromptsConfig
    from dft.prompts.table import PromptTable, write_table

    table = PromptTable(PromptsConfig(images_per_prompt=2, chunk_rows=65_536))
    if table.num_rows < rows:
        raise SystemExit(f"the default prompt table has only {table.num_rows} rows")

    def batches():
        left = rows
        for b in table.batches():
            if left <= 0:
                return
            yield b.slice(0, left)
            left -= min(left, b.num_rows)

    write_table(batches(), folder)
    del pa


# -- the two sides, each in its own process ----------------------------------------------------------


def bare(args) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dft.generate.shards import write_webdataset_shard
    from dft.schema import PROMPT_SCHEMA, SAMPLE_SCHEMA

    out = args.out
    os.makedirs(os.path.join(out, "webdataset"))
    os.makedirs(os.path.join(out, "parquet"))
    cpu = common.TreeCPU().start()
    t0 = time.perf_counter()
    cfg = _cfg(args)
    gen = FixedImageGenerator(args.model, cfg)
    prompts = pq.read_table(args.prompts, schema=PROMPT_SCHEMA)  # the obvious way: all of it (a few MB a 100k rows)
    images = 0
    shards = -(-prompts.num_rows // cfg.shard_size)
    for index in range(shards):
        rows = prompts.slice(index * cfg.shard_size, cfg.shard_size)
        parts = []
        for start in range(0, rows.num_rows, cfg.batch_size):
            part = rows.slice(start, cfg.batch_size)
            res = gen({c: part.column(c).to_numpy(zero_copy_only=False) for c in part.column_names})
            parts.append(pa.table({c: res[c].tolist() if res[c].dtype == object else res[c] for c in SAMPLE_SCHEMA.names}))
        table = pa.concat_tables(parts).cast(SAMPLE_SCHEMA)
        name = f"shard-{index:05d}"
        write_webdataset_shard(os.path.join(out, "webdataset", name + ".tar"), table)
        pq.write_table(table, os.path.join(out, "parquet", name + ".parquet"), compression="zstd", row_group_size=256)
        images += table.num_rows
    seconds = time.perf_counter() - t0
    return {"rows": prompts.num_rows, "images": images, "shards": shards, "seconds": seconds, "cpu_s": cpu.stop(),
            "rows_per_s": prompts.num_rows / seconds, "load": os.getloadavg()[0],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def stage(args) -> dict:
    import logging

    import ray

    from dft.cluster import connect
    from dft.config.schema import RaySection
    from dft.generate.job import generate_dataset

    logging.basicConfig(level=logging.WARNING)
    connect(RaySection(num_cpus=os.cpu_count() or 2))
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.range(8, override_num_blocks=2).map_batches(lambda b: b).materialize()  # a running Ray Data
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    small = None
    if args.mem_prompts:  # the memory check's smaller job first: the peak after it, then after the big one
        generate_dataset(args.mem_prompts, args.out + "-small", args.model, _cfg(args), progress=False,
                         generator_cls=FixedImageGenerator)
        small = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        shutil.rmtree(args.out + "-small", ignore_errors=True)
    cpu = common.TreeCPU().start()
    t0 = time.perf_counter()
    counts = generate_dataset(args.prompts, args.out, args.model, _cfg(args), progress=False,
                              generator_cls=FixedImageGenerator)
    seconds = time.perf_counter() - t0
    cpu_s = cpu.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ray.shutdown()
    return {"rows": counts["rows"], "images": counts["images"], "shards": counts["shards"], "seconds": seconds,
            "cpu_s": cpu_s, "load": os.getloadavg()[0],
            "rows_per_s": counts["rows"] / seconds, "commits_per_s": counts["shards"] / seconds,
            "peak_rss_mb": peak, "rss_before_job_mb": rss_before, "small_peak_rss_mb": small}


# -- the parent --------------------------------------------------------------------------------------


def _child(args, mode: str, prompts: str, mem_prompts: str | None = None) -> dict:
    out = tempfile.mkdtemp(prefix=f"dft-bench-{mode}-", dir=args.tmp)
    shutil.rmtree(out)
    try:
        argv = ["--child", mode, "--prompts", prompts, "--out", out, "--model", args.model, "--size", str(args.size),
                "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size)]
        if mem_prompts:
            argv += ["--mem-prompts", mem_prompts]
        return common.run_child(__file__, argv)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--mem-rows", type=int, default=10_000, help="the smaller run of the memory check")
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--batch-size", type=int, default=8, help="generate.batch_size (the stage's default)")
    p.add_argument("--shard-size", type=int, default=1000, help="generate.shard_size (the stage's default)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the benchmark runs")
    p.add_argument("--tmp", default=None, help="where the outputs go (default: the system's temp folder)")
    p.add_argument("--child", choices=["bare", "stage"], help=argparse.SUPPRESS)
    p.add_argument("--prompts", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--mem-prompts", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        common.emit(bare(args) if args.child == "bare" else stage(args))
        return
    if args.smoke:
        args.rows, args.mem_rows, args.pairs, args.shard_size = 1_000, 200, 1, 100

    work = tempfile.mkdtemp(prefix="dft-bench-overhead-", dir=args.tmp)
    try:
        big, small = os.path.join(work, "prompts-big"), os.path.join(work, "prompts-small")
        # The model source the stage checks and hashes into every key: a folder the stand-in never reads.
        args.model = os.path.join(work, "stand-in")
        os.makedirs(args.model)
        write_prompts(big, args.rows)
        write_prompts(small, args.mem_rows)
        print(f"generation stage overhead: {args.rows:,} rows, a fixed {args.size}x{args.size} PNG per row (stand-in "
              f"model), batch {args.batch_size}, shard {args.shard_size}, 1 actor of 1 CPU; {os.cpu_count()} CPUs "
              f"(shared machine: compare ratios, not absolute figures)", flush=True)

        def run(mode):
            def go(i):
                # The first stage run also does the memory check's smaller job, before its timed one.
                r = _child(args, mode, big, small if (mode == "stage" and i == 0) else None)
                print(f"  [{i + 1}] {mode:5s}: {r['rows']:,} rows in {r['seconds']:7.1f} s = {r['rows_per_s']:8.1f} rows/s, "
                      f"{r['cpu_s']:6.1f} CPU-s, load {r['load']:.1f}"
                      + (f", {r['commits_per_s']:.2f} commits/s, driver peak {r['peak_rss_mb']:.0f} MB"
                         if mode == "stage" else ""), flush=True)
                return r
            return go

        pairs = common.alternate(args.pairs, run("bare"), run("stage"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rates = [o["rows_per_s"] / b["rows_per_s"] for b, o in pairs]
    cpu_ratio = [b["cpu_s"] / o["cpu_s"] for b, o in pairs]
    overhead_ms = [1e3 * (o["seconds"] - b["seconds"]) / o["rows"] for b, o in pairs]
    cpu_overhead_ms = [1e3 * (o["cpu_s"] - b["cpu_s"]) / o["rows"] for b, o in pairs]
    med = statistics.median
    first = pairs[0][1]
    mem_small, mem_big = first["small_peak_rss_mb"], first["peak_rss_mb"]
    mem = mem_big / mem_small
    ratios = [
        common.ratio("generate_overhead.rows_per_s", rates, GOAL_RATIO,
                     what=f"stage rows/s / bare loop rows/s, {args.rows:,} rows, stand-in model"),
        common.ratio("generate_overhead.cpu_per_row", cpu_ratio, None,
                     what="bare loop CPU-s / stage CPU-s (every process of the Ray session), same rows"),
        common.ratio("generate_overhead.driver_memory", [mem], GOAL_MEMORY, higher_is_better=False,
                     what=f"driver peak RSS after a {args.rows:,}-row job / after a {args.mem_rows:,}-row job, "
                          "same process"),
    ]
    common.table(
        "generation stage vs bare loop (median over pairs)",
        ["measure", "bare loop", "stage"],
        [
            ["rows/s", f"{med([b['rows_per_s'] for b, _ in pairs]):,.1f}", f"{med([o['rows_per_s'] for _, o in pairs]):,.1f}"],
            ["seconds", f"{med([b['seconds'] for b, _ in pairs]):,.1f}", f"{med([o['seconds'] for _, o in pairs]):,.1f}"],
            ["CPU-s (stage: all of Ray's processes)", f"{med([b['cpu_s'] for b, _ in pairs]):,.1f}",
             f"{med([o['cpu_s'] for _, o in pairs]):,.1f}"],
            ["CPU ms per row", f"{med([1e3 * b['cpu_s'] / b['rows'] for b, _ in pairs]):.3f}",
             f"{med([1e3 * o['cpu_s'] / o['rows'] for _, o in pairs]):.3f}"],
            ["shard commits/s", "-", f"{med([o['commits_per_s'] for _, o in pairs]):,.2f}"],
            ["overhead per row, wall ms", "-", f"{med(overhead_ms):.3f}"],
            ["overhead per row, CPU ms", "-", f"{med(cpu_overhead_ms):.3f}"],
            [f"driver peak RSS at {args.mem_rows:,} rows (MB)", "-", f"{mem_small:.0f}"],
            [f"driver peak RSS at {args.rows:,} rows (MB)", "-", f"{mem_big:.0f}"],
        ],
    )
    common.print_ratios(ratios)
    common.emit({"benchmark": "generate_overhead", "ratios": ratios, "rows": args.rows,
                 "overhead_ms_per_row": med(overhead_ms), "overhead_cpu_ms_per_row": med(cpu_overhead_ms),
                 "pairs": [{"bare": b, "stage": o} for b, o in pairs],
                 "memory": {"small_rows": args.mem_rows, "small_mb": mem_small, "big_mb": mem_big}})


if __name__ == "__main__":
    main()
