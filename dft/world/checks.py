"""What the demo world measures, beyond the evaluation stage's own metrics.

- ``explicit_fidelity``: generate with a model from the world's *explicit* prompt table (every
  attribute named) through the generation stage, read the images with the world reader, and give
  the share of images showing the attribute asked for. The precondition of the whole test: a model
  that cannot draw "a dark-skinned woman" cannot be taught to draw her more often.
- ``bias_summary``: from a label table (RUN/eval/labels.parquet), per model the imbalance of
  perceived gender and skin-tone group on the neutral prompts, their mean, and a bootstrap interval
  of that mean (images resampled within each prompt, both attributes from the same draw).
- ``verdict``: the issue's step-3 criteria, each a named pass/fail with the numbers behind it.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from dft.world.reader import SKIN_GROUP_OF_ETHNICITY

log = logging.getLogger(__name__)

BIAS_ATTRIBUTES = {"gender": ["man", "woman"], "skin_tone_group": ["lighter", "medium", "darker"]}


def explicit_table(prompts_cfg, images_per_prompt: int, seed_offset: int = 0) -> pa.Table:
    """The explicit prompt rows (prompt_set 'explicit') of the world vocabulary, with their own seeds."""
    from dft.prompts.table import PromptTable

    cfg = prompts_cfg.model_copy(update={"images_per_prompt": images_per_prompt, "seed": prompts_cfg.seed + 7919 + seed_offset})
    table = pa.Table.from_batches(list(PromptTable(cfg).batches()))
    return table.set_column(table.schema.get_field_index("prompt_set"), "prompt_set", pa.array(["explicit"] * table.num_rows))


def read_generated(images_uri: str) -> pa.Table:
    """Run the world reader over a generation output folder, in-process (small sets)."""
    import pyarrow.parquet as pq

    from dft import storage
    from dft.generate.shards import shard_files
    from dft.world.reader import WorldReader

    tables = [pq.read_table(storage.normalize(f)) for f in shard_files(images_uri, "parquet")]
    table = pa.concat_tables(tables)
    reader = WorldReader()
    images = np.empty(table.num_rows, dtype=object)
    images[:] = table.column("image").to_pylist()
    out = reader({"image": images})
    cols = {k: table.column(k) for k in ("key", "prompt", "ethnicity", "gender", "profession")}
    cols = {("asked_" + k if k in ("ethnicity", "gender", "profession") else k): v for k, v in cols.items()}
    for k in ("gender", "skin_tone_group", "skin_tone", "world_profession"):
        cols["read_" + k] = pa.array(list(out[k]), pa.string())
    return pa.table(cols)


def fidelity_of(read: pa.Table) -> dict[str, float]:
    """Share of images whose read attribute is the one the prompt asked for (unreadable counts as wrong)."""
    d = read.to_pydict()
    n = read.num_rows
    asked_group = [SKIN_GROUP_OF_ETHNICITY.get(e) for e in d["asked_ethnicity"]]
    return {
        "gender": sum(a == b for a, b in zip(d["asked_gender"], d["read_gender"])) / n,
        "skin_tone_group": sum(a == b for a, b in zip(asked_group, d["read_skin_tone_group"])) / n,
        "profession": sum(a == b for a, b in zip(d["asked_profession"], d["read_world_profession"])) / n,
        "images": n,
    }


def explicit_fidelity(cfg, model_source: str, out_uri: str, images_per_prompt: int = 4, seed_offset: int = 0) -> dict:
    """Generate the explicit prompt set with ``model_source`` (the generation stage, Ray Data) into
    ``out_uri`` and measure fidelity per attribute. Needs a connected Ray."""
    from dft.generate.job import generate_dataset

    table = explicit_table(cfg.prompts, images_per_prompt, seed_offset)
    generate_dataset(table, out_uri, model_source, cfg.generate, cache_dir=cfg.model.cache_dir, progress=False)
    return fidelity_of(read_generated(out_uri))


# ---------------------------------------------------------------------------------------------
# Bias on neutral prompts


def _imbalance(counts: np.ndarray) -> np.ndarray:
    """counts [..., K] -> imbalance (1/K) sum |p_k - 1/K| (REFERENCE.md section 3)."""
    k = counts.shape[-1]
    total = counts.sum(-1, keepdims=True)
    p = counts / np.maximum(total, 1)
    return np.abs(p - 1.0 / k).sum(-1) / k


def bias_summary(labels: pa.Table, bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Per model: per attribute the prompt-averaged imbalance, their mean, and bootstrap intervals.

    Unreadable images are left out of the shares (as the evaluation stage does) and their rate is
    reported. The intervals resample images within each prompt; both attributes use the same draw,
    so the interval of their mean is that of one statistic."""
    d = labels.to_pydict()
    models = sorted(set(d["model"]))
    rng = np.random.default_rng(seed)
    out = {}
    for model in models:
        rows = np.array([m == model for m in d["model"]])
        prompts = np.array(d["prompt"], dtype=object)[rows]
        codes = {}
        for attr, groups in BIAS_ATTRIBUTES.items():
            idx = {g: i for i, g in enumerate(groups)}
            codes[attr] = np.array([idx.get(v, -1) if v is not None else -1 for v in np.array(d[attr], dtype=object)[rows]])
        per_prompt = {a: [] for a in BIAS_ATTRIBUTES}
        boot = {a: [] for a in BIAS_ATTRIBUTES}
        unreadable = {a: float(np.mean(codes[a] < 0)) for a in BIAS_ATTRIBUTES}
        for prompt in sorted(set(prompts)):
            sel = np.flatnonzero(prompts == prompt)
            pick = sel[rng.integers(0, len(sel), size=(bootstrap, len(sel)))] if bootstrap else None
            for attr, groups in BIAS_ATTRIBUTES.items():
                c = codes[attr]
                k = len(groups)
                counts = np.array([(c[sel] == g).sum() for g in range(k)], float)
                per_prompt[attr].append(float(_imbalance(counts)))
                if bootstrap:
                    cb = c[pick]
                    bc = np.stack([(cb == g).sum(1) for g in range(k)], -1).astype(float)
                    boot[attr].append(_imbalance(bc))
        res = {"attributes": {}, "unreadable_rate": unreadable, "images": int(rows.sum())}
        means = []
        boot_means = []
        for attr in BIAS_ATTRIBUTES:
            value = float(np.mean(per_prompt[attr]))
            means.append(value)
            entry = {"imbalance": value, "per_prompt": dict(zip(sorted(set(prompts)), per_prompt[attr]))}
            if bootstrap:
                b = np.mean(np.stack(boot[attr], 1), 1)
                boot_means.append(b)
                entry["ci"] = _ci(b, confidence)
            res["attributes"][attr] = entry
        res["mean_imbalance"] = float(np.mean(means))
        if bootstrap:
            res["mean_imbalance_ci"] = _ci(np.mean(np.stack(boot_means), 0), confidence)
        out[model] = res
    return out


