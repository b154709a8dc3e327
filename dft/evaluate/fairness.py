"""Score a label table: every metric per attribute, per prompt and averaged, per model, and the
comparison of two models. ``dft fairness LABELS [--json]`` (dft/cli/evaluate.py) prints it.

A label table is Parquet or CSV with a ``prompt`` column (optional: all rows are one prompt without
it), an optional ``model`` column, and one column per attribute; a null (or an empty string,
"unreadable", "unknown") is an image whose attribute could not be read. Which columns are
attributes, and their full list of groups, come from the Parquet schema metadata ``dft.attributes``
that ``dft label`` writes (for CSV, its sidecar ``LABELS.csv.groups.json``); otherwise every text or
integer column not known to be something else is an attribute, and its groups are the values seen
(or the known groups of ``gender``, ``skin_tone``, ``skin_tone_group``, ``skin_tone_ita_class``).
Groups matter: a group nobody was assigned to still counts in K (``dft.evaluate.attributes``).

Intervals of the metrics come from test inversion and cover the true value, also next to a
balanced model (``dft.evaluate.intervals``); ``floor`` is what a model drawing exactly the target
shares shows in expectation at these numbers of images, ``corrected`` the estimate with that
small-sample bias taken out, ``at_floor`` true when the value cannot be told apart from the floor.
Two models are compared with a paired bootstrap when their images pair up (every (prompt, seed)
once per model, the same set for both: the evaluate stage's case), else with independent streams.

JSON layout (``--json``, and RUN/eval/metrics.json), version 1::

    {"version": 1, "confidence": 0.95, "bootstrap": 1000, "seed": 0,
     "metrics": {"imbalance": {"direction": "lower", "best": 0.0, "description": "..."}, ...},
     "models": {MODEL: {"images": N, "attributes": {ATTR: {
         "groups": ["man", "woman"], "K": 2, "target": {"man": 0.5, "woman": 0.5},
         "parts": ["gender", "skin_tone_group"],              # joint attributes only
         "images": N, "readable": R, "unreadable": U, "unreadable_rate": 0.1,
         "unreadable_rate_ci": [lo, hi], "unreadable_reasons": {"no_face": 7, ...},
         "counts": {"man": 60, "woman": 30}, "shares": {"man": 0.667, "woman": 0.333},
         "mean": {METRIC: {"value": v, "ci": [lo, hi], "floor": f, "corrected": c,
                           "at_floor": bool}},                  # averaged over prompts
         "prompts": [{"prompt": "a photo of a doctor", "images": n, "readable": r,
                      "unreadable_rate": u, "counts": {...}, "shares": {...},
                      "metrics": {METRIC: {"value": v, "ci": [lo, hi], "floor": f,
                                           "corrected": c, "at_floor": bool}}}, ...]}}}},
     "comparison": {"base": MODEL_A, "other": MODEL_B, "resampling": "paired"|"independent",
                    "attributes": {ATTR: {METRIC: {
         "base": v, "other": v, "change": d, "relative_change": d / |base| or null,
         "direction": "lower"|"higher", "verdict": "better"|"worse"|"same"|"n/a",
         "change_ci": [lo, hi], "significant": bool}}}}}

Undefined numbers (a prompt with no readable image, a relative change from zero) are ``null``; an
infinite one (``kl_target`` when a group whose target share is 0 was drawn) is ``null`` with
``"infinite": true`` beside it. Metrics: imbalance, parity_gap, mad, kl_uniform, entropy,
fairness_score, imbalance_target, kl_target (``dft.evaluate.metrics``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dft.errors import InputError
from dft.evaluate import attributes as A
from dft.evaluate import metrics as M
from dft.evaluate.attributes import KNOWN_GROUPS

log = logging.getLogger(__name__)

METADATA_KEY = b"dft.attributes"
NOT_ATTRIBUTES = {
    "key", "model", "prompt", "prompt_id", "image_index", "seed", "neutral_prompt", "template", "prompt_set",
    "settings_hash", "image_format", "width", "height", "image", "path", "source", "label", "__key__", "__url__",
}
NOT_ATTRIBUTE_SUFFIXES = ("_ita", "_reason", "_score", "_confidence", "_answer", "_lab", "_pixels")
UNREADABLE_TOKENS = {"", "unreadable", "unknown", "nan", "none", "null", "n/a"}
DEFAULT_MODEL = "labels"
ALL_PROMPTS = "(all images)"


def read_labels(path: str) -> pa.Table:
    """A label table from Parquet or CSV (local or s3://); a CSV's groups sidecar becomes the
    table's ``dft.attributes`` metadata, as in Parquet."""
    from dft import storage

    if str(path).endswith(".csv"):
        import pyarrow.csv as pacsv

        fs, p = storage.pyarrow_filesystem(path)
        with fs.open_input_stream(p) as f:
            table = pacsv.read_csv(f)
        side = A.sidecar_uri(path)
        if storage.exists(side):
            declared = A.parse_sidecar(storage.read_text(side))
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(declared).encode()})
        return table
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
            if name in A.LENIENT_KNOWN and not _values_within(table.column(name), KNOWN_GROUPS[name]):
                out[name] = None  # other words for the same attribute: take the values seen
        elif pa.types.is_null(t) and name in KNOWN_GROUPS:  # a CSV column with nothing readable in it
            out[name] = KNOWN_GROUPS[name]
    return out


