"""Score a label table: every metric per attribute, per prompt and averaged, per model, and the
comparison of two models. ``dft fairness LABELS [--json]`` is ``fairness_cli``.

A label table is Parquet or CSV with a ``prompt`` column (optional: all rows are one prompt without
it), an optional ``model`` column, and one column per attribute; a null (or an empty string,
"unreadable", "unknown") is an image whose attribute could not be read. Which columns are
attributes, and their full list of groups, come from the Parquet schema metadata ``dft.attributes``
that ``dft label`` writes; otherwise every text or integer column not known to be something else is
an attribute, and its groups are the values seen (plus the known groups of ``skin_tone``,
``skin_tone_group`` and ``skin_tone_ita_class``). Groups matter: a group nobody was assigned to
still counts in K.

JSON layout (``--json``, and RUN/eval/metrics.json), version 1::

    {"version": 1, "confidence": 0.95, "bootstrap": 1000, "seed": 0,
     "metrics": {"imbalance": {"direction": "lower", "best": 0.0, "description": "..."}, ...},
     "models": {MODEL: {"images": N, "attributes": {ATTR: {
         "groups": ["man", "woman"], "K": 2,
         "images": N, "readable": R, "unreadable": U, "unreadable_rate": 0.1,
         "unreadable_rate_ci": [lo, hi], "unreadable_reasons": {"no_face": 7, ...},
         "counts": {"man": 60, "woman": 30}, "shares": {"man": 0.667, "woman": 0.333},
         "mean": {METRIC: {"value": v, "ci": [lo, hi]}},     # averaged over prompts
         "prompts": [{"prompt": "a photo of a doctor", "images": n, "readable": r,
                      "unreadable_rate": u, "counts": {...}, "shares": {...},
                      "metrics": {METRIC: {"value": v, "ci": [lo, hi]}}}, ...]}}}},
     "comparison": {"base": MODEL_A, "other": MODEL_B, "attributes": {ATTR: {METRIC: {
         "base": v, "other": v, "change": d, "relative_change": d / |base| or null,
         "direction": "lower"|"higher", "verdict": "better"|"worse"|"same"|"n/a",
         "change_ci": [lo, hi], "significant": bool}}}}}

Undefined numbers (a prompt with no readable image, a relative change from zero) are ``null``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dft.evaluate import metrics as M
from dft.evaluate.skin_tone import GROUPS, ITA_CLASSES

log = logging.getLogger(__name__)

METADATA_KEY = b"dft.attributes"
KNOWN_GROUPS = {
    "skin_tone": [str(i) for i in range(1, 11)],
    "skin_tone_group": list(GROUPS),
    "skin_tone_ita_class": list(ITA_CLASSES),
}
NOT_ATTRIBUTES = {
    "key", "model", "prompt", "prompt_id", "image_index", "seed", "neutral_prompt", "template", "prompt_set",
    "settings_hash", "image_format", "width", "height", "image", "path", "source", "label", "__key__", "__url__",
}
NOT_ATTRIBUTE_SUFFIXES = ("_ita", "_reason", "_score", "_confidence", "_answer", "_lab", "_pixels")
UNREADABLE_TOKENS = {"", "unreadable", "unknown", "nan", "none", "null", "n/a"}
DEFAULT_MODEL = "labels"
ALL_PROMPTS = "(all images)"


def read_labels(path: str) -> pa.Table:
    """A label table from Parquet or CSV (local or s3://)."""
    from dft import storage

    if str(path).endswith(".csv"):
        import pyarrow.csv as pacsv

        fs, p = storage.pyarrow_filesystem(path)
        with fs.open_input_stream(p) as f:
            return pacsv.read_csv(f)
    import pyarrow.parquet as pq

    fs, p = storage.pyarrow_filesystem(path)
    return pq.read_table(p, filesystem=fs)


def attribute_groups(table: pa.Table) -> dict[str, list[str] | None]:
    """Attribute columns of a label table and their groups (None: take the values seen)."""
    meta = (table.schema.metadata or {}).get(METADATA_KEY)
    if meta:
        declared = json.loads(meta)
        return {a: [str(g) for g in groups] if groups else None for a, groups in declared.items() if a in table.column_names}
    out: dict[str, list[str] | None] = {}
    for f in table.schema:
        name = f.name
        if name in NOT_ATTRIBUTES or name.startswith("prompt_") or name.endswith(NOT_ATTRIBUTE_SUFFIXES):
            continue
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
            out[name] = KNOWN_GROUPS.get(name)
        elif pa.types.is_null(t) and name in KNOWN_GROUPS:  # a CSV column with nothing readable in it
            out[name] = KNOWN_GROUPS[name]
    return out


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) else pc.cast(col, pa.string())


