"""Every benchmark runs in its --smoke mode (tiny sizes) and still computes and prints its ratios, so the
benchmarks cannot rot. The values are not checked (a shared machine's timings are noise at these sizes);
the shape of what they print is."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RATIO_BENCHMARKS = {
    "generate_overhead": {"generate_overhead.rows_per_s", "generate_overhead.cpu_per_row", "generate_overhead.driver_memory"},
    "generate": {"generate.images_per_s"},
    "train": {"train.samples_per_s"},
    "evaluate": {"evaluate.reader_images_per_s", "evaluate.metrics_speedup", "evaluate.metrics_bootstrap_speedup"},
}


def _run(name: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args], capture_output=True,
                         text=True, timeout=600, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


@pytest.mark.parametrize("name", sorted(RATIO_BENCHMARKS))
def test_smoke_prints_every_ratio_with_its_goal(name):
    out = _run(name, "--smoke").stdout
    results = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert len(results) == 1
    result = json.loads(results[0][len("RESULT "):])
    assert result["benchmark"] == name
    ratios = {r["name"]: r for r in result["ratios"]}
    assert set(ratios) == RATIO_BENCHMARKS[name]
    for r in ratios.values():
        assert r["pairs"] == len(r["values"]) >= 1
        assert all(math.isfinite(v) and v > 0 for v in r["values"])
        assert r["min"] <= r["median"] <= r["max"]
        assert r["direction"] in (">=", "<=")
        if r["goal"] is not None:
            assert r["met"] == (r["median"] >= r["goal"] if r["direction"] == ">=" else r["median"] <= r["goal"])
        # the human line is printed too, with the goal beside the median
        line = next(ln for ln in out.splitlines() if ln.startswith(f"RATIO {r['name']}:"))
        assert "median" in line and ("goal" in line)


def test_prompts_benchmark_smoke_prints_its_ratios():
    out = _run("prompts", "--smoke").stdout
    result = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    assert {r["name"] for r in result["ratios"]} == {"prompts.time", "prompts.peak_memory"}
