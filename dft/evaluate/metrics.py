"""Group-fairness metrics of REFERENCE.md section 3, vectorised over prompts and bootstrap draws.

Everything works on a count matrix ``[..., P, K + 1]``: P prompts, K groups of one attribute, and a
last column of images whose attribute could not be read. Shares ``p`` exclude that column; a prompt
with no readable image has undefined metrics (NaN) and is left out of the average over prompts.

The bootstrap resamples images with replacement within each prompt. Resampling n images from a
prompt's images is exactly a multinomial draw of n over its cell frequencies, so the bootstrap
costs B x P x K draws, whatever the number of images (10 million label rows bootstrap as fast as
a thousand).
"""

from __future__ import annotations

import numpy as np

METRICS = ("imbalance", "parity_gap", "mad", "kl_uniform", "entropy", "fairness_score", "imbalance_target", "kl_target")
# Metrics measured against the attribute's target shares q (uniform unless evaluate.targets says
# otherwise); the others are always against the even share 1/K.
TARGET_METRICS = ("imbalance_target", "kl_target")

# Direction and best value of each metric; used by the model comparison and the report.
DIRECTION = {
    "imbalance": "lower",
    "parity_gap": "lower",
    "mad": "lower",
    "kl_uniform": "lower",
    "entropy": "higher",
    "fairness_score": "higher",
    "imbalance_target": "lower",
    "kl_target": "lower",
}
BEST = {"imbalance": 0.0, "parity_gap": 0.0, "mad": 0.0, "kl_uniform": 0.0, "entropy": 1.0, "fairness_score": 1.0,
        "imbalance_target": 0.0, "kl_target": 0.0}
DESCRIPTION = {
    "imbalance": "(1/K) sum_k |p_k - 1/K|: mean distance of each group's share from an even share (HEIM).",
    "parity_gap": "|p_1 - p_2| for K=2, mean |p_i - p_j| over pairs for K>2 (Shen et al.).",
    "mad": "(1/K) sum_k |p_k - mean(p)|: mean absolute deviation of the shares (DALL-Eval).",
    "kl_uniform": "sum_k p_k log(K p_k): KL divergence from the uniform distribution, in nats (ITI-GEN).",
    "entropy": "-(sum_k p_k log p_k) / log K: normalised Shannon entropy, 1 = all groups equally often.",
    "fairness_score": "1 - imbalance / (2(K-1)/K^2): imbalance mapped onto [0, 1], 1 = balanced.",
    "imbalance_target": "(1/K) sum_k |p_k - q_k|: mean distance of each group's share from its target share q_k "
    "(equals imbalance for the uniform target; Shen et al. 2024).",
    "kl_target": "sum_k p_k log(p_k / q_k): KL divergence from the target, in nats (equals kl_uniform for the "
    "uniform target); infinite when a group with target share 0 is drawn.",
}


def shares(counts: np.ndarray) -> np.ndarray:
    """Shares of the readable groups from ``[..., K + 1]`` counts (last column: unreadable).

    Rows with no readable image become NaN."""
    c = np.asarray(counts, dtype=np.float64)[..., :-1]
    total = c.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, c / np.where(total > 0, total, 1.0), np.nan)


