"""Intervals for the fairness metrics that cover the true value, and the finite-sample floor.

Why not the plain bootstrap: every metric here measures a distance from a target (an even share by
default), and the plug-in estimate of a distance is biased away from the target in small samples:
a perfectly balanced model drawing 20 images per prompt shows a gender imbalance of 0.088 on average
(its *floor*), because |p_hat - 0.5| > 0 almost always. A bootstrap interval, shifted or not, sits
around that biased value and misses a true 0 (issue 12 measured 0% coverage at p = 0.5).

What we do instead is invert a test along a one-parameter family of models. For a count matrix
with shares p_j per prompt and a target q, model(lam) draws prompt j at q + lam (p_j - q) (capped
at the edge of the simplex): lam = 0 is the perfectly balanced model, lam = 1 the start, lam > 1
more extreme ones. The start is, per prompt, the observed shares (``directions``) and, for the
mean over prompts, their empirical-Bayes posterior means (``pooled``): observed shares spread more
across prompts than the truth does, and a family built on them over-corrects. For each lam on a grid we simulate the
estimate (``sims`` draws of the same number of readable images per prompt, multinomial) and accept
lam when the observed estimate lies within the central ``confidence`` range of the simulated ones.
The interval is the range of the metric's true value over the accepted models; the corrected
estimate is the model whose simulated median equals the observation (median-unbiased along the
family). Measured coverage is in docs/evaluate.md and tests/unit/test_eval_intervals.py.

Everything is vectorised over leading axes: counts ``[..., P, K + 1]`` give results ``[...]``
(the mean over prompts) and ``[..., P]`` (per prompt), so a simulation study of many replicates
is one call.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Shrink/expand factors of the family; dense up to 1.5 (where the truth almost always lies: a
# sample is more extreme than its model), sparse beyond for prompts far more even than their model.
LAMBDAS = np.array([0.0, 0.25, 0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0])

MetricFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def along_family(p_hat: np.ndarray, center: np.ndarray, lam: float) -> np.ndarray:
    """center + lam (p_hat - center), each row's lam capped where the row would leave the simplex."""
    d = p_hat - center
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = np.where(d < 0, center / np.where(d < 0, -d, 1.0), np.inf).min(axis=-1, keepdims=True)
    t = np.minimum(lam, reach)
    p = np.clip(center + t * d, 0.0, None)
    return p / p.sum(axis=-1, keepdims=True)


