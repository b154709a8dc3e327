"""Prompt-table build: ~1M rows, streamed, against a bare materialising baseline in the same run.

    .venv/bin/python benchmarks/prompts.py [--images-per-prompt 14] [--pairs 3] [--smoke]

The baseline builds the same rows as a Python list of dicts and writes one Arrow table: the obvious
way. Ours streams record batches into part files. Prints time and peak-memory ratios (ours / bare).
Each measurement runs in a fresh subprocess so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets the environment and sys.path first)

CHILD = r"""
import json, resource, sys, time
mode, out, n_img = sys.argv[1], sys.argv[2], int(sys.argv[3])
from dft.prompts.config import PromptsConfig
from dft.prompts.table import PromptTable, write_table, render, image_seed, ORDER
cfg = PromptsConfig(images_per_prompt=n_img)
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
table = PromptTable(cfg)
if mode == "ours":
    rows = table.num_rows
    write_table(table.batches(), out)
else:
    import pyarrow as pa, pyarrow.parquet as pq
    records = []
    for pid, fields, template in table.combos:
        prompt = render(template, fields)
        for i in range(n_img):
            records.append(dict(prompt_id=pid, image_index=i, seed=image_seed(pid, i, cfg.seed), prompt=prompt,
                                neutral_prompt="a photo of a " + fields["profession"], template=template,
                                prompt_set="diverse", **fields))
    rows = len(records)
    pq.write_table(pa.Table.from_pylist(records), out + "/bare.parquet")
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "seconds": elapsed, "peak_mb": peak / 1024, "growth_mb": (peak - base_rss) / 1024}))
"""


def measure(mode: str, n_img: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        res = subprocess.run([sys.executable, "-c", CHILD, mode, out, str(n_img)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images-per-prompt", type=int, default=14, help="14 x 74,817 combinations = 1.05M rows")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the benchmark runs")
    args = p.parse_args()
    if args.smoke:
        args.images_per_prompt, args.pairs = 1, 1
    pairs = common.alternate(args.pairs, lambda i: measure("bare", args.images_per_prompt),
                             lambda i: measure("ours", args.images_per_prompt))
    med = statistics.median
    bare = {k: med([b[k] for b, _ in pairs]) for k in ("seconds", "peak_mb")}
    ours = {k: med([o[k] for _, o in pairs]) for k in ("seconds", "peak_mb", "growth_mb")} | {"rows": pairs[0][1]["rows"]}
    small = measure("ours", max(1, args.images_per_prompt // 10))
    print(f"rows: {ours['rows']:,}")
    print(f"bare (list of dicts -> one table): {bare['seconds']:.1f} s, peak RSS {bare['peak_mb']:.0f} MB")
    print(f"dft  (streamed record batches)   : {ours['seconds']:.1f} s, peak RSS {ours['peak_mb']:.0f} MB")
    print(f"time ratio dft/bare: {ours['seconds'] / bare['seconds']:.2f}   "
          f"peak-memory ratio dft/bare: {ours['peak_mb'] / bare['peak_mb']:.2f}")
    print(
        f"flat memory: peak growth at {small['rows']:,} rows {small['growth_mb']:.0f} MB, "
        f"at {ours['rows']:,} rows {ours['growth_mb']:.0f} MB (ratio {ours['growth_mb'] / max(small['growth_mb'], 1):.2f} for "
        f"{ours['rows'] / small['rows']:.0f}x rows)"
    )
    ratios = [
        common.ratio("prompts.time", [o["seconds"] / b["seconds"] for b, o in pairs], None, higher_is_better=False,
                     what="streamed build time / list-of-dicts build time"),
        common.ratio("prompts.peak_memory", [o["peak_mb"] / b["peak_mb"] for b, o in pairs], None,
                     higher_is_better=False, what="streamed peak RSS / list-of-dicts peak RSS"),
    ]
    common.print_ratios(ratios)
    common.emit({"benchmark": "prompts", "ratios": ratios, "rows": ours["rows"]})


if __name__ == "__main__":
    main()