def encode(col: pa.ChunkedArray, groups: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a column against its groups (-1: unreadable), and the groups."""
    enc = pc.dictionary_encode(_as_text(col)).combine_chunks()
    values = [v if v is None else str(v) for v in enc.dictionary.to_pylist()]
    seen = [v for v in values if v is not None and v.strip().lower() not in UNREADABLE_TOKENS]
    if groups is None:
        groups = sorted(set(seen), key=lambda g: (len(g), g) if g.isdigit() else (0, g))
    index = {g: i for i, g in enumerate(groups)}
    unknown = sorted(set(seen) - set(index))
    if unknown:
        raise ValueError(f"values {unknown[:5]} are not among the declared groups {groups}")
    lut = np.array([index.get(v, -1) if v is not None else -1 for v in values] + [-1], dtype=np.int64)
    idx = pc.fill_null(enc.indices, len(values)).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return lut[idx], list(groups)


def _codes_and_names(col: pa.ChunkedArray | None, n: int, default: str) -> tuple[np.ndarray, list[str]]:
    if col is None:
        return np.zeros(n, np.int64), [default]
    enc = pc.dictionary_encode(_as_text(col)).combine_chunks()
    names = [default if v is None else str(v) for v in enc.dictionary.to_pylist()]
    idx = pc.fill_null(enc.indices, len(names)).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if n and idx.max(initial=0) >= len(names):  # nulls were filled with len(names)
        names.append(default)
    return idx, names


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _metric_block(value, ci=None) -> dict:
    return {"value": _num(value), "ci": None if ci is None else [_num(ci[0]), _num(ci[1])]}


def score_table(
    table: pa.Table,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    attributes: dict[str, list[str] | None] | None = None,
    compare_models: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The fairness result of a label table as a JSON-ready dict (layout in the module docstring)."""
    attributes = attributes if attributes is not None else attribute_groups(table)
    n = table.num_rows
    prompt_codes, prompts = _codes_and_names(table.column("prompt") if "prompt" in table.column_names else None, n, ALL_PROMPTS)
    model_codes, models = _codes_and_names(table.column("model") if "model" in table.column_names else None, n, DEFAULT_MODEL)
    P = len(prompts)
    group = model_codes * P + prompt_codes  # one row of the count matrix per (model, prompt)
    present = np.bincount(group, minlength=len(models) * P).reshape(len(models), P) > 0
    result: dict[str, Any] = {
        "version": 1,
        "confidence": confidence,
        "bootstrap": bootstrap,
        "seed": seed,
        "metrics": {m: {"direction": M.DIRECTION[m], "best": M.BEST[m], "description": M.DESCRIPTION[m]} for m in M.METRICS},
        "models": {},
    }
    raw: dict[str, dict[str, dict]] = {}
    for mi, model in enumerate(models):
        result["models"][model] = {"images": int((model_codes == mi).sum()), "attributes": {}}
        raw[model] = {}
    for attr, groups in attributes.items():
        codes, groups = encode(table.column(attr), groups)
        K = len(groups)
        if K < 2:
            log.warning("attribute %r has %d group(s): no fairness to measure, skipped", attr, K)
            continue
        counts_all = M.count_matrix(group, codes, len(models) * P, K).reshape(len(models), P, K + 1)
        reasons_col = f"{attr}_reason"
        for mi, model in enumerate(models):
            keep = np.flatnonzero(present[mi])
            counts = counts_all[mi, keep]
            scored = M.score_counts(counts, bootstrap=bootstrap, seed=seed, confidence=confidence)
            raw[model][attr] = scored
            total = counts.sum(axis=0)
            readable = int(total[:K].sum())
            block: dict[str, Any] = {
                "groups": groups,
                "K": K,
                "images": int(total.sum()),
                "readable": readable,
                "unreadable": int(total[K]),
                "unreadable_rate": scored["unreadable_rate"],
                "unreadable_rate_ci": list(scored["unreadable_rate_ci"]) if "unreadable_rate_ci" in scored else None,
                "counts": {g: int(c) for g, c in zip(groups, total[:K])},
                "shares": {g: (_num(c / readable) if readable else None) for g, c in zip(groups, total[:K])},
                "mean": {
                    m: _metric_block(scored["mean"][m], scored.get("mean_ci", {}).get(m)) for m in M.METRICS
                },
                "prompts": [],
            }
            if reasons_col in table.column_names:
                mask = pa.array((model_codes == mi) & (codes < 0))
                vc = pc.value_counts(pc.filter(_as_text(table.column(reasons_col)), mask)).to_pylist()
                block["unreadable_reasons"] = {str(d["values"]): int(d["counts"]) for d in vc if d["values"] is not None}
            ppci = scored.get("per_prompt_ci")
            for j, pi in enumerate(keep):
                c = counts[j]
                r = int(c[:K].sum())
                block["prompts"].append(
                    {
                        "prompt": prompts[pi],
                        "images": int(c.sum()),
                        "readable": r,
                        "unreadable_rate": float(c[K] / max(int(c.sum()), 1)),
                        "counts": {g: int(x) for g, x in zip(groups, c[:K])},
                        "shares": {g: (float(x / r) if r else None) for g, x in zip(groups, c[:K])},
                        "metrics": {
                            m: _metric_block(
                                scored["per_prompt"][m][j], None if ppci is None else (ppci[m][0][j], ppci[m][1][j])
                            )
                            for m in M.METRICS
                        },
                    }
                )
            result["models"][model]["attributes"][attr] = block
    pair = compare_models or _default_pair(models)
    if pair:
        a, b = pair
        result["comparison"] = {
            "base": a,
            "other": b,
            "attributes": {
                attr: _jsonable(M.compare(raw[a][attr], raw[b][attr], confidence))
                for attr in raw.get(a, {})
                if attr in raw.get(b, {})
            },
        }
    return result


def _default_pair(models: list[str]) -> tuple[str, str] | None:
    """base vs finetuned when both are there, else the first two models in table order."""
    if "base" in models and "finetuned" in models:
        return ("base", "finetuned")
    return (models[0], models[1]) if len(models) >= 2 else None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return _num(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def format_summary(result: dict) -> str:
    """A plain-text summary: per model and attribute the averaged metrics with intervals."""
    lines = []
    for model, mres in result["models"].items():
        lines.append(f"model {model}: {mres['images']} images")
        for attr, block in mres["attributes"].items():
            lines.append(
                f"  perceived {attr} (K={block['K']}): {len(block['prompts'])} prompts, "
                f"unreadable {block['unreadable_rate']:.1%}"
            )
            for m in M.METRICS:
                v = block["mean"][m]
                ci = v["ci"]
                txt = "n/a" if v["value"] is None else f"{v['value']:.4f}"
                if ci and ci[0] is not None:
                    txt += f"  [{ci[0]:.4f}, {ci[1]:.4f}]"
                lines.append(f"    {m:<15} {txt}")
    comp = result.get("comparison")
    if comp:
        lines.append(f"{comp['other']} vs {comp['base']}:")
        for attr, rows in comp["attributes"].items():
            for m, row in rows.items():
                rel = row["relative_change"]
                rel_txt = "n/a" if rel is None else f"{rel:+.1%}"
                lines.append(f"  {attr:<16} {m:<15} {rel_txt:>8}  {row['verdict']}")
    return "\n".join(lines) + "\n"


def fairness_cli(labels_path: str, as_json: bool = False, bootstrap: int = 1000) -> int:
    """``dft fairness LABELS [--json] [--bootstrap N]``: print the result; exit code 0, or 2 on bad input."""
    try:
        table = read_labels(labels_path)
        result = score_table(table, bootstrap=bootstrap)
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        print(f"dft fairness: {labels_path}: {exc}", file=sys.stderr)
        return 2
    if not any(m["attributes"] for m in result["models"].values()):
        print(f"dft fairness: {labels_path}: no attribute column with at least 2 groups", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if as_json else format_summary(result))
    return 0