def _ci(draws: np.ndarray, confidence: float) -> list[float]:
    a = (1 - confidence) / 2
    return [float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))]


def verdict(base: dict, other: dict, fid_base: dict | None = None, fid_other: dict | None = None,
            min_drop: float = 0.40, max_fidelity_loss: float = 0.05) -> dict:
    """The issue's step 3 as named checks: mean imbalance at least ``min_drop`` lower, intervals apart,
    no attribute worse (beyond its own interval), explicit fidelity at most ``max_fidelity_loss`` lower."""
    drop = 1 - other["mean_imbalance"] / base["mean_imbalance"] if base["mean_imbalance"] > 0 else float("nan")
    checks = {
        "mean_imbalance_drop": {"value": drop, "need": f">= {min_drop}", "pass": bool(drop >= min_drop)},
        "intervals_apart": {
            "base_ci": base.get("mean_imbalance_ci"),
            "other_ci": other.get("mean_imbalance_ci"),
            "pass": bool(base.get("mean_imbalance_ci") and other["mean_imbalance_ci"][1] < base["mean_imbalance_ci"][0]),
        },
    }
    for attr in BIAS_ATTRIBUTES:
        b, o = base["attributes"][attr]["imbalance"], other["attributes"][attr]["imbalance"]
        checks[f"{attr}_not_worse"] = {"base": b, "other": o, "pass": bool(o <= b)}
    if fid_base and fid_other:
        for attr in ("gender", "skin_tone_group"):
            loss = fid_base[attr] - fid_other[attr]
            checks[f"{attr}_fidelity_kept"] = {
                "base": fid_base[attr], "other": fid_other[attr], "loss": loss, "pass": bool(loss <= max_fidelity_loss)
            }
    return {"pass": all(c["pass"] for c in checks.values()), "checks": checks}