def directions(p_hat: np.ndarray, n: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Observed shares, except that a prompt exactly at the target gets a direction of its own.

    Along p_hat - center a prompt seen exactly at the target would stay there for every lam (an
    interval [0, 0]); it moves instead towards the first group by one standard error's worth, so
    its own interval says how far from balanced a model could be and still show this sample."""
    d = p_hat - center
    flat = np.abs(d).sum(axis=-1, keepdims=True) < 1e-12
    e0 = np.zeros_like(center)
    e0[..., 0] = 1.0
    step = (e0 - center) / np.sqrt(np.maximum(n, 1))[..., None]
    return np.where(flat, center + step, p_hat)


def pooled(counts: np.ndarray, center: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Each prompt's shares as the posterior mean under a prior fitted to all prompts (empirical
    Bayes: a nonparametric maximum-likelihood prior whose atoms are the observed shares and the
    target, fitted by EM). Rows stay on the simplex.

    Observed shares are over-dispersed: their spread across prompts is the true spread plus
    sampling noise. A family built on them simulates models more uneven than the truth and, the
    metrics being convex, over-corrects the bias; the posterior means spread about as much as the
    prompts really do, and a prompt whose sample is consistent with the target moves onto it."""
    c = counts[..., :-1].astype(np.float64)  # [..., P, K]
    P, K = c.shape[-2], c.shape[-1]
    n = c.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_hat = np.where(n[..., None] > 0, c / np.maximum(n, 1)[..., None], center)
    if P < 2:
        return p_hat
    atoms = np.concatenate([p_hat, np.broadcast_to(center, p_hat.shape[:-2] + (1, K))], axis=-2)  # [..., A, K]
    with np.errstate(divide="ignore", invalid="ignore"):
        logl = np.einsum("...pk,...ak->...pa", c, np.log(atoms))  # 0 log 0 = 0 by the einsum of zeros
    zero = np.einsum("...pk,...ak->...pa", (c > 0).astype(np.float64), (atoms <= 0).astype(np.float64)) > 0
    logl = np.where(zero, -np.inf, np.nan_to_num(logl, nan=0.0, neginf=-np.inf))
    logl = logl - logl.max(axis=-1, keepdims=True)
    lik = np.exp(logl)  # [..., P, A]
    w = np.full(lik.shape[:-2] + (1, lik.shape[-1]), 1.0 / lik.shape[-1])
    for _ in range(iterations):
        r = w * lik
        r = r / np.maximum(r.sum(axis=-1, keepdims=True), 1e-300)
        w = r.mean(axis=-2, keepdims=True)
    r = w * lik
    r = r / np.maximum(r.sum(axis=-1, keepdims=True), 1e-300)
    out = np.einsum("...pa,...ak->...pk", r, atoms)
    return np.where(n[..., None] > 0, out, center)


def _simulate(n: np.ndarray, p: np.ndarray, sims: int, rng: np.random.Generator) -> np.ndarray:
    """[sims, ..., P, K] shares of ``n`` images drawn from ``p`` (rows with n = 0: NaN)."""
    if p.shape[-1] == 2:  # a binomial draw is the same thing, and faster
        x = rng.binomial(n, p[..., 0], size=(sims, *n.shape)).astype(np.float64)
        c = np.stack([x, n - x], axis=-1)
    else:
        c = rng.multinomial(n, p, size=(sims, *n.shape)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return c / n[..., None]


def _crossing(q: np.ndarray, obs: np.ndarray, first: bool) -> np.ndarray:
    """Fractional grid index where ``q`` [G, ...] crosses ``obs`` [...]: the first index with
    q >= obs (``first``) or the last with q <= obs, linearly interpolated between grid points."""
    G = q.shape[0]
    if first:
        ok = q >= obs
        i = np.where(ok.any(axis=0), np.argmax(ok, axis=0), G - 1)
        prev = np.maximum(i - 1, 0)
        qa, qb = np.take_along_axis(q, prev[None], 0)[0], np.take_along_axis(q, i[None], 0)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where((i > 0) & (qb > qa), (obs - qa) / (qb - qa), 1.0)
        return np.where(i > 0, prev + np.clip(frac, 0.0, 1.0), 0.0)
    ok = q <= obs
    last = np.where(ok.any(axis=0), G - 1 - np.argmax(ok[::-1], axis=0), 0)
    nxt = np.minimum(last + 1, G - 1)
    qa, qb = np.take_along_axis(q, last[None], 0)[0], np.take_along_axis(q, nxt[None], 0)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where((last < G - 1) & (qb > qa), (obs - qa) / (qb - qa), 0.0)
    return last + np.clip(frac, 0.0, 1.0)


def _at(theta: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """theta [G, ...] linearly interpolated at fractional grid positions ``pos`` [...]."""
    G = theta.shape[0]
    lo = np.clip(np.floor(pos).astype(np.int64), 0, G - 1)
    hi = np.minimum(lo + 1, G - 1)
    a = np.take_along_axis(theta, lo[None], 0)[0]
    b = np.take_along_axis(theta, hi[None], 0)[0]
    w = pos - lo
    with np.errstate(invalid="ignore"):
        return np.where(w > 0, a + w * (b - a), a)


def invert(
    counts: np.ndarray,
    center: np.ndarray,
    metric_fn: MetricFn,
    increasing: dict[str, bool],
    sims: int = 400,
    seed: int = 0,
    confidence: float = 0.95,
    per_prompt: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Test-inversion intervals along the family of the module docstring.

    ``metric_fn(shares[..., K]) -> {metric: [...]}``; ``increasing[metric]`` says whether the metric
    grows away from ``center`` (imbalance: True, entropy: False). With ``per_prompt`` the family
    is fitted per prompt (results ``[..., P]``), else to the mean over prompts (results ``[...]``).
    Returns per metric ``lo``, ``hi``, ``corrected`` and ``at_floor`` (the lower end is the
    balanced model's own value: the data cannot tell this model from a balanced one)."""
    counts = np.asarray(counts, dtype=np.int64)
    K = counts.shape[-1] - 1
    center = np.broadcast_to(np.asarray(center, dtype=np.float64), (K,))
    n = counts[..., :K].sum(axis=-1)
    seen = counts[..., :K] / np.maximum(n, 1)[..., None]
    start = directions(np.where(n[..., None] > 0, seen, center), n, center) if per_prompt else pooled(counts, center)
    reduce = (lambda v: v) if per_prompt else _nanmean_last
    obs = {m: reduce(v) for m, v in metric_fn(np.where(n[..., None] > 0, seen, np.nan)).items()}
    a = (1.0 - confidence) / 2.0
    rng = np.random.default_rng(seed)
    theta: dict[str, list] = {m: [] for m in obs}
    qlo: dict[str, list] = {m: [] for m in obs}
    qhi: dict[str, list] = {m: [] for m in obs}
    qmid: dict[str, list] = {m: [] for m in obs}
    for lam in LAMBDAS:
        p_lam = along_family(start, center, lam)
        truth = metric_fn(np.where(n[..., None] > 0, p_lam, np.nan))
        sim = metric_fn(_simulate(n, p_lam, sims, rng))
        for m in obs:
            sign = 1.0 if increasing[m] else -1.0
            s = sign * reduce(sim[m])
            lo_q, mid_q, hi_q = _quantiles(s, [a, 0.5, 1.0 - a])
            theta[m].append(reduce(truth[m]))
            qlo[m].append(lo_q)
            qmid[m].append(mid_q)
            qhi[m].append(hi_q)
    out = {}
    for m in obs:
        sign = 1.0 if increasing[m] else -1.0
        t = np.stack(theta[m])
        o = sign * obs[m]
        # Simulated quantiles are monotone in lam up to Monte Carlo noise; make them so.
        q_hi = np.maximum.accumulate(np.stack(qhi[m]), axis=0)
        q_lo = np.minimum.accumulate(np.stack(qlo[m])[::-1], axis=0)[::-1]
        q_mid = np.maximum.accumulate(np.stack(qmid[m]), axis=0)
        low_pos = _crossing(q_hi, o, first=True)
        high_pos = _crossing(q_lo, o, first=False)
        high_pos = np.maximum(high_pos, low_pos)
        mid_pos = np.clip(_crossing(q_mid, o, first=True), low_pos, high_pos)
        ends = np.stack([_at(t, low_pos), _at(t, high_pos)])
        undefined = np.isnan(obs[m])
        lo, hi = np.where(undefined, np.nan, ends.min(axis=0)), np.where(undefined, np.nan, ends.max(axis=0))
        out[m] = {
            "lo": lo,
            "hi": hi,
            "corrected": np.where(undefined, np.nan, _at(t, mid_pos)),
            "at_floor": (low_pos == 0) & ~undefined,
        }
    return out


def _quantiles(s: np.ndarray, levels: list[float]) -> np.ndarray:
    """Quantiles over the first axis; columns that are all NaN (a prompt without a readable image)
    stay NaN, and infinite values (kl_target) stay infinite, without a warning."""
    import warnings

    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(s, levels, axis=0) if np.isnan(s).any() else np.quantile(s, levels, axis=0)


def _nanmean_last(v: np.ndarray) -> np.ndarray:
    defined = ~np.isnan(v)
    total = np.where(defined, v, 0.0).sum(axis=-1)
    k = defined.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(k > 0, total / np.maximum(k, 1), np.nan)


def floor(n: np.ndarray, center: np.ndarray, metric_fn: MetricFn, sims: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    """Expected value of each metric for a model that draws exactly ``center`` (the target), at
    ``n`` [P] readable images per prompt: per prompt ``[P]`` (NaN where n = 0).

    Exact for K = 2 (a sum over the binomial); for K > 2 a simulation with a fixed seed and
    ``sims`` draws per distinct n (Monte Carlo error about sd / 63)."""
    n = np.asarray(n, dtype=np.int64)
    center = np.asarray(center, dtype=np.float64)
    K = center.shape[-1]
    values: dict[int, dict[str, float]] = {}
    for size in np.unique(n[n > 0]):
        size = int(size)
        if K == 2:
            x = np.arange(size + 1)
            w = binomial_pmf(size, float(center[0]))
            p = np.stack([x / size, 1.0 - x / size], axis=-1)
            ms = metric_fn(p)
            values[size] = {m: float(np.sum(np.where(w > 0, w * np.nan_to_num(v, posinf=0.0), 0.0))) for m, v in ms.items()}
            for m, v in ms.items():  # an infinite value with positive probability: infinite floor
                if np.any(np.isinf(v) & (w > 0)):
                    values[size][m] = float("inf")
        else:
            rng = np.random.default_rng([seed, size])
            p = rng.multinomial(size, center, size=sims) / size
            values[size] = {m: float(np.mean(v)) for m, v in metric_fn(p).items()}
    names = list(metric_fn(center[None]).keys())
    return {m: np.array([values[int(s)][m] if s > 0 else np.nan for s in n]) for m in names}


def binomial_pmf(n: int, p: float) -> np.ndarray:
    """P(X = x) for x = 0..n, X ~ Binomial(n, p), in log space (n up to millions)."""
    x = np.arange(n + 1)
    if p <= 0.0 or p >= 1.0:
        return (x == (n if p >= 1.0 else 0)).astype(np.float64)
    lg = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])  # log k!
    logp = lg[n] - lg - lg[::-1] + x * np.log(p) + (n - x) * np.log1p(-p)
    return np.exp(logp)
