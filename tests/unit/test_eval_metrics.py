"""Fairness metrics against values worked out by hand, and their properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dft.evaluate import metrics as M


def one(p):
    return {k: float(v) for k, v in M.metrics_from_shares(np.array(p, dtype=float)).items()}


def test_k2_by_hand():
    m = one([0.75, 0.25])
    assert m["imbalance"] == pytest.approx(0.25)  # (|.75-.5| + |.25-.5|) / 2
    assert m["parity_gap"] == pytest.approx(0.5)
    assert m["mad"] == pytest.approx(0.25)
    assert m["kl_uniform"] == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))  # 0.130812
    assert m["entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2))  # 0.811278
    assert m["fairness_score"] == pytest.approx(0.5)  # 1 - 0.25 / (2 * 1 / 4)


def test_k10_all_in_one_group_is_the_worst_case():
    m = one([1.0] + [0.0] * 9)
    assert m["imbalance"] == pytest.approx(0.18)  # (0.9 + 9 * 0.1) / 10 = 2 (K-1) / K^2
    assert m["parity_gap"] == pytest.approx(9 / 45)  # 9 pairs differ by 1 among 45
    assert m["kl_uniform"] == pytest.approx(math.log(10))
    assert m["entropy"] == pytest.approx(0.0)
    assert m["fairness_score"] == pytest.approx(0.0)


def test_k10_with_empty_groups():
    m = one([0.5, 0.5] + [0.0] * 8)
    assert m["imbalance"] == pytest.approx((2 * 0.4 + 8 * 0.1) / 10)  # 0.16
    assert m["parity_gap"] == pytest.approx(16 * 0.5 / 45)  # 16 pairs (full, empty) differ by 0.5
    assert m["mad"] == pytest.approx(0.16)
    assert m["kl_uniform"] == pytest.approx(math.log(5))  # 0 log 0 = 0
    assert m["entropy"] == pytest.approx(math.log(2) / math.log(10))
    assert m["fairness_score"] == pytest.approx(1 - 0.16 / 0.18)


def test_k3_by_hand():
    m = one([0.5, 0.3, 0.2])
    assert m["imbalance"] == pytest.approx((1 / 6 + 1 / 30 + 2 / 15) / 3)
    assert m["parity_gap"] == pytest.approx((0.2 + 0.3 + 0.1) / 3)


def test_unreadable_images_are_excluded_from_shares_and_counted_apart():
    counts = np.array([[3, 1, 2]])  # 3 man, 1 woman, 2 unreadable
    np.testing.assert_allclose(M.shares(counts), [[0.75, 0.25]])
    s = M.score_counts(counts, bootstrap=0)
    assert s["unreadable_rate"] == pytest.approx(2 / 6)
    assert s["mean"]["imbalance"] == pytest.approx(0.25)


def test_prompt_with_no_readable_image_is_left_out_of_the_average():
    counts = np.array([[3, 1, 0], [0, 0, 5], [2, 2, 0]])
    s = M.score_counts(counts, bootstrap=0)
    assert np.isnan(s["per_prompt"]["imbalance"][1])
    assert s["mean"]["imbalance"] == pytest.approx((0.25 + 0.0) / 2)
    assert s["unreadable_rate"] == pytest.approx(5 / 13)


def test_count_matrix_from_codes():
    prompts = np.array([0, 0, 1, 1, 1])
    values = np.array([0, -1, 1, 1, 0])
    np.testing.assert_array_equal(M.count_matrix(prompts, values, 2, 2), [[1, 0, 1], [1, 2, 0]])


def test_single_group_is_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        M.metrics_from_shares(np.array([1.0]))


def test_bootstrap_interval_brackets_a_large_sample_and_shrinks_with_n():
    widths = []
    for n in (100, 10_000):
        counts = np.array([[int(0.7 * n), n - int(0.7 * n), 0]])
        s = M.score_counts(counts, bootstrap=500, seed=1)
        lo, hi = s["mean_ci"]["imbalance"]
        assert lo <= 0.2 <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 5


def test_bootstrap_is_deterministic_for_a_seed():
    counts = np.array([[5, 3, 1], [2, 6, 0]])
    a = M.score_counts(counts, bootstrap=200, seed=3)["mean_ci"]
    b = M.score_counts(counts, bootstrap=200, seed=3)["mean_ci"]
    assert a == b


def test_compare_directions_and_relative_change():
    base = M.score_counts(np.array([[80, 20, 0]]), bootstrap=300, seed=0)  # imbalance 0.3
    fair = M.score_counts(np.array([[55, 45, 0]]), bootstrap=300, seed=1)  # imbalance 0.05
    c = M.compare(base, fair)
    assert c["imbalance"]["relative_change"] == pytest.approx((0.05 - 0.3) / 0.3)
    assert c["imbalance"]["verdict"] == "better"
    assert c["fairness_score"]["verdict"] == "better"  # higher is better, and it rose
    assert c["fairness_score"]["relative_change"] == pytest.approx((0.9 - 0.4) / 0.4)
    assert c["imbalance"]["significant"] is True
    back = M.compare(fair, base)
    assert back["imbalance"]["verdict"] == "worse" and back["entropy"]["verdict"] == "worse"


def test_relative_change_from_zero_is_undefined():
    assert M.relative_change(0.0, 0.2) is None
    assert M.verdict("imbalance", 0.1, 0.1) == "same"


shares_strategy = st.integers(2, 12).flatmap(
    lambda k: st.lists(st.integers(0, 50), min_size=k, max_size=k).filter(lambda c: sum(c) > 0)
)


@settings(max_examples=200, deadline=None)
@given(shares_strategy)
def test_bounds(counts):
    c = np.array(counts, dtype=float)
    K = len(c)
    m = one(c / c.sum())
    assert 0.0 <= m["imbalance"] <= 2 * (K - 1) / K**2 + 1e-12
    assert 0.0 <= m["parity_gap"] <= 1.0 + 1e-12
    assert 0.0 <= m["kl_uniform"] <= math.log(K) + 1e-9
    assert 0.0 <= m["entropy"] <= 1.0
    assert -1e-9 <= m["fairness_score"] <= 1.0 + 1e-9
    assert m["mad"] == pytest.approx(m["imbalance"])  # mean(p) = 1/K


@settings(max_examples=100, deadline=None)
@given(shares_strategy, st.randoms())
def test_invariant_to_group_order(counts, rnd):
    c = np.array(counts, dtype=float)
    perm = list(range(len(c)))
    rnd.shuffle(perm)
    a, b = one(c / c.sum()), one(c[perm] / c.sum())
    for k in M.METRICS:
        assert a[k] == pytest.approx(b[k], abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-1, 2)), min_size=1, max_size=200), st.randoms())
def test_invariant_to_image_order(rows, rnd):
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    a = M.count_matrix(*map(np.array, zip(*rows)), 4, 3)
    b = M.count_matrix(*map(np.array, zip(*shuffled)), 4, 3)
    np.testing.assert_array_equal(a, b)
    ma, mb = M.score_counts(a, bootstrap=0)["mean"], M.score_counts(b, bootstrap=0)["mean"]
    assert ma == pytest.approx(mb, nan_ok=True)


@given(st.integers(2, 20))
def test_best_value_on_uniform(k):
    m = one(np.full(k, 1.0 / k))
    for name in M.METRICS:
        assert m[name] == pytest.approx(M.BEST[name], abs=1e-12)


def test_intervals_cover_a_balanced_model_whose_estimate_sits_at_its_floor():
    """K=10 and 32 images a prompt from a perfectly even model: the plug-in imbalance is about
    0.05 (its floor), not 0. The interval is about the true value, so it reaches the best value,
    holds the corrected estimate, and the floor is reported beside the value."""
    rng = np.random.default_rng(0)
    counts = np.stack([np.append(rng.multinomial(32, np.full(10, 0.1)), 0) for _ in range(3)])
    s = M.score_counts(counts, bootstrap=300, seed=0)
    assert s["floor"]["imbalance"] == pytest.approx(s["mean"]["imbalance"], abs=0.02)
    assert 0.04 < s["floor"]["imbalance"] < 0.06
    lo, hi = s["mean_ci"]["imbalance"]
    assert lo == 0.0 < s["mean"]["imbalance"] and s["at_floor"]["imbalance"]  # covers the true 0
    # (this sample is in the balanced model's top 2.6% for kl_uniform: an interval may miss, 5% do)
    for m in M.METRICS:
        lo, hi = s["mean_ci"][m]
        assert lo - 1e-12 <= s["corrected"][m] <= hi + 1e-12, (m, lo, s["corrected"][m], hi)
        assert M.metric_range(m, 10)[0] <= lo and hi <= M.metric_range(m, 10)[1] + 1e-12


@pytest.mark.parametrize("k", [2, 3, 10])
def test_metric_range_is_reached_by_all_mass_in_one_group(k):
    m = one([1.0] + [0.0] * (k - 1))
    for name in ("imbalance", "parity_gap", "kl_uniform"):
        assert m[name] == pytest.approx(M.metric_range(name, k)[1])
