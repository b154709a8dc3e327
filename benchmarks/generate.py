"""Generation throughput with a real (small) model: the full Ray Data job against a bare in-process loop.

    .venv/bin/python benchmarks/generate.py [--rows 96] [--steps 25] [--size 128] [--batch-size 4] [--repeat 3] [--smoke]

The default workload (small-sd at 128x128, 25 steps, 96 rows) is one where denoising dominates, as it
does on a cluster: about 40 s of bare-loop work on 2 cores, so the one-off costs of a job (an actor
process, Ray Data's start) are weighed against real work, not against a toy. The pipeline's own cost
per row at scale, with a model that costs nothing, is benchmarks/generate_overhead.py (which also
checks the driver's memory at 10,000 and 100,000 rows).

1. bare loop: one process builds ``ImageGenerator`` and calls it over the rows in batches (encoding
   included, nothing written), timed from model load to the last image;
2. Ray job: ``generate_dataset`` on the same rows, model, settings and batch size, one actor holding
   all CPUs (the same compute as the bare loop), timed from the call to the manifest (actor start,
   shard writes and commits included; a running Ray is assumed, as on a cluster: Ray starts and a
   trivial Ray Data job runs before the clock starts);
3. driver memory (``--mem-rows N``, off by default): the Ray job's driver peak RSS at N and 10N rows of
   tiny-sd at 1 step.

Each measurement runs in its own fresh process so imports and peaks do not leak between them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets the environment and sys.path first)


def _table(rows: int):
    """The first ``rows`` rows of the default diverse prompt table (tens of thousands of combinations)."""
    import pyarrow as pa

    from dft.prompts.config import PromptsConfig
    from dft.prompts.table import PromptTable

    table = PromptTable(PromptsConfig(images_per_prompt=1, chunk_rows=max(rows, 1)))
    if table.num_rows < rows:
        raise SystemExit(f"the default prompt table has only {table.num_rows} rows")
    return pa.Table.from_batches([next(table.batches())]).slice(0, rows)


def _gen_cfg(args, **extra):
    from dft.generate.config import GenerateConfig

    return GenerateConfig(steps=args.steps, height=args.size, width=args.size, batch_size=args.batch_size,
                          shard_size=args.shard_size, **extra)


def bare(args) -> dict:
    from dft.generate.core import ImageGenerator

    table = _table(args.rows)
    t0 = time.perf_counter()
    gen = ImageGenerator(args.model, _gen_cfg(args))
    n = 0
    for start in range(0, table.num_rows, args.batch_size):
        part = table.slice(start, args.batch_size)
        out = gen({c: part.column(c).to_numpy(zero_copy_only=False) for c in part.column_names})
        n += sum(e is None for e in out["error"])
    seconds = time.perf_counter() - t0
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds}


def ray_job(args) -> dict:
    import logging

    import ray

    from dft.cluster import connect
    from dft.config.schema import RaySection
    from dft.generate.job import generate_dataset

    logging.basicConfig(level=logging.WARNING)
    cpus = os.cpu_count() or 2
    connect(RaySection(num_cpus=cpus))  # as `dft generate` does: workers at niceness 0
    # A running cluster is assumed: a trivial Ray Data job first brings up what every later job finds
    # there already (Ray Data's detached stats and autoscaling actors, idle worker processes).
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.range(8, override_num_blocks=2).map_batches(lambda b: b).materialize()
    table = _table(args.rows)
    cfg = _gen_cfg(args, num_actors=args.actors, num_cpus_per_actor=cpus / args.actors)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        counts = generate_dataset(table, os.path.join(out, "gen"), args.model, cfg, progress=False)
        seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ray.shutdown()
    return {"images": counts["images"], "seconds": seconds, "images_per_s": counts["images"] / seconds,
            "driver_peak_rss_mb": peak_mb, "shards": counts["shards"]}


def _child(mode: str, args, **override) -> dict:
    argv = [sys.executable, __file__, "--child", mode]
    params = vars(args) | override
    for k, v in params.items():
        if k not in ("child",) and v is not None:
            argv += [f"--{k.replace('_', '-')}", str(v)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=560)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode or not lines:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-5000:])
        raise SystemExit(f"{mode} run failed (exit {res.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small-sd")
    p.add_argument("--rows", type=int, default=96)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3, help="bare/Ray pairs to run (the median ratio is printed; 0: none)")
    p.add_argument("--mem-rows", type=int, default=0, help="N of the memory check (also runs 10N; 0: skip it)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the benchmark runs")
    p.add_argument("--child", choices=["bare", "ray"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = bare(args) if args.child == "bare" else ray_job(args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.smoke:
        args.model, args.rows, args.steps, args.size, args.repeat, args.shard_size = "tiny-sd", 8, 2, 32, 1, 4
    del args.smoke

    print(f"model {args.model} {args.size}x{args.size}, {args.steps} steps, {args.rows} rows, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs, Ray job with {args.actors} actor(s)")
    ratios = []
    for i in range(args.repeat):  # alternate the order: a shared machine's load drifts
        order = ("bare", "ray") if i % 2 == 0 else ("ray", "bare")
        res = {mode: _child(mode, args) for mode in order}
        b, r = res["bare"], res["ray"]
        ratios.append(r["images_per_s"] / b["images_per_s"])
        print(f"[{i + 1}] bare loop : {b['images']:5d} images in {b['seconds']:7.1f}s = {b['images_per_s']:.3f} images/s")
        print(f"[{i + 1}] Ray job   : {r['images']:5d} images in {r['seconds']:7.1f}s = {r['images_per_s']:.3f} images/s "
              f"({r['shards']} shards written)")
    summary = [common.ratio("generate.images_per_s", ratios, 0.85,
                            what=f"Ray job images/s / bare loop images/s, {args.model} {args.size} px {args.steps} steps")
               ] if ratios else []
    common.print_ratios(summary)

    n = args.mem_rows
    if n <= 0:
        common.emit({"benchmark": "generate", "ratios": summary})
        return
    small = dict(model="tiny-sd", steps=1, size=32, batch_size=16, shard_size=100, actors=1)
    m1 = _child("ray", args, rows=n, **small)
    m10 = _child("ray", args, rows=10 * n, **small)
    print(f"driver peak RSS: {m1['driver_peak_rss_mb']:.0f} MB at {n} rows, {m10['driver_peak_rss_mb']:.0f} MB at "
          f"{10 * n} rows (ratio {m10['driver_peak_rss_mb'] / m1['driver_peak_rss_mb']:.2f}; tiny-sd, 1 step)")
    common.emit({"benchmark": "generate", "ratios": summary})


if __name__ == "__main__":
    main()
