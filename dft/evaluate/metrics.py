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

METRICS = ("imbalance", "parity_gap", "mad", "kl_uniform", "entropy", "fairness_score")

# Direction and best value of each metric; used by the model comparison and the report.
DIRECTION = {
    "imbalance": "lower",
    "parity_gap": "lower",
    "mad": "lower",
    "kl_uniform": "lower",
    "entropy": "higher",
    "fairness_score": "higher",
}
BEST = {"imbalance": 0.0, "parity_gap": 0.0, "mad": 0.0, "kl_uniform": 0.0, "entropy": 1.0, "fairness_score": 1.0}
DESCRIPTION = {
    "imbalance": "(1/K) sum_k |p_k - 1/K|: mean distance of each group's share from an even share (HEIM).",
    "parity_gap": "|p_1 - p_2| for K=2, mean |p_i - p_j| over pairs for K>2 (Shen et al.).",
    "mad": "(1/K) sum_k |p_k - mean(p)|: mean absolute deviation of the shares (DALL-Eval).",
    "kl_uniform": "sum_k p_k log(K p_k): KL divergence from the uniform distribution, in nats (ITI-GEN).",
    "entropy": "-(sum_k p_k log p_k) / log K: normalised Shannon entropy, 1 = all groups equally often.",
    "fairness_score": "1 - imbalance / (2(K-1)/K^2): imbalance mapped onto [0, 1], 1 = balanced.",
}


def shares(counts: np.ndarray) -> np.ndarray:
    """Shares of the readable groups from ``[..., K + 1]`` counts (last column: unreadable).

    Rows with no readable image become NaN."""
    c = np.asarray(counts, dtype=np.float64)[..., :-1]
    total = c.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, c / np.where(total > 0, total, 1.0), np.nan)


def metrics_from_shares(p: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for shares ``p`` of shape ``[..., K]`` (rows summing to 1, or NaN rows).

    Returns arrays of shape ``[...]``. K must be at least 2: a single group has no fairness to
    measure."""
    p = np.asarray(p, dtype=np.float64)
    K = p.shape[-1]
    if K < 2:
        raise ValueError(f"fairness metrics need at least 2 groups, got K={K}")
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
    return {
        "imbalance": imbalance,
        "parity_gap": parity_gap,
        "mad": mad,
        # Tiny negative values from rounding would read as "better than uniform".
        "kl_uniform": np.maximum(kl_uniform, 0.0) if np.ndim(kl_uniform) else max(float(kl_uniform), 0.0),
        "entropy": np.minimum(entropy, 1.0) if np.ndim(entropy) else min(float(entropy), 1.0),
        "fairness_score": fairness_score,
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


def metric_range(metric: str, k: int) -> tuple[float, float]:
    """The smallest and largest value a metric can take with K groups."""
    top = {
        "imbalance": 2.0 * (k - 1) / k**2,
        "mad": 2.0 * (k - 1) / k**2,
        "parity_gap": 2.0 / k,  # all mass in one group: K-1 of K(K-1)/2 pairs differ by 1
        "kl_uniform": float(np.log(k)),
        "entropy": 1.0,
        "fairness_score": 1.0,
    }[metric]
    return 0.0, top


def basic_interval(estimate, draws: np.ndarray, confidence: float = 0.95, bounds=(-np.inf, np.inf)):
    """Bias-corrected percentile interval: the draws' percentiles shifted by the bootstrap estimate
    of bias (mean of the draws minus the estimate), clipped to ``bounds``.

    The plug-in estimates here are biased in small samples (a resample of n images from a prompt is
    less even than the prompt itself, so imbalance grows): plain percentiles of the draws then sit
    beside the estimate, sometimes wholly above it. Shifting them by the bias puts them back around it."""
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


def score_counts(counts: np.ndarray, bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Metrics of one attribute for one model, from its ``[P, K + 1]`` count matrix.

    Returns plain numpy values: ``per_prompt[metric]`` (P,), ``mean[metric]`` (scalar),
    ``per_prompt_ci``/``mean_ci`` (lo, hi) when ``bootstrap`` > 0, the unreadable rate overall and
    per prompt, and ``draws[metric]`` (B,) of the mean, kept for comparing two models."""
    counts = np.asarray(counts, dtype=np.int64)
    k = counts.shape[-1] - 1
    per_prompt = metrics_from_shares(shares(counts))
    n = counts.sum(axis=-1)
    out = {
        "per_prompt": per_prompt,
        "mean": {m: float(prompt_mean(v)) for m, v in per_prompt.items()},
        "unreadable_per_prompt": counts[:, -1] / np.maximum(n, 1),
        "unreadable_rate": float(counts[:, -1].sum() / max(int(n.sum()), 1)),
        "readable_per_prompt": n - counts[:, -1],
        "draws": {},
    }
    if bootstrap > 0 and counts.shape[0] > 0:
        rng = np.random.default_rng(seed)
        boot = bootstrap_counts(counts, bootstrap, rng)
        bm = metrics_from_shares(shares(boot))  # each (B, P)
        out["draws"] = {m: prompt_mean(v) for m, v in bm.items()}
        out["mean_ci"] = {
            m: _scalar_interval(out["mean"][m], out["draws"][m], confidence, metric_range(m, k)) for m in bm
        }
        out["per_prompt_ci"] = {
            m: basic_interval(per_prompt[m], v, confidence, metric_range(m, k)) for m, v in bm.items()
        }
        rate = boot[..., -1].sum(axis=-1) / np.maximum(boot.sum(axis=(-1, -2)), 1)
        out["unreadable_rate_ci"] = _scalar_interval(out["unreadable_rate"], rate, confidence, (0.0, 1.0))
    return out


def relative_change(base: float, other: float) -> float | None:
    """(other - base) / base; None when base is 0 or either value is undefined."""
    if base is None or other is None or np.isnan(base) or np.isnan(other) or base == 0:
        return None
    return float((other - base) / abs(base))


def verdict(metric: str, base: float, other: float, tol: float = 1e-12) -> str:
    """'better', 'worse' or 'same' by the metric's direction; 'n/a' when undefined."""
    if base is None or other is None or np.isnan(base) or np.isnan(other):
        return "n/a"
    if abs(other - base) <= tol:
        return "same"
    lower_better = DIRECTION[metric] == "lower"
    return "better" if (other < base) == lower_better else "worse"


def compare(base: dict, other: dict, confidence: float = 0.95) -> dict:
    """Per metric: both values, the change, the relative change, the verdict, and an interval of
    the change from the two models' independent bootstrap draws (when both have them)."""
    out = {}
    for m in METRICS:
        b, o = base["mean"][m], other["mean"][m]
        row = {
            "base": b,
            "other": o,
            "change": None if np.isnan(b) or np.isnan(o) else float(o - b),
            "relative_change": relative_change(b, o),
            "direction": DIRECTION[m],
            "verdict": verdict(m, b, o),
        }
        db, do = base.get("draws", {}).get(m), other.get("draws", {}).get(m)
        if db is not None and do is not None and len(db) == len(do) and len(db):
            lo, hi = _scalar_interval(o - b, do - db, confidence)
            row["change_ci"] = (lo, hi)
            # The change is called significant when its interval excludes zero.
            row["significant"] = bool(lo > 0 or hi < 0)
        out[m] = row
    return out
