"""Audit a reader against images whose true attributes are known: ``dft audit-reader``.

A reader that cannot see some groups biases every fairness number it feeds (unreadable images are
left out of the shares, so a tone-dependent unreadable rate pushes the shares toward the tones it
reads). The audit says, per attribute: accuracy (exact, and within one step on ordered scales such as
the Monk tones), the confusion matrix, and the unreadable rate per true class and per coarse group,
each with a Wilson interval, and a verdict: ``fail`` when the unreadable rate or the accuracy of two
coarse groups (or true classes, where an attribute has no coarse groups) differ by more than
``tolerance``. Images whose truth is ``none`` (no face) should be unreadable; how many were read
anyway is the ``false_reading_rate``.

The truth table is CSV: a ``key`` or ``file`` column naming the image (the key is the file's path
under the folder without its extension; ``file`` may be that path or its base name), and one column
per attribute with the true value; ``none`` or empty means the image has no face. JSON layout::

    {"version": 1, "images": N, "tolerance": 0.1, "confidence": 0.95, "readers": [...],
     "attributes": {ATTR: {
        "ordered": true, "faces": F, "no_face": Z,
        "confusion": {"true": [classes, ("none")], "predicted": [groups..., "unreadable"],
                      "counts": [[int, ...], ...]},          # rows true, columns predicted
        "accuracy": {"value": a, "ci": [lo, hi], "n": F},    # faces read as their class / faces
        "within_one": {...} or null, "accuracy_readable": {...}, "unreadable": {...},
        "false_reading_rate": {...} or null,                  # no-face images that got a reading
        "unreadable_reasons": {"no_face": 3, ...},
        "by_class": {CLASS: {"n": n, "accuracy": {...}, "within_one": {...}, "unreadable": {...}}},
        "by_group": {GROUP: {...}} or null,                   # skin_tone: lighter, medium, darker
        "verdict": {"status": "pass"|"fail", "compared": "groups"|"classes", "tolerance": 0.1,
                    "checks": [{"measure": "unreadable", "max": .., "min": .., "spread": ..,
                                "worst": G, "best": G, "difference_ci": [lo, hi], "ok": bool}],
                    "text": "..."}}}}

No Ray here: the images are read in this process by the same reader chain as ``dft label``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import posixpath

import numpy as np

from dft.errors import DftError

log = logging.getLogger(__name__)

NO_FACE = "none"
UNREADABLE = "unreadable"
NO_FACE_TOKENS = {"", "none", "no_face", "noface", "null", "nan", "n/a"}
ID_COLUMNS = ("key", "file", "path", "image")
# Attributes whose groups are an ordered scale (within one step means something), and coarse groups.
ORDERED = {"skin_tone", "skin_tone_group", "skin_tone_ita_class"}


class TruthError(DftError):
    """The truth table cannot be used (no id column, no attribute, ids that match no image)."""


def wilson(k: int, n: int, confidence: float = 0.95) -> dict:
    """A proportion k/n with its Wilson score interval (good at 0, 1 and small n); n = 0 gives nulls."""
    if n <= 0:
        return {"value": None, "ci": [None, None], "k": 0, "n": 0}
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"value": p, "ci": [max(0.0, centre - half), min(1.0, centre + half)], "k": int(k), "n": int(n)}


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def difference_ci(a: dict, b: dict) -> list[float | None]:
    """Newcombe's interval of a difference of two proportions from their Wilson intervals."""
    if a["value"] is None or b["value"] is None:
        return [None, None]
    pa, (la, ua) = a["value"], a["ci"]
    pb, (lb, ub) = b["value"], b["ci"]
    d = pa - pb
    return [d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2), d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)]


def read_truth(path: str) -> tuple[str, list[dict]]:
    """(id column, rows) of a truth CSV (local or s3://)."""
    from dft import storage

    if not storage.exists(path):
        raise TruthError(f"truth table {path}: no such file")
    rows = list(csv.DictReader(io.StringIO(storage.read_text(path))))
    if not rows:
        raise TruthError(f"truth table {path}: no rows")
    cols = list(rows[0])
    id_col = next((c for c in ID_COLUMNS if c in cols), None)
    if id_col is None:
        raise TruthError(f"truth table {path}: needs a 'key' or 'file' column naming each image (has {cols})")
    return id_col, rows


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in posixpath.basename(name) else name