def uniform(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


def metrics_from_shares(p: np.ndarray, target: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every metric for shares ``p`` of shape ``[..., K]`` (rows summing to 1, or NaN rows), the
    target metrics against ``target`` q (K shares; default uniform).

    Returns arrays of shape ``[...]``. K must be at least 2: a single group has no fairness to
    measure."""
    p = np.asarray(p, dtype=np.float64)
    K = p.shape[-1]
    if K < 2:
        raise ValueError(f"fairness metrics need at least 2 groups, got K={K}")
    q = uniform(K) if target is None else np.asarray(target, dtype=np.float64)
    imbalance = np.abs(p - 1.0 / K).mean(axis=-1)
    # Mean over pairs i<j of |p_i - p_j| in O(K log K): with p sorted ascending, the sum over pairs
    # is sum_k (2k - K + 1) p_(k) (k from 0).
    ps = np.sort(p, axis=-1)
    weights = 2.0 * np.arange(K) - K + 1
    parity_gap = (ps * weights).sum(axis=-1) / (K * (K - 1) / 2.0)
    parity_gap = np.maximum(parity_gap, 0.0)  # rounding can leave -1e-17 on even shares
    mad = np.abs(p - p.mean(axis=-1, keepdims=True)).mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    plogp = np.where(np.isnan(p), np.nan, plogp)
    kl_uniform = plogp.sum(axis=-1) + np.log(K)  # sum p log(K p) = sum p log p + log K (sum p = 1)
    entropy = -plogp.sum(axis=-1) / np.log(K)
    fairness_score = 1.0 - imbalance / (2.0 * (K - 1) / K**2)
    imbalance_target = np.abs(p - q).mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # 0 log(0 / q) = 0; p log(p / 0) = inf for p > 0: a group the target rules out was drawn.
        ratio = np.where(p > 0, np.where(q > 0, p * np.log(np.where(p > 0, p, 1.0) / np.where(q > 0, q, 1.0)), np.inf), 0.0)
    ratio = np.where(np.isnan(p), np.nan, ratio)
    kl_target = ratio.sum(axis=-1)
    return {
        "imbalance": imbalance,
        "parity_gap": parity_gap,
        "mad": mad,
        # Tiny negative values from rounding would read as "better than uniform".
        "kl_uniform": np.maximum(kl_uniform, 0.0) if np.ndim(kl_uniform) else max(float(kl_uniform), 0.0),
        "entropy": np.minimum(entropy, 1.0) if np.ndim(entropy) else min(float(entropy), 1.0),
        "fairness_score": fairness_score,
        "imbalance_target": imbalance_target,
        "kl_target": np.maximum(kl_target, 0.0) if np.ndim(kl_target) else max(float(kl_target), 0.0),
    }


def count_matrix(prompt_codes: np.ndarray, value_codes: np.ndarray, n_prompts: int, k: int) -> np.ndarray:
    """``[P, K + 1]`` counts from integer codes; a value code of -1 (or >= K) means unreadable."""
    v = np.asarray(value_codes, dtype=np.int64)
    v = np.where((v < 0) | (v >= k), k, v)
    flat = np.asarray(prompt_codes, dtype=np.int64) * (k + 1) + v
    return np.bincount(flat, minlength=n_prompts * (k + 1)).reshape(n_prompts, k + 1)


def bootstrap_counts(counts: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``[draws, P, K + 1]`` counts, each prompt's images resampled with replacement."""
    counts = np.asarray(counts, dtype=np.int64)
    n = counts.sum(axis=-1)
    pvals = counts / np.maximum(n, 1)[:, None]
    pvals = pvals / np.maximum(pvals.sum(axis=-1, keepdims=True), 1e-300)
    return rng.multinomial(n, pvals, size=(draws, counts.shape[0]))


def prompt_mean(values: np.ndarray) -> np.ndarray:
    """Unweighted mean over prompts (last axis), ignoring prompts whose value is undefined."""
    v = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(v)
    total = np.where(defined, v, 0.0).sum(axis=-1)
    n = defined.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def interval(draws: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis, ignoring NaN draws."""
    a = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore"):
        if np.all(np.isnan(draws)):
            nan = np.full(draws.shape[1:], np.nan)
            return nan, nan
        if np.isnan(draws).any():
            lo, hi = np.nanquantile(draws, [a, 1.0 - a], axis=0)  # slow path: per column
        else:
            lo, hi = np.quantile(draws, [a, 1.0 - a], axis=0)
    return lo, hi


def metric_range(metric: str, k: int, target: np.ndarray | None = None) -> tuple[float, float]:
    """The smallest and largest value a metric can take with K groups (and target shares)."""
    q_min = 1.0 / k if target is None else float(np.min(target))
    top = {
        "imbalance_target": 2.0 * (1.0 - q_min) / k,  # all mass in the group with the smallest target
        "kl_target": float(-np.log(q_min)) if q_min > 0 else np.inf,
        "imbalance": 2.0 * (k - 1) / k**2,
        "mad": 2.0 * (k - 1) / k**2,
        "parity_gap": 2.0 / k,  # all mass in one group: K-1 of K(K-1)/2 pairs differ by 1
        "kl_uniform": float(np.log(k)),
        "entropy": 1.0,
        "fairness_score": 1.0,
    }[metric]
    return 0.0, top


def basic_interval(estimate, draws: np.ndarray, confidence: float = 0.95, bounds=(-np.inf, np.inf)):
    """Basic bootstrap interval: the draws' percentiles shifted by the bootstrap estimate of bias
    (mean of the draws minus the estimate), clipped to ``bounds``.

    Used for quantities whose plug-in estimate is (nearly) unbiased: the unreadable rate and the
    change between two models. Not for the fairness metrics themselves: their bias is largest where
    the bootstrap cannot see it (a balanced model), see ``dft.evaluate.intervals``."""
    lo_q, hi_q = interval(draws, confidence)
    est = np.asarray(estimate, dtype=np.float64)
    import warnings

    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a prompt with no readable image: NaN, as meant
        bias = np.nanmean(draws, axis=0) - est
    return np.clip(lo_q - bias, *bounds), np.clip(hi_q - bias, *bounds)


def _scalar_interval(estimate, draws: np.ndarray, confidence: float, bounds=(-np.inf, np.inf)) -> tuple[float, float]:
    lo, hi = basic_interval(np.array([estimate]), np.asarray(draws, dtype=np.float64)[:, None], confidence, bounds)
    return float(lo[0]), float(hi[0])


# The inversion simulates this many samples per model of its family (more gives steadier ends).
MAX_INVERSION_SIMS = 400


def score_counts(
    counts: np.ndarray,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    target: np.ndarray | None = None,
    boot: np.ndarray | None = None,
) -> dict:
    """Metrics of one attribute for one model, from its ``[P, K + 1]`` count matrix.

    Returns plain numpy values: ``per_prompt[metric]`` (P,), ``mean[metric]`` (scalar, the plug-in
    estimate), ``floor[metric]`` / ``floor_per_prompt`` (what a model drawing exactly the target
    shows in expectation at these numbers of images), and when ``bootstrap`` > 0: ``mean_ci`` and
    ``per_prompt_ci`` (lo, hi) from test inversion (``dft.evaluate.intervals``), ``corrected`` and
    ``at_floor`` per metric, the unreadable rate with its interval, and ``draws[metric]`` (B,): the
    nonparametric bootstrap of the mean, kept for comparing two models. ``boot`` gives those
    bootstrap counts ``[B, P, K + 1]`` (a paired bootstrap draws them jointly for two models);
    otherwise they are drawn here from ``seed``."""
    from dft.evaluate import intervals as I

    counts = np.asarray(counts, dtype=np.int64)
    k = counts.shape[-1] - 1
    q = uniform(k) if target is None else np.asarray(target, dtype=np.float64)
    fn = lambda p: metrics_from_shares(p, q)  # noqa: E731
    per_prompt = fn(shares(counts))
    n = counts.sum(axis=-1)
    readable = n - counts[:, -1]
    floor_pp = I.floor(readable, q, fn)
    out = {
        "per_prompt": per_prompt,
        "mean": {m: float(prompt_mean(v)) for m, v in per_prompt.items()},
        "floor_per_prompt": floor_pp,
        "floor": {m: float(prompt_mean(np.where(readable > 0, v, np.nan))) for m, v in floor_pp.items()},
        "unreadable_per_prompt": counts[:, -1] / np.maximum(n, 1),
        "unreadable_rate": float(counts[:, -1].sum() / max(int(n.sum()), 1)),
        "readable_per_prompt": readable,
        "draws": {},
    }
    if bootstrap > 0 and counts.shape[0] > 0:
        rng = np.random.default_rng(seed)
        if boot is None:
            boot = bootstrap_counts(counts, bootstrap, rng)
        bm = fn(shares(boot))  # each (B, P)
        out["draws"] = {m: prompt_mean(v) for m, v in bm.items()}
        rate = boot[..., -1].sum(axis=-1) / np.maximum(boot.sum(axis=(-1, -2)), 1)
        out["unreadable_rate_ci"] = _scalar_interval(out["unreadable_rate"], rate, confidence, (0.0, 1.0))
        sims = min(bootstrap, MAX_INVERSION_SIMS)
        inc = {m: DIRECTION[m] == "lower" for m in METRICS}
        mean_inv: dict = {}
        pp_inv: dict = {}
        same = np.allclose(q, uniform(k))
        for center, names in ((uniform(k), [m for m in METRICS if same or m not in TARGET_METRICS]),
                              (q, [] if same else list(TARGET_METRICS))):
            if not names:
                continue
            sub = lambda p, names=names: {m: v for m, v in fn(p).items() if m in names}  # noqa: E731
            mean_inv.update(I.invert(counts, center, sub, inc, sims=sims, seed=seed + 1, confidence=confidence))
            pp_inv.update(I.invert(counts, center, sub, inc, sims=sims, seed=seed + 2, confidence=confidence, per_prompt=True))
        out["mean_ci"] = {m: (float(r["lo"]), float(r["hi"])) for m, r in mean_inv.items()}
        out["corrected"] = {m: float(r["corrected"]) for m, r in mean_inv.items()}
        out["at_floor"] = {m: bool(r["at_floor"]) for m, r in mean_inv.items()}
        out["per_prompt_ci"] = {m: (r["lo"], r["hi"]) for m, r in pp_inv.items()}
        out["per_prompt_corrected"] = {m: r["corrected"] for m, r in pp_inv.items()}
        out["per_prompt_at_floor"] = {m: r["at_floor"] for m, r in pp_inv.items()}
    return out


def paired_bootstrap_counts(joint: np.ndarray, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap counts of two models whose images pair up (same prompt and seed).

    ``joint`` is ``[P, Ka + 1, Kb + 1]``: per prompt, how many image pairs model A read as group i
    and model B as group j (last index: unreadable). Pairs are resampled together within prompts,
    so the two models' resamples keep the pairing's correlation and nothing more. Returns
    ``([draws, P, Ka + 1], [draws, P, Kb + 1])``."""
    joint = np.asarray(joint, dtype=np.int64)
    P, A, B = joint.shape
    flat = bootstrap_counts(joint.reshape(P, A * B), draws, rng).reshape(draws, P, A, B)
    return flat.sum(axis=-1), flat.sum(axis=-2)


def relative_change(base: float, other: float) -> float | None:
    """(other - base) / base; None when base is 0 or either value is undefined or infinite."""
    if base is None or other is None or not np.isfinite(base) or not np.isfinite(other) or base == 0:
        return None
    return float((other - base) / abs(base))


def verdict(metric: str, base: float, other: float, tol: float = 1e-12) -> str:
    """'better', 'worse' or 'same' by the metric's direction; 'n/a' when undefined (or both infinite)."""
    if base is None or other is None or np.isnan(base) or np.isnan(other) or (np.isinf(base) and np.isinf(other)):
        return "n/a"
    if abs(other - base) <= tol:
        return "same"
    lower_better = DIRECTION[metric] == "lower"
    return "better" if (other < base) == lower_better else "worse"


def compare(base: dict, other: dict, confidence: float = 0.95) -> dict:
    """Per metric: both values, the change, the relative change, the verdict, and an interval of
    the change from the two models' bootstrap draws (when both have them).

    The draws must be independent (each model resampled from its own random stream) or paired
    (``paired_bootstrap_counts``): draws that share one stream for two similar models are almost
    the same resample twice, and the interval of their difference collapses onto the observed one."""
    out = {}
    for m in METRICS:
        b, o = base["mean"][m], other["mean"][m]
        row = {
            "base": b,
            "other": o,
            "change": float(o - b) if np.isfinite(b) and np.isfinite(o) else None,
            "relative_change": relative_change(b, o),
            "direction": DIRECTION[m],
            "verdict": verdict(m, b, o),
        }
        db, do = base.get("draws", {}).get(m), other.get("draws", {}).get(m)
        if db is not None and do is not None and len(db) == len(do) and len(db) and np.isfinite(b) and np.isfinite(o):
            with np.errstate(invalid="ignore"):
                lo, hi = _scalar_interval(o - b, do - db, confidence)
            row["change_ci"] = (lo, hi)
            # The change is called significant when its interval excludes zero.
            row["significant"] = bool(lo > 0 or hi < 0)
        out[m] = row
    return out
