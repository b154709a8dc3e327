"""Honest intervals: comparisons that do not reuse one model's draws for the other, coverage of the
reported intervals measured by simulation, and the finite-sample floor."""

import math

import numpy as np
import pyarrow as pa
import pytest

from dft.evaluate import intervals as I
from dft.evaluate import metrics as M
from dft.evaluate.fairness import score_table


def _rows(model, prompt, women, men, seeds=None):
    values = ["woman"] * women + ["man"] * men
    rows = [{"model": model, "prompt": prompt, "gender": v} for v in values]
    for r, s in zip(rows, seeds or []):
        r["seed"] = s
    return rows


def _two_models(base, other, prompts=10):
    rows = []
    for j in range(prompts):
        rows += _rows("base", f"p{j}", *base) + _rows("finetuned", f"p{j}", *other)
    return pa.Table.from_pylist(rows)


def test_a_one_image_difference_is_not_significant_and_a_large_one_is():
    # Issue 12: 10 prompts, base 20 women / 30 men per prompt, fine-tuned 21 / 29. With one random
    # stream for both models this came out "significant" with interval [-0.026, -0.012].
    r = score_table(_two_models((20, 30), (21, 29)), bootstrap=1000)
    assert r["comparison"]["resampling"] == "independent"
    row = r["comparison"]["attributes"]["gender"]["imbalance"]
    assert row["change"] == pytest.approx(-0.02)
    lo, hi = row["change_ci"]
    assert lo < 0 < hi and row["significant"] is False
    assert hi - lo > 0.06  # two independent samples of 500 images: sd of the difference about 0.03
    big = score_table(_two_models((10, 40), (25, 25)), bootstrap=1000)["comparison"]["attributes"]["gender"]["imbalance"]
    assert big["change"] == pytest.approx(-0.3) and big["significant"] is True and big["change_ci"][1] < 0


def test_paired_bootstrap_when_both_models_share_prompts_and_seeds():
    rng = np.random.default_rng(0)
    rows = []
    for j in range(10):
        seeds = list(range(100 * j, 100 * j + 50))
        base = ["woman"] * 20 + ["man"] * 30
        other = list(rng.permutation(["woman"] * 21 + ["man"] * 29))  # barely related to the base's
        rows += [{"model": "base", "prompt": f"p{j}", "seed": s, "gender": g} for s, g in zip(seeds, base)]
        rows += [{"model": "finetuned", "prompt": f"p{j}", "seed": s, "gender": g} for s, g in zip(seeds, other)]
    r = score_table(pa.Table.from_pylist(rows), bootstrap=1000)
    assert r["comparison"]["resampling"] == "paired"
    assert r["comparison"]["attributes"]["gender"]["imbalance"]["significant"] is False
    # a seed missing from one model: no pairing, independent streams
    r2 = score_table(pa.Table.from_pylist(rows[1:]), bootstrap=50)
    assert r2["comparison"]["resampling"] == "independent"


def test_paired_resamples_keep_each_models_totals():
    joint = np.array([[[5, 1, 0], [2, 7, 1], [0, 0, 4]]])  # one prompt, K=2 plus unreadable
    a, b = M.paired_bootstrap_counts(joint, 200, np.random.default_rng(0))
    assert a.shape == b.shape == (200, 1, 3)
    assert (a.sum(-1) == 20).all() and (b.sum(-1) == 20).all()
    assert not np.array_equal(a, b)


def _coverage(p: float, reps: int = 100, prompts: int = 20, images: int = 20) -> float:
    """Share of replicates whose reported 95% interval of the mean imbalance holds the truth."""
    rng = np.random.default_rng(1)
    x = rng.binomial(images, p, size=(reps, prompts))
    counts = np.stack([x, images - x, np.zeros_like(x)], axis=-1)
    fn = lambda s: {"imbalance": np.abs(s - 0.5).mean(axis=-1)}  # noqa: E731  (imbalance, K=2, alone: faster)
    res = I.invert(counts, M.uniform(2), fn, {"imbalance": True}, sims=200, seed=2)["imbalance"]
    truth = abs(p - 0.5)
    return float(np.mean((res["lo"] <= truth + 1e-12) & (truth - 1e-12 <= res["hi"])))


# Measured with this test's seeds (100 replicates, 200 simulations per model of the family).
MEASURED = {0.5: 0.99, 0.55: 0.99, 0.6: 0.97, 0.7: 0.91}


@pytest.mark.parametrize("p", sorted(MEASURED))
def test_coverage_of_the_mean_imbalance_interval(p):
    """K=2, 20 prompts x 20 images: the reported 95% interval covers the true mean imbalance in at
    least 85% of replicates at each p (the bootstrap it replaced: 0%, 20%, 84% at 0.5, 0.55, 0.6)."""
    cov = _coverage(p)
    assert cov >= 0.85, (p, cov)
    assert cov == pytest.approx(MEASURED[p], abs=0.03)


def test_the_old_shifted_bootstrap_misses_a_balanced_model():
    """The interval this module replaced, on the same data: a balanced model is never covered."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(30):
        x = rng.binomial(20, 0.5, size=20)
        counts = np.stack([x, 20 - x, np.zeros_like(x)], axis=-1)
        boot = M.bootstrap_counts(counts, 200, rng)
        draws = M.prompt_mean(M.metrics_from_shares(M.shares(boot))["imbalance"])
        est = M.prompt_mean(M.metrics_from_shares(M.shares(counts))["imbalance"])
        lo, _ = M.basic_interval(np.array([est]), draws[:, None], 0.95, (0.0, 0.5))
        hits += lo[0] <= 0.0
    assert hits <= 3


def test_floor_is_exact_for_two_groups():
    exact = sum(math.comb(20, k) / 2**20 * abs(k / 20 - 0.5) for k in range(21))  # 0.0881
    fl = I.floor(np.array([20, 20, 0]), M.uniform(2), M.metrics_from_shares)
    assert fl["imbalance"][0] == pytest.approx(exact, rel=1e-12) and np.isnan(fl["imbalance"][2])
    assert exact == pytest.approx(0.0881, abs=1e-4)
    s = M.score_counts(np.array([[10, 10, 3], [12, 8, 0]]), bootstrap=0)
    assert s["floor"]["imbalance"] == pytest.approx(exact)
    assert s["floor"]["fairness_score"] == pytest.approx(1 - exact / 0.5)  # a ceiling for higher-is-better


def test_floor_for_more_groups_is_simulated_with_a_fixed_seed():
    a = I.floor(np.array([32]), M.uniform(10), M.metrics_from_shares)["imbalance"]
    b = I.floor(np.array([32]), M.uniform(10), M.metrics_from_shares)["imbalance"]
    assert a[0] == b[0] and 0.040 < a[0] < 0.045  # 0.0426


def test_corrected_estimate_of_a_clearly_unfair_model_stays_near_the_value():
    counts = np.array([[160, 40, 0]] * 5)  # imbalance 0.3 with 200 images a prompt: no floor effect
    s = M.score_counts(counts, bootstrap=300, seed=0)
    assert s["corrected"]["imbalance"] == pytest.approx(0.3, abs=0.01)
    lo, hi = s["mean_ci"]["imbalance"]
    assert lo < 0.3 < hi and hi - lo < 0.06 and not s["at_floor"]["imbalance"]
