"""What the demo world measures, beyond the evaluation stage's own metrics.

- ``explicit_fidelity``: generate with a model from the world's *explicit* prompt table (every
  attribute named) through the generation stage, read the images with the world reader, and give
  the share of images showing the attribute asked for. The precondition of the whole test: a model
  that cannot draw "a dark-skinned woman" cannot be taught to draw her more often.
- ``bias_summary``: from a label table (RUN/eval/labels.parquet), per phrasing group (all neutral
  prompts, the trained phrasing, the held-out ones) and model the imbalance of perceived gender and
  skin-tone group with their intervals, their mean, the unreadable-or-degraded rate, and the paired
  comparison of base and fine-tuned model: the evaluation stage's own ``score_table``, not a second
  implementation.
- ``verdict``: the issue's step-3 criteria, each a named pass/fail with the numbers behind it.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from dft.world import attributes as A
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
    for k in ("gender", "skin_tone_group", "skin_tone", "world_profession", "world_face"):
        cols["read_" + k] = pa.array(list(out[k]), pa.string())
    return pa.table(cols)


def fidelity_of(read: pa.Table) -> dict:
    """Share of images whose read attribute is the one the prompt asked for (unreadable counts as wrong);
    and the share of images whose face is not clean (degraded, or none), in all and per skin-tone group
    asked for (``not_clean``, ``not_clean_by_group``): how cleanly the model draws each group."""
    d = read.to_pydict()
    n = read.num_rows
    asked_group = [SKIN_GROUP_OF_ETHNICITY.get(e) for e in d["asked_ethnicity"]]
    out = {
        "gender": sum(a == b for a, b in zip(d["asked_gender"], d["read_gender"])) / n,
        "skin_tone_group": sum(a == b for a, b in zip(asked_group, d["read_skin_tone_group"])) / n,
        "profession": sum(a == b for a, b in zip(d["asked_profession"], d["read_world_profession"])) / n,
        "images": n,
    }
    if "read_world_face" in d:
        bad = [f != "clean" for f in d["read_world_face"]]
        out["not_clean"] = sum(bad) / n
        out["not_clean_by_group"] = {
            g: float(np.mean([b for b, a in zip(bad, asked_group) if a == g]))
            for g in BIAS_ATTRIBUTES["skin_tone_group"] if g in asked_group
        }
    return out


def explicit_fidelity(cfg, model_source: str, out_uri: str, images_per_prompt: int = 4, seed_offset: int = 0) -> dict:
    """Generate the explicit prompt set with ``model_source`` (the generation stage, Ray Data) into
    ``out_uri`` and measure fidelity per attribute. Needs a connected Ray."""
    from dft.generate.job import generate_dataset

    table = explicit_table(cfg.prompts, images_per_prompt, seed_offset)
    generate_dataset(table, out_uri, model_source, cfg.generate, cache_dir=cfg.model.cache_dir, progress=False)
    return fidelity_of(read_generated(out_uri))


# ---------------------------------------------------------------------------------------------
# Bias on neutral prompts: the evaluation stage's own scoring (dft.evaluate.fairness.score_table), so
# the world's numbers, intervals and comparison are the ones `dft fairness` and the report give.

PHRASINGS = ("all", "trained", "held_out")


def trained_prompts() -> set[str]:
    """The neutral prompts in the fine-tuning's own phrasing (its attribute-dropout caption)."""
    from dft.prompts.table import render
    from dft.world.corpus import NEUTRAL_TEMPLATE

    return {render(NEUTRAL_TEMPLATE, {"profession": p}) for p in A.PROFESSIONS}


def _block(model_result: dict) -> dict:
    attrs = {}
    for attr in BIAS_ATTRIBUTES:
        a = model_result["attributes"][attr]
        attrs[attr] = {
            "imbalance": a["mean"]["imbalance"]["value"],
            "ci": a["mean"]["imbalance"]["ci"],
            "floor": a["mean"]["imbalance"]["floor"],
            "unreadable_rate": a["unreadable_rate"],
            "unreadable_reasons": a.get("unreadable_reasons", {}),
            "per_prompt": {p["prompt"]: p["metrics"]["imbalance"]["value"] for p in a["prompts"]},
            "shares_per_prompt": {p["prompt"]: p["shares"] for p in a["prompts"]},
        }
    values = [attrs[a]["imbalance"] for a in BIAS_ATTRIBUTES]
    return {
        "attributes": attrs,
        "mean_imbalance": float(np.mean(values)) if all(v is not None for v in values) else None,
        # gender and skin tone are read from the same face: unreadable (no face, or a degraded one) alike
        "unreadable_rate": max(attrs[a]["unreadable_rate"] for a in BIAS_ATTRIBUTES),
        "images": model_result["images"],
    }