def _values_within(col: pa.ChunkedArray, groups: list[str]) -> bool:
    seen = {str(v) for v in pc.unique(_as_text(col)).to_pylist() if v is not None}
    return all(v in groups or v.strip().lower() in UNREADABLE_TOKENS for v in seen)


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
        raise InputError(f"values {unknown[:5]} are not among the declared groups {groups}")
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
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else x


def _metric_block(value, ci=None, floor=None, corrected=None, at_floor=None) -> dict:
    out = {"value": _num(value), "ci": None if ci is None else [_num(ci[0]), _num(ci[1])]}
    if value is not None and np.isinf(value):
        out["infinite"] = True  # kl_target: a group whose target share is 0 was drawn
    if floor is not None:
        out["floor"] = _num(floor)
    if corrected is not None:
        out["corrected"] = _num(corrected)
    if at_floor is not None:
        out["at_floor"] = bool(at_floor)
    return out


def _seed(seed: int, *path: int) -> int:
    """An independent stream per (model, attribute): never the same draws for two models."""
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


def _pairing(
    table: pa.Table, model_codes: np.ndarray, prompt_codes: np.ndarray, pair: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Row indices of the two models' images, aligned pair by pair, when every (prompt, seed)
    appears once per model and both models have the same set; otherwise None."""
    if "seed" not in table.column_names:
        return None
    seeds = table.column("seed")
    if seeds.null_count:
        return None
    seeds = pc.cast(seeds, pa.int64()).to_numpy(zero_copy_only=False) if pa.types.is_integer(seeds.type) else None
    if seeds is None:
        return None
    rows = []
    for mi in pair:
        idx = np.flatnonzero(model_codes == mi)
        order = np.lexsort((seeds[idx], prompt_codes[idx]))
        idx = idx[order]
        keys = np.stack([prompt_codes[idx], seeds[idx]], axis=1)
        if len(keys) > 1 and np.any(np.all(keys[1:] == keys[:-1], axis=1)):
            return None  # a (prompt, seed) twice: the pairing is not one to one
        rows.append((idx, keys))
    (ia, ka), (ib, kb) = rows
    if len(ia) == 0 or ka.shape != kb.shape or not np.array_equal(ka, kb):
        return None
    return ia, ib


def score_table(
    table: pa.Table,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    attributes: dict[str, list[str] | None] | None = None,
    compare_models: tuple[str, str] | None = None,
    targets: dict[str, dict[str, float]] | None = None,
    intersections: list[list[str]] | None = None,
    groups: dict[str, list[str]] | None = None,
    reader_audit: dict[str, dict] | None = None,
) -> dict[str, Any]:
    """The fairness result of a label table as a JSON-ready dict (layout in the module docstring).

    ``targets``: per attribute, the shares it should have (uniform otherwise); ``intersections``:
    lists of attributes scored jointly; ``groups``: per attribute, its groups (over what the table
    declares); ``reader_audit``: per attribute, a reader's confusion matrix
    (``dft.evaluate.confusion.read_audit``), adding ``reader_corrected`` to that attribute's blocks."""
    attributes = dict(attributes if attributes is not None else attribute_groups(table))
    targets = targets or {}
    for attr, gs in (groups or {}).items():
        if attr not in table.column_names:
            raise A.LabelTableError(f"--groups {attr}: the label table has no column {attr!r} (columns: {table.column_names})")
        attributes[attr] = list(gs)
    n = table.num_rows
    prompt_codes, prompts = _codes_and_names(table.column("prompt") if "prompt" in table.column_names else None, n, ALL_PROMPTS)
    model_codes, models = _codes_and_names(table.column("model") if "model" in table.column_names else None, n, DEFAULT_MODEL)
    P = len(prompts)
    group = model_codes * P + prompt_codes  # one row of the count matrix per (model, prompt)
    present = np.bincount(group, minlength=len(models) * P).reshape(len(models), P) > 0
    pair = compare_models or _default_pair(models)
    pair_idx = (models.index(pair[0]), models.index(pair[1])) if pair else None
    paired = _pairing(table, model_codes, prompt_codes, pair_idx) if pair_idx and bootstrap > 0 else None
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
    encoded: dict[str, tuple[np.ndarray, list[str]]] = {}
    for attr, gs in attributes.items():
        encoded[attr] = encode(table.column(attr), gs)
    for parts in intersections or []:
        missing = [p for p in parts if p not in encoded]
        if missing:
            raise A.LabelTableError(
                f"intersection {parts}: {missing} are not attributes of the label table (attributes: {list(encoded)})"
            )
        encoded[A.joint_name(parts)] = A.joint_codes([encoded[p][0] for p in parts], [encoded[p][1] for p in parts])
    unused = sorted(set(targets) - set(encoded))
    if unused:
        raise A.LabelTableError(
            f"targets name {unused}, which are not attributes of the label table (attributes: {list(encoded)})"
        )
    for ai, (attr, (codes, groups_)) in enumerate(encoded.items()):
        K = len(groups_)
        if K < 2:
            log.warning("attribute %r has %d group(s): no fairness to measure, skipped (declare its groups with --groups)",
                        attr, K)
            continue
        part_names = attr.split(A.JOINT) if attr not in attributes else None
        q = A.target_vector(attr, groups_, targets, {p: encoded[p][1] for p in part_names} if part_names else None)
        counts_all = M.count_matrix(group, codes, len(models) * P, K).reshape(len(models), P, K + 1)
        boots: dict[int, np.ndarray] = {}
        if paired is not None:
            keep = np.flatnonzero(present[pair_idx[0]])
            pos = np.full(P, -1)
            pos[keep] = np.arange(len(keep))
            ia, ib = paired
            ca, cb = np.where(codes[ia] < 0, K, codes[ia]), np.where(codes[ib] < 0, K, codes[ib])
            flat = (pos[prompt_codes[ia]] * (K + 1) + ca) * (K + 1) + cb
            joint = np.bincount(flat, minlength=len(keep) * (K + 1) ** 2).reshape(len(keep), K + 1, K + 1)
            rng = np.random.default_rng(_seed(seed, ai))
            boots[pair_idx[0]], boots[pair_idx[1]] = M.paired_bootstrap_counts(joint, bootstrap, rng)
        reasons_col = f"{attr}_reason"
        for mi, model in enumerate(models):
            keep = np.flatnonzero(present[mi])
            counts = counts_all[mi, keep]
            scored = M.score_counts(counts, bootstrap=bootstrap, seed=_seed(seed, mi, ai), confidence=confidence,
                                    target=q, boot=boots.get(mi))
            raw[model][attr] = scored
            total = counts.sum(axis=0)
            readable = int(total[:K].sum())
            qv = M.uniform(K) if q is None else q
            block: dict[str, Any] = {
                "groups": groups_,
                "K": K,
                "target": {g: float(x) for g, x in zip(groups_, qv)},
                **({"parts": part_names} if part_names else {}),
                "images": int(total.sum()),
                "readable": readable,
                "unreadable": int(total[K]),
                "unreadable_rate": scored["unreadable_rate"],
                "unreadable_rate_ci": list(scored["unreadable_rate_ci"]) if "unreadable_rate_ci" in scored else None,
                "counts": {g: int(c) for g, c in zip(groups_, total[:K])},
                "shares": {g: (_num(c / readable) if readable else None) for g, c in zip(groups_, total[:K])},
                "mean": {
                    m: _metric_block(scored["mean"][m], scored.get("mean_ci", {}).get(m), scored["floor"][m],
                                     scored.get("corrected", {}).get(m), scored.get("at_floor", {}).get(m))
                    for m in M.METRICS
                },
                "prompts": [],
            }
            if reasons_col in table.column_names:
                mask = pa.array((model_codes == mi) & (codes < 0))
                vc = pc.value_counts(pc.filter(_as_text(table.column(reasons_col)), mask)).to_pylist()
                block["unreadable_reasons"] = {str(d["values"]): int(d["counts"]) for d in vc if d["values"] is not None}
            if reader_audit and attr in reader_audit:
                from dft.evaluate.confusion import corrected_block

                block["reader_corrected"] = corrected_block(counts, groups_, reader_audit[attr], attr, q, bootstrap,
                                                            _seed(seed, mi, ai, 7), confidence)
            ppci = scored.get("per_prompt_ci")
            ppc, ppf = scored.get("per_prompt_corrected"), scored.get("per_prompt_at_floor")
            for j, pi in enumerate(keep):
                c = counts[j]
                r = int(c[:K].sum())
                block["prompts"].append(
                    {
                        "prompt": prompts[pi],
                        "images": int(c.sum()),
                        "readable": r,
                        "unreadable_rate": float(c[K] / max(int(c.sum()), 1)),
                        "counts": {g: int(x) for g, x in zip(groups_, c[:K])},
                        "shares": {g: (float(x / r) if r else None) for g, x in zip(groups_, c[:K])},
                        "metrics": {
                            m: _metric_block(
                                scored["per_prompt"][m][j],
                                None if ppci is None else (ppci[m][0][j], ppci[m][1][j]),
                                scored["floor_per_prompt"][m][j],
                                None if ppc is None else ppc[m][j],
                                None if ppf is None or r == 0 else ppf[m][j],
                            )
                            for m in M.METRICS
                        },
                    }
                )
            result["models"][model]["attributes"][attr] = block
    if pair:
        a, b = pair
        result["comparison"] = {
            "base": a,
            "other": b,
            "resampling": "paired" if paired is not None else "independent",
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
