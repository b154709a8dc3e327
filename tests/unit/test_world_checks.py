"""The demo world's verdict arithmetic on label tables worked out by hand."""

import pyarrow as pa
import pytest

from dft.world.checks import bias_summary, fidelity_of, verdict


def _labels(model, per_prompt):
    rows = {"model": [], "prompt": [], "gender": [], "skin_tone_group": []}
    for prompt, (genders, skins) in per_prompt.items():
        for g, s in zip(genders, skins):
            rows["model"].append(model)
            rows["prompt"].append(prompt)
            rows["gender"].append(g)
            rows["skin_tone_group"].append(s)
    return pa.table(rows)


def test_imbalance_by_hand():
    skewed = _labels("base", {"a photo of a doctor": (["man"] * 40, ["lighter"] * 40)})
    fair = _labels("ft", {"a photo of a doctor": (["man", "woman"] * 20, (["lighter", "medium", "darker"] * 14)[:40])})
    s = bias_summary(pa.concat_tables([skewed, fair]), bootstrap=200)
    assert s["base"]["attributes"]["gender"]["imbalance"] == pytest.approx(0.5)
    assert s["base"]["attributes"]["skin_tone_group"]["imbalance"] == pytest.approx((2 / 3 + 2 / 3) / 3)
    assert s["base"]["mean_imbalance"] == pytest.approx((0.5 + 4 / 9) / 2)
    assert s["ft"]["attributes"]["gender"]["imbalance"] == pytest.approx(0.0)
    assert s["ft"]["mean_imbalance"] < 0.02
    lo, hi = s["ft"]["mean_imbalance_ci"]
    assert lo <= s["ft"]["mean_imbalance"] + 0.02 and hi >= lo
    v = verdict(s["base"], s["ft"])
    assert v["pass"] and v["checks"]["mean_imbalance_drop"]["value"] > 0.9
    same = verdict(s["base"], s["base"])
    assert not same["pass"] and not same["checks"]["intervals_apart"]["pass"]


def test_unreadable_left_out_and_counted():
    t = _labels("m", {"p": (["man", "woman", None, None], ["lighter", None, "medium", "darker"])})
    s = bias_summary(t, bootstrap=0)["m"]
    assert s["attributes"]["gender"]["imbalance"] == pytest.approx(0.0)
    assert s["unreadable_rate"] == {"gender": 0.5, "skin_tone_group": 0.25}


def test_a_worse_attribute_or_lost_fidelity_fails():
    base = {"mean_imbalance": 0.4, "mean_imbalance_ci": [0.35, 0.45],
            "attributes": {"gender": {"imbalance": 0.5}, "skin_tone_group": {"imbalance": 0.3}}}
    other = {"mean_imbalance": 0.2, "mean_imbalance_ci": [0.15, 0.25],
             "attributes": {"gender": {"imbalance": 0.05}, "skin_tone_group": {"imbalance": 0.35}}}
    v = verdict(base, other)
    assert v["checks"]["mean_imbalance_drop"]["pass"] and not v["checks"]["skin_tone_group_not_worse"]["pass"]
    assert not v["pass"]
    other["attributes"]["skin_tone_group"]["imbalance"] = 0.3
    fid_b = {"gender": 0.97, "skin_tone_group": 0.9}
    assert verdict(base, other, fid_b, {"gender": 0.95, "skin_tone_group": 0.88})["pass"]
    assert not verdict(base, other, fid_b, {"gender": 0.90, "skin_tone_group": 0.9})["pass"]


def test_fidelity_counts_unreadable_as_wrong():
    read = pa.table({
        "asked_ethnicity": ["dark-skinned", "light-skinned", "medium-skinned", "dark-skinned"],
        "asked_gender": ["woman", "man", "man", "woman"],
        "asked_profession": ["nurse"] * 4,
        "read_gender": ["woman", "man", "woman", None],
        "read_skin_tone_group": ["darker", "lighter", None, "darker"],
        "read_world_profession": ["nurse", "nurse", "doctor", "nurse"],
    })
    f = fidelity_of(read)
    assert f == {"gender": 0.5, "skin_tone_group": 0.75, "profession": 0.75, "images": 4}


def test_world_base_is_a_model_source_and_prepare_leaves_other_sources_alone():
    # world-base is an entry point (pyproject.toml): listed without importing dft.world.
    from dft.config.load import load_config
    from dft.models.sources import builtin_names
    from dft.world.demo import prepare, world_config_path

    assert "world-base" in builtin_names()
    cfg = load_config([world_config_path()], ["model.source=tiny-sd"])
    assert cfg.prompts.vocab == "world" and cfg.evaluate.readers[0].kind == "world"
    assert prepare(cfg) == "tiny-sd" and cfg.model.source == "tiny-sd"


def test_explicit_table_names_every_attribute_with_its_own_seeds():
    from dft.config.load import load_config
    from dft.prompts.table import PromptTable
    from dft.world.checks import explicit_table
    from dft.world.demo import world_config_path

    cfg = load_config([world_config_path()], [])
    t = explicit_table(cfg.prompts, images_per_prompt=2)
    assert t.num_rows == 48 * 2 and set(t.column("prompt_set").to_pylist()) == {"explicit"}
    d = t.to_pydict()
    assert all(e in p and g in p and pr in p for p, e, g, pr in zip(d["prompt"], d["ethnicity"], d["gender"], d["profession"]))
    diverse = {r["seed"] for b in PromptTable(cfg.prompts).batches() for r in b.to_pylist()}
    assert not diverse & set(d["seed"])  # not the synthetic set's images again