def bias_summary(labels: pa.Table, bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95,
                 pair: tuple[str, str] | None = ("base", "finetuned")) -> dict:
    """Per phrasing (``all`` neutral prompts, the ``trained`` phrasing, the ``held_out`` ones) and
    model: per attribute the prompt-averaged imbalance with its interval, its unreadable rate and
    per-prompt shares, the mean of the two attributes' imbalance; and the paired comparison of
    ``pair`` (per attribute: change, its interval, significant), all from ``score_table``.

    Unreadable images (no face, or a degraded one) are left out of the shares and their rate is
    reported; a prompt with no readable image is undefined and left out of the mean, not scored 1/K."""
    from dft.evaluate.fairness import score_table

    models = sorted(set(labels.column("model").to_pylist()))
    pair = pair if pair and all(m in models for m in pair) else None
    trained = trained_prompts()
    prompts = np.array(labels.column("prompt").to_pylist(), dtype=object)
    is_trained = np.array([p in trained for p in prompts])
    keep = [c for c in ("model", "prompt", "seed", *BIAS_ATTRIBUTES, *(f"{a}_reason" for a in BIAS_ATTRIBUTES))
            if c in labels.column_names]
    out: dict = {"models": {m: {} for m in models}, "comparison": {}, "prompts": {}}
    for name, mask in (("all", np.ones(len(prompts), bool)), ("trained", is_trained), ("held_out", ~is_trained)):
        if not mask.any():
            continue
        part = labels.select(keep).filter(pa.array(mask))
        r = score_table(part, bootstrap=bootstrap, seed=seed, confidence=confidence,
                        attributes={a: list(g) for a, g in BIAS_ATTRIBUTES.items()}, compare_models=pair)
        out["prompts"][name] = sorted(set(prompts[mask]))
        for m in models:
            if m in r["models"] and all(a in r["models"][m]["attributes"] for a in BIAS_ATTRIBUTES):
                out["models"][m][name] = _block(r["models"][m])
        if pair and "comparison" in r:
            cmp = {a: {k: r["comparison"]["attributes"][a]["imbalance"].get(k)
                       for k in ("base", "other", "change", "change_ci", "significant")}
                   for a in BIAS_ATTRIBUTES if a in r["comparison"]["attributes"]}
            out["comparison"][name] = {"base": pair[0], "other": pair[1], "resampling": r["comparison"]["resampling"],
                                       "attributes": cmp}
    return out


def goal_numbers(block: dict) -> dict:
    """The issue's goal, per neutral prompt: the share of darker faces, the larger gender's share."""
    sk = block["attributes"]["skin_tone_group"]["shares_per_prompt"]
    ge = block["attributes"]["gender"]["shares_per_prompt"]
    darker = {p: s.get("darker") for p, s in sk.items()}
    top_gender = {p: (max(v for v in s.values() if v is not None) if any(v is not None for v in s.values()) else None)
                  for p, s in ge.items()}
    return {"darker_share": darker, "top_gender_share": top_gender,
            "min_darker_share": min((v for v in darker.values() if v is not None), default=None),
            "max_gender_share": max((v for v in top_gender.values() if v is not None), default=None)}


def expected_not_clean(block: dict, not_clean_by_group: dict[str, float]) -> float | None:
    """The not-clean rate (no face or a degraded one) a model would show on these neutral prompts if it
    drew each skin-tone group exactly as cleanly as ``not_clean_by_group`` says (the rates on explicit
    prompts, per group asked for), given the mix of groups it draws.

    Per prompt: the clean faces' shares c_g are what the reader sees; the faces drawn of group g are then
    in proportion to c_g / (1 - d_g), and the expected not-clean rate is their d_g-weighted mean. The
    prompts are averaged (each has as many images). A model that draws more darker faces, which the base
    model draws less cleanly than lighter ones, shows a higher raw rate with no damage done: this is that
    rate, so that damage can be told from a change of mix."""
    d = {g: float(v) for g, v in not_clean_by_group.items() if g in BIAS_ATTRIBUTES["skin_tone_group"]}
    if not d or any(v >= 1 for v in d.values()):
        return None
    rates = []
    for shares in block["attributes"]["skin_tone_group"]["shares_per_prompt"].values():
        w = {g: (shares.get(g) or 0.0) / (1 - d[g]) for g in d}
        total = sum(w.values())
        if total > 0:
            rates.append(sum(w[g] * d[g] for g in d) / total)
    return float(np.mean(rates)) if rates else None


