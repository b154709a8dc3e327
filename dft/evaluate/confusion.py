"""Shares corrected for the reader's measured confusion matrix (``dft fairness --reader-audit``).

A reader that calls some darker faces "medium", or cannot read them at all, moves the shares it
reports. With an audit of the reader on images of known truth (``dft audit-reader --json``:
``{"attributes": {ATTR: {"confusion": {"true": [...], "predicted": [...], "counts": [[...]]}}}}``,
rows the true class, columns the predicted one), the reported distribution r of a prompt is
C^T p, where C[i, j] = P(read as j | truly i) and p are the true shares. We estimate p by maximum
likelihood on the simplex (EM for misclassified multinomial counts: p_i <- sum_j r_j C_ij p_i /
(C^T p)_j), which is the constrained inversion of C without negative shares.

A predicted class that is not a group of the attribute ("unreadable", "no_face", null) is the
unreadable column of the label table: then the tone-dependent unreadable rate is corrected too.
Intervals resample both the label counts (within prompts) and the audit's counts (within each
true class), so they carry the audit's own uncertainty; they are percentile intervals of the
corrected estimate, whose coverage has not been measured (docs/evaluate.md says so).
"""

from __future__ import annotations

import json

import numpy as np

from dft.errors import DftError

UNREADABLE_NAMES = {"", "unreadable", "unknown", "none", "null", "n/a", "no_face", "no_skin", "overexposed"}


class AuditError(DftError, ValueError):
    """A reader audit that cannot correct this attribute."""


def read_audit(text: str) -> dict[str, dict]:
    """Per attribute: ``{"true": [...], "predicted": [...], "counts": int array [T, R]}``."""
    data = json.loads(text)
    out = {}
    for attr, block in (data.get("attributes") or {}).items():
        conf = (block or {}).get("confusion")
        if not conf:
            continue
        counts = np.asarray(conf["counts"], dtype=np.int64)
        true, pred = [str(t) for t in conf["true"]], ["" if p is None else str(p) for p in conf["predicted"]]
        if counts.shape != (len(true), len(pred)) or (counts < 0).any():
            raise AuditError(f"reader audit, {attr}: counts must be a {len(true)} x {len(pred)} matrix of counts >= 0")
        out[attr] = {"true": true, "predicted": pred, "counts": counts}
    return out


def align(audit: dict, groups: list[str], attr: str) -> tuple[np.ndarray, bool]:
    """The audit's counts as ``[K, K + 1]`` over the attribute's groups (true rows; predicted
    columns: the groups, then unreadable), and whether the audit measured unreadable reads."""
    true, pred, counts = audit["true"], audit["predicted"], audit["counts"]
    missing = [g for g in groups if g not in true]
    extra = [t for t in true if t not in groups]
    if missing or extra:
        raise AuditError(
            f"reader audit, {attr}: true classes {true} must be the attribute's groups {groups} "
            f"(missing {missing}, unknown {extra})"
        )
    out = np.zeros((len(groups), len(groups) + 1), dtype=np.int64)
    measured_unreadable = False
    for j, p in enumerate(pred):
        if p in groups:
            col = groups.index(p)
        elif p.strip().lower() in UNREADABLE_NAMES:
            col, measured_unreadable = len(groups), True
        else:
            raise AuditError(f"reader audit, {attr}: predicted class {p!r} is neither a group {groups} nor unreadable")
        for i, t in enumerate(true):
            out[groups.index(t), col] += counts[i, j]
    if (out.sum(axis=1) == 0).any():
        per_true = dict(zip(groups, out.sum(axis=1).tolist()))
        raise AuditError(f"reader audit, {attr}: a true class has no audited image: {per_true}")
    return out, measured_unreadable


def corrected_shares(counts: np.ndarray, confusion: np.ndarray, with_unreadable: bool, iterations: int = 300) -> np.ndarray:
    """True shares ``[..., K]`` from reported counts ``[..., K + 1]`` and a confusion matrix
    ``[..., K, K + 1]`` of counts (both may carry leading bootstrap axes). Rows with nothing to
    correct from are NaN."""
    counts = np.asarray(counts, dtype=np.float64)
    conf = np.asarray(confusion, dtype=np.float64)
    if not with_unreadable:  # the audit knows nothing of unreadable images: condition on readable
        counts, conf = counts[..., :-1], conf[..., :-1]
    C = conf / np.maximum(conf.sum(axis=-1, keepdims=True), 1e-300)  # P(read j | true i)
    C = C[..., None, :, :] if C.ndim == counts.ndim else C  # one matrix per bootstrap draw, shared by prompts
    total = counts.sum(axis=-1, keepdims=True)
    r = counts / np.maximum(total, 1e-300)
    K = C.shape[-2]
    p = np.full(r.shape[:-1] + (K,), 1.0 / K)
    for _ in range(iterations):
        reported = np.einsum("...i,...ij->...j", p, C)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(reported > 0, r / reported, 0.0)
        p = p * np.einsum("...ij,...j->...i", C, ratio)
        p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
    return np.where(total > 0, p, np.nan)


def bootstrap_confusion(confusion: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``[draws, K, K + 1]``: each true class's audited images resampled with replacement."""
    n = confusion.sum(axis=-1)
    return rng.multinomial(n, confusion / np.maximum(n, 1)[:, None], size=(draws, len(n)))


def corrected_block(
    counts: np.ndarray, groups: list[str], audit: dict, attr: str, target: np.ndarray | None,
    bootstrap: int, seed: int, confidence: float = 0.95,
) -> dict:
    """The JSON block ``reader_corrected`` of one model and attribute, from its ``[P, K + 1]``
    counts: corrected shares over all its images and every metric averaged over prompts, each with
    a percentile interval over joint resamples of the labels and the audit."""
    from dft.evaluate import metrics as M

    conf, with_unreadable = align(audit, groups, attr)
    q = M.uniform(len(groups)) if target is None else target
    pooled = corrected_shares(counts.sum(axis=0), conf, with_unreadable)
    per_prompt = M.metrics_from_shares(corrected_shares(counts, conf, with_unreadable), q)
    out = {
        "audited_images": int(conf.sum()),
        "unreadable_corrected": with_unreadable,
        "shares": {g: _num(v) for g, v in zip(groups, pooled)},
        "mean": {m: {"value": _num(M.prompt_mean(v)), "ci": None} for m, v in per_prompt.items()},
    }
    if bootstrap > 0 and counts.shape[0]:
        rng = np.random.default_rng(seed)
        B = min(bootstrap, M.MAX_INVERSION_SIMS)
        boot = M.bootstrap_counts(counts, B, rng)
        cboot = bootstrap_confusion(conf, B, rng)
        shares_b = corrected_shares(boot.sum(axis=1), cboot, with_unreadable)
        lo, hi = M.interval(shares_b, confidence)
        out["shares_ci"] = {g: [_num(a), _num(b)] for g, a, b in zip(groups, lo, hi)}
        mb = M.metrics_from_shares(corrected_shares(boot, cboot, with_unreadable), q)
        for m, v in mb.items():
            lo, hi = M.interval(M.prompt_mean(v)[:, None], confidence)
            out["mean"][m]["ci"] = [_num(lo[0]), _num(hi[0])]
    return out


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None