def match_truth(labels: list[dict], rows: list[dict], id_col: str) -> list[tuple[dict, dict]]:
    """Pairs (label row, truth row). A truth id matches a label's key, its file path, or their base
    names; a truth row that matches no image is an error (a wrong folder or a typo must not shrink
    the audit silently)."""
    index: dict[str, dict] = {}
    for lab in labels:
        for name in (lab.get("key"), lab.get("path")):
            if name:
                for alias in (name, _stem(name), posixpath.basename(name), _stem(posixpath.basename(name))):
                    index.setdefault(str(alias), lab)
    pairs, missing = [], []
    for row in rows:
        ident = str(row.get(id_col) or "").strip()
        lab = index.get(ident) or index.get(_stem(ident)) or index.get(posixpath.basename(_stem(ident)))
        if lab is None:
            missing.append(ident)
        else:
            pairs.append((lab, row))
    if missing:
        raise TruthError(
            f"{len(missing)} of {len(rows)} truth rows match no image (first: {missing[:5]}); the "
            f"'{id_col}' column must name images under the folder (key = path without extension)"
        )
    return pairs


def _norm(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    s = str(value).strip()
    if s.endswith(".0") and s[:-2].isdigit():  # 3.0 from a float column is the group "3"
        s = s[:-2]
    return s


def coarse_group(attr: str, value: str) -> str | None:
    """The coarse group of a true class, for attributes that have them (the Monk tones)."""
    if attr == "skin_tone":
        from dft.evaluate.skin_tone import mst_group

        try:
            return mst_group(int(value))
        except ValueError:
            return None
    return None


def audit_attribute(attr: str, truth: list[str | None], predicted: list[str | None], groups: list[str],
                    reasons: list[str | None] | None = None, tolerance: float = 0.10,
                    confidence: float = 0.95) -> dict:
    """The audit of one attribute from true values (None = no face) and readings (None = unreadable)."""
    groups = [str(g) for g in groups]
    seen = [t for t in truth if t is not None]
    extra = sorted({t for t in seen if t not in groups})
    if extra:
        log.warning("%s: true classes %s are not among the reader's groups %s", attr, extra, groups)
    classes = [g for g in groups if g in set(seen)] + extra
    ordered = attr in ORDERED
    pos = {g: i for i, g in enumerate(groups)}
    true_rows = classes + ([NO_FACE] if any(t is None for t in truth) else [])
    pred_cols = groups + [p for p in sorted({p for p in predicted if p is not None} - set(groups))] + [UNREADABLE]
    ri, ci = {c: i for i, c in enumerate(true_rows)}, {c: i for i, c in enumerate(pred_cols)}
    counts = np.zeros((len(true_rows), len(pred_cols)), dtype=int)
    for t, p in zip(truth, predicted):
        counts[ri[NO_FACE if t is None else t], ci[UNREADABLE if p is None else p]] += 1

    def block(idx: list[int]) -> dict:
        n = len(idx)
        exact = sum(predicted[i] == truth[i] for i in idx)
        unread = sum(predicted[i] is None for i in idx)
        out = {"n": n, "accuracy": wilson(exact, n, confidence), "unreadable": wilson(unread, n, confidence),
               "accuracy_readable": wilson(exact, n - unread, confidence), "within_one": None}
        if ordered:
            near = sum(
                predicted[i] is not None and truth[i] in pos and predicted[i] in pos
                and abs(pos[predicted[i]] - pos[truth[i]]) <= 1
                for i in idx
            )
            out["within_one"] = wilson(near, n, confidence)
        return out

    faces = [i for i, t in enumerate(truth) if t is not None]
    empty = [i for i, t in enumerate(truth) if t is None]
    overall = block(faces)
    by_class = {c: block([i for i in faces if truth[i] == c]) for c in classes}
    grouped: dict[str, list[int]] = {}
    for i in faces:
        g = coarse_group(attr, truth[i])
        if g is not None:
            grouped.setdefault(g, []).append(i)
    by_group = {g: block(idx) for g, idx in grouped.items()} or None
    why: dict[str, int] = {}
    for i in faces:
        if predicted[i] is None and reasons is not None:
            why[str(reasons[i])] = why.get(str(reasons[i]), 0) + 1
    result = {
        "ordered": ordered, "faces": len(faces), "no_face": len(empty),
        "confusion": {"true": true_rows, "predicted": pred_cols, "counts": counts.tolist()},
        "accuracy": overall["accuracy"], "within_one": overall["within_one"],
        "accuracy_readable": overall["accuracy_readable"], "unreadable": overall["unreadable"],
        "false_reading_rate": wilson(sum(predicted[i] is not None for i in empty), len(empty), confidence) if empty else None,
        "unreadable_reasons": dict(sorted(why.items())),
        "unreadable_by_class": {c: b["unreadable"] for c, b in by_class.items()},
        "by_class": by_class, "by_group": by_group,
    }
    result["verdict"] = verdict(by_group or by_class, "groups" if by_group else "classes", ordered, tolerance)
    return result


def verdict(blocks: dict[str, dict], compared: str, ordered: bool, tolerance: float) -> dict:
    """``fail`` when the unreadable rate or the accuracy (within one on ordered scales) of the best and
    the worst class differ by more than ``tolerance``; the interval of that difference says whether
    the gap is also beyond chance. On ordered scales the exact accuracy is checked too, but only for
    information (``"informational": true``): neighbouring Monk tones 1-4 differ by a few L* units,
    so exact accuracy there measures the lighting as much as the reader."""
    measures = [("unreadable", "lower"), ("within_one" if ordered else "accuracy", "higher")]
    if ordered:
        measures.append(("accuracy", "higher"))
    checks = []
    for measure, better in measures:
        vals = {c: b[measure] for c, b in blocks.items() if b.get(measure) and b[measure]["value"] is not None}
        if len(vals) < 2:
            continue
        hi = max(vals, key=lambda c: vals[c]["value"])
        lo = min(vals, key=lambda c: vals[c]["value"])
        worst, best = (hi, lo) if better == "lower" else (lo, hi)
        spread = vals[hi]["value"] - vals[lo]["value"]
        checks.append({
            "measure": measure, "max": vals[hi]["value"], "min": vals[lo]["value"], "spread": spread,
            "worst": worst, "best": best, "difference_ci": difference_ci(vals[hi], vals[lo]),
            "ok": spread <= tolerance + 1e-12, "informational": ordered and measure == "accuracy",
        })
    failed = [c for c in checks if not c["ok"] and not c["informational"]]
    noted = [c for c in checks if not c["ok"] and c["informational"]]
    one = {"classes": "class", "groups": "group"}.get(compared, compared)
    if not checks:
        text = f"not judged: fewer than two {compared} with images"
    elif failed:
        text = "; ".join(
            f"{c['measure']} differs by {c['spread']:.2f} between {one} {c['worst']} "
            f"({c['max' if c['measure'] == 'unreadable' else 'min']:.2f}) "
            f"and {c['best']} ({c['min' if c['measure'] == 'unreadable' else 'max']:.2f}), more than {tolerance:.2f}"
            + (" (beyond chance)" if c["difference_ci"][0] is not None and c["difference_ci"][0] > 0
               else " (within chance at this n)")
            for c in failed
        )
    else:
        text = f"unreadable rate and {'within-one ' if ordered else ''}accuracy within {tolerance:.2f} across {compared}"
    for c in noted:
        text += (f"; exact accuracy differs by {c['spread']:.2f} ({c['worst']} {c['min']:.2f}, {c['best']} "
                 f"{c['max']:.2f}), for information: within one step is what is judged")
    return {"status": "fail" if failed else ("pass" if checks else "n/a"), "compared": compared,
            "tolerance": tolerance, "checks": checks, "text": text}


def audit_labels(labels: list[dict], truth_rows: list[dict], id_col: str, attributes: dict[str, list[str] | None],
                 tolerance: float = 0.10, confidence: float = 0.95) -> dict:
    """The audit JSON from label rows (as ``dft label`` writes them) and truth rows."""
    pairs = match_truth(labels, truth_rows, id_col)
    truth_cols = [c for c in truth_rows[0] if c not in ID_COLUMNS]
    audited = [a for a in truth_cols if a in attributes]
    if not audited:
        raise TruthError(
            f"the truth table's columns {truth_cols} name no attribute the readers write ({sorted(attributes)})"
        )
    skipped = [a for a in truth_cols if a not in attributes]
    if skipped:
        log.info("truth columns not read by these readers (not audited): %s", skipped)
    out = {"version": 1, "images": len(pairs), "tolerance": tolerance, "confidence": confidence,
           "not_audited": skipped, "attributes": {}}
    for a in audited:
        truth = [None if (_norm(t[a]) or "").lower() in NO_FACE_TOKENS else _norm(t[a]) for _, t in pairs]
        pred = [_norm(lab.get(a)) for lab, _ in pairs]
        pred = [None if p is None or p.lower() in ("", UNREADABLE) else p for p in pred]
        reasons = [lab.get(f"{a}_reason") for lab, _ in pairs]
        groups = list(attributes[a] or sorted({p for p in pred if p is not None} | {t for t in truth if t is not None}))
        out["attributes"][a] = audit_attribute(a, truth, pred, groups, reasons, tolerance, confidence)
    return out


def audit_reader(images: str, truth: str, reader_cfgs, tolerance: float = 0.10, confidence: float = 0.95,
                 batch_size: int = 32) -> dict:
    """Read every image under ``images`` with the readers (in this process) and audit them against
    the truth CSV."""
    from dft.evaluate.labels import label_local

    id_col, rows = read_truth(truth)
    table = label_local(images, reader_cfgs, batch_size=batch_size, progress=False)
    import json

    from dft.evaluate.fairness import METADATA_KEY

    attributes = json.loads(table.schema.metadata[METADATA_KEY])
    result = audit_labels(table.to_pylist(), rows, id_col, attributes, tolerance, confidence)
    result["readers"] = [c.model_dump(exclude_defaults=True) for c in reader_cfgs]
    return result