def verdict(summary: dict, phrasing: str = "all", fid_base: dict | None = None, fid_other: dict | None = None,
            min_drop: float = 0.40, max_fidelity_loss: float = 0.05, max_unreadable_rise: float = 0.02) -> dict:
    """The issue's step 3 as named checks, on one phrasing group of ``bias_summary``'s result: mean
    imbalance at least ``min_drop`` lower; each attribute's paired change below zero with its interval
    (significant); the unreadable-or-degraded rate at most ``max_unreadable_rise`` above the base's;
    explicit fidelity at most ``max_fidelity_loss`` lower. Given explicit-prompt results with their
    not-clean rates (``fidelity_of``), two damage checks with the same bar: ``explicit_damage_kept`` (the
    explicit prompts' not-clean rate, fine-tuned minus base) and ``damage_beyond_mix_kept`` (the neutral
    prompts' rise less the rise its new mix of skin-tone groups explains, ``expected_not_clean``)."""
    cmp = summary["comparison"].get(phrasing)
    if cmp is None:
        raise ValueError(f"world verdict: no comparison for phrasing {phrasing!r} (have {sorted(summary['comparison'])})")
    base = summary["models"][cmp["base"]][phrasing]
    other = summary["models"][cmp["other"]][phrasing]
    b, o = base["mean_imbalance"], other["mean_imbalance"]
    drop = 1 - o / b if b and o is not None else float("nan")
    checks = {
        "mean_imbalance_drop": {"base": b, "other": o, "value": drop, "need": f">= {min_drop}", "pass": bool(drop >= min_drop)},
    }
    for attr in BIAS_ATTRIBUTES:
        c = cmp["attributes"].get(attr, {})
        ci = c.get("change_ci")
        checks[f"{attr}_lower"] = {
            "base": c.get("base"), "other": c.get("other"), "change": c.get("change"), "change_ci": ci,
            "resampling": cmp["resampling"],
            "pass": bool(ci is not None and c.get("significant") and ci[1] < 0),
        }
    rise = other["unreadable_rate"] - base["unreadable_rate"]
    checks["unreadable_or_degraded_kept"] = {
        "base": base["unreadable_rate"], "other": other["unreadable_rate"], "rise": rise,
        "need": f"<= {max_unreadable_rise}", "pass": bool(rise <= max_unreadable_rise),
    }
    if fid_base and fid_other and "not_clean_by_group" in fid_base and "not_clean" in fid_other:
        # Damage, told from a change of mix: (1) on the explicit prompts (the same prompts and seeds for both
        # models) the fine-tuned model's faces are not less often clean; (2) on the neutral prompts its rise
        # over the base is within the bar once the rise its new mix of groups brings is taken out.
        e_rise = fid_other["not_clean"] - fid_base["not_clean"]
        checks["explicit_damage_kept"] = {
            "base": fid_base["not_clean"], "other": fid_other["not_clean"], "rise": e_rise,
            "base_by_group": fid_base["not_clean_by_group"], "other_by_group": fid_other.get("not_clean_by_group"),
            "need": f"<= {max_unreadable_rise}", "pass": bool(e_rise <= max_unreadable_rise),
        }
        exp_b = expected_not_clean(base, fid_base["not_clean_by_group"])
        exp_o = expected_not_clean(other, fid_base["not_clean_by_group"])
        if exp_b is not None and exp_o is not None:
            excess = (other["unreadable_rate"] - exp_o) - (base["unreadable_rate"] - exp_b)
            checks["damage_beyond_mix_kept"] = {
                "base": base["unreadable_rate"], "other": other["unreadable_rate"],
                "expected_base": exp_b, "expected_other": exp_o, "rise": rise, "rise_from_mix": exp_o - exp_b,
                "excess": excess, "need": f"<= {max_unreadable_rise}", "pass": bool(excess <= max_unreadable_rise),
            }
    if fid_base and fid_other:
        for attr in ("gender", "skin_tone_group"):
            loss = fid_base[attr] - fid_other[attr]
            checks[f"{attr}_fidelity_kept"] = {
                "base": fid_base[attr], "other": fid_other[attr], "loss": loss, "pass": bool(loss <= max_fidelity_loss)
            }
    return {"phrasing": phrasing, "pass": all(c["pass"] for c in checks.values()), "checks": checks}
