"""Coverage of the 95% interval of the mean imbalance, by simulation (docs/evaluate.md, "Intervals
that cover"): K=2, P prompts x N images from known shares, the interval ``score_counts`` reports
(test inversion, 400 simulations per model) against the bootstrap it replaced.

    .venv/bin/python benchmarks/interval_coverage.py [--runs 200] [--prompts 20] [--images 20]

Prints, per configuration of true shares: the true mean imbalance, the mean plug-in and corrected
estimates, the coverage of the old shifted-percentile bootstrap and of the reported interval, and
the reported interval's mean width. Seeded: the same numbers every time.
"""

from __future__ import annotations

import argparse

import numpy as np

from dft.evaluate import intervals as I
from dft.evaluate import metrics as M


def imbalance(s: np.ndarray) -> dict[str, np.ndarray]:
    return {"imbalance": np.abs(s - 0.5).mean(axis=-1)}  # K=2, the imbalance of REFERENCE.md alone


def study(ps: np.ndarray, runs: int, n: int, sims: int = M.MAX_INVERSION_SIMS) -> dict[str, float]:
    rng = np.random.default_rng(1)
    x = rng.binomial(n, ps, size=(runs, len(ps)))
    counts = np.stack([x, n - x, np.zeros_like(x)], axis=-1)
    truth = float(np.mean(np.abs(ps - 0.5)))
    res = I.invert(counts, M.uniform(2), imbalance, {"imbalance": True}, sims=sims, seed=2)["imbalance"]
    old = 0
    for c in counts:
        draws = M.prompt_mean(imbalance(M.shares(M.bootstrap_counts(c, sims, rng)))["imbalance"])
        est = M.prompt_mean(imbalance(M.shares(c))["imbalance"])
        lo, hi = M.basic_interval(np.array([est]), draws[:, None], 0.95, (0.0, 0.5))
        old += bool(lo[0] <= truth <= hi[0])
    return {
        "truth": truth,
        "plug_in": float(np.mean(np.abs(x / n - 0.5).mean(axis=-1))),
        "corrected": float(np.mean(res["corrected"])),
        "old": old / runs,
        "now": float(np.mean((res["lo"] <= truth + 1e-12) & (truth - 1e-12 <= res["hi"]))),
        "width": float(np.mean(res["hi"] - res["lo"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--images", type=int, default=20)
    a = ap.parse_args()
    P = a.prompts
    configs = {f"p = {p}": np.full(P, p) for p in (0.5, 0.55, 0.6, 0.7, 0.9)}
    configs["half 0.5, half 0.8"] = np.r_[np.full(P // 2, 0.5), np.full(P - P // 2, 0.8)]
    configs["0.3 .. 0.7 across prompts"] = np.linspace(0.3, 0.7, P)
    print(f"{'true shares':<28}{'truth':>7}{'plug-in':>9}{'corrected':>11}{'old cov':>9}{'now cov':>9}{'width':>8}")
    for name, ps in configs.items():
        r = study(ps, a.runs, a.images)
        print(f"{name:<28}{r['truth']:7.3f}{r['plug_in']:9.3f}{r['corrected']:11.3f}{r['old']:9.3f}{r['now']:9.3f}{r['width']:8.3f}")


if __name__ == "__main__":
    main()
