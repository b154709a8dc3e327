"""The demo world's verdict arithmetic on label tables worked out by hand."""

import pyarrow as pa
import pytest

from dft.world.checks import bias_summary, expected_not_clean, fidelity_of, goal_numbers, verdict


def _labels(model, per_prompt):
    rows = {"model": [], "prompt": [], "seed": [], "gender": [], "skin_tone_group": []}
    for prompt, (genders, skins) in per_prompt.items():
        for i, (g, s) in enumerate(zip(genders, skins)):
            rows["model"].append(model)
            rows["prompt"].append(prompt)
            rows["seed"].append(i)
            rows["gender"].append(g)
            rows["skin_tone_group"].append(s)
    return pa.table(rows)


DOCTOR, NURSE = "a photo of a doctor", "a photo of a nurse"  # the trained phrasing
HELD_OUT = "a portrait of a doctor"


def test_imbalance_by_hand_and_the_paired_comparison():
    skewed = _labels("base", {DOCTOR: (["man"] * 40, ["lighter"] * 40), HELD_OUT: (["man"] * 40, ["lighter"] * 40)})
    even = (["man", "woman"] * 20, (["lighter", "medium", "darker"] * 14)[:40])
    fair = _labels("finetuned", {DOCTOR: even, HELD_OUT: even})
    s = bias_summary(pa.concat_tables([skewed, fair]), bootstrap=200)
    assert s["prompts"] == {"all": [DOCTOR, HELD_OUT], "trained": [DOCTOR], "held_out": [HELD_OUT]}
    base, ft = s["models"]["base"]["all"], s["models"]["finetuned"]["all"]
    assert base["attributes"]["gender"]["imbalance"] == pytest.approx(0.5)
    assert base["attributes"]["skin_tone_group"]["imbalance"] == pytest.approx((2 / 3 + 2 / 3) / 3)
    assert base["mean_imbalance"] == pytest.approx((0.5 + 4 / 9) / 2)
    assert ft["attributes"]["gender"]["imbalance"] == pytest.approx(0.0)
    assert ft["mean_imbalance"] < 0.02
    lo, hi = ft["attributes"]["gender"]["ci"]
    assert lo <= 0.0 <= hi  # the interval of a balanced model reaches zero (test inversion, not percentile)
    cmp = s["comparison"]["all"]
    assert cmp["resampling"] == "paired" and cmp["attributes"]["gender"]["change"] == pytest.approx(-0.5)
    v = verdict(s)
    assert v["pass"] and v["checks"]["mean_imbalance_drop"]["value"] > 0.9, v
    assert verdict(s, "held_out")["pass"] and verdict(s, "trained")["pass"]


def test_a_change_within_noise_is_not_lower():
    """One image of 50 per prompt moved: the paired interval of the change reaches zero, so it fails."""
    base = _labels("base", {DOCTOR: (["woman"] * 20 + ["man"] * 30, ["lighter"] * 50),
                            NURSE: (["woman"] * 20 + ["man"] * 30, ["lighter"] * 50)})
    ft = _labels("finetuned", {DOCTOR: (["woman"] * 21 + ["man"] * 29, ["lighter"] * 49 + ["medium"]),
                               NURSE: (["woman"] * 21 + ["man"] * 29, ["lighter"] * 49 + ["medium"])})
    v = verdict(bias_summary(pa.concat_tables([base, ft]), bootstrap=300))
    assert not v["checks"]["gender_lower"]["pass"] and not v["pass"]


def test_unreadable_left_out_counted_and_a_faceless_prompt_is_undefined():
    t = _labels("m", {DOCTOR: (["man", "woman", None, None], ["lighter", None, "medium", "darker"]),
                      NURSE: ([None] * 4, [None] * 4)})
    s = bias_summary(t, bootstrap=0)["models"]["m"]["all"]
    assert s["attributes"]["gender"]["imbalance"] == pytest.approx(0.0)  # the faceless prompt is not 1/K
    assert s["attributes"]["gender"]["per_prompt"][NURSE] is None
    assert s["attributes"]["gender"]["unreadable_rate"] == pytest.approx(6 / 8)
    assert s["unreadable_rate"] == pytest.approx(6 / 8)


def test_a_model_that_turns_faces_into_blobs_fails():
    """Balanced shares among the few faces left are not a fairer model: the unreadable-or-degraded
    rate may rise by at most 2 points."""
    base = _labels("base", {DOCTOR: (["man"] * 36 + ["woman"] * 4, ["lighter"] * 36 + ["medium"] * 4)})
    blobs = (["man", "woman"] * 6 + [None] * 28, ["lighter", "medium", "darker"] * 4 + [None] * 28)
    s = bias_summary(pa.concat_tables([base, _labels("finetuned", {DOCTOR: blobs})]), bootstrap=200)
    v = verdict(s)
    assert v["checks"]["mean_imbalance_drop"]["pass"]
    assert not v["checks"]["unreadable_or_degraded_kept"]["pass"] and not v["pass"]


def _fid(not_clean_by_group, not_clean=None):
    """Explicit-prompt results: fidelity kept, and the not-clean rate per skin-tone group asked for."""
    rates = list(not_clean_by_group.values())
    return {"gender": 0.97, "skin_tone_group": 0.9, "not_clean_by_group": not_clean_by_group,
            "not_clean": sum(rates) / len(rates) if not_clean is None else not_clean}


# The base model draws darker faces less cleanly than lighter ones: 20% of them are not clean, 0% of lighter.
BASE_EXPLICIT = {"lighter": 0.0, "medium": 0.0, "darker": 0.2}


def test_a_change_of_mix_is_not_damage():
    """A model that draws more darker faces, each as cleanly as the base draws them, has a higher raw
    unreadable rate and no damage: 90/10 lighter/darker (2 of 10 darker not clean: 2%) to 50/50 (10 of
    50: 10%). The raw 2-point check fails; the rise less what the mix explains is 0, and passes."""
    base = _labels("base", {DOCTOR: (["man"] * 50 + ["woman"] * 48 + [None] * 2, ["lighter"] * 90 + ["darker"] * 8 + [None] * 2)})
    ft = _labels("finetuned", {DOCTOR: (["man", "woman"] * 45 + [None] * 10, ["lighter"] * 50 + ["darker"] * 40 + [None] * 10)})
    s = bias_summary(pa.concat_tables([base, ft]), bootstrap=200)
    assert expected_not_clean(s["models"]["base"]["all"], BASE_EXPLICIT) == pytest.approx(0.02)
    assert expected_not_clean(s["models"]["finetuned"]["all"], BASE_EXPLICIT) == pytest.approx(0.10)
    v = verdict(s, "all", _fid(BASE_EXPLICIT), _fid(BASE_EXPLICIT))
    c = v["checks"]
    assert c["unreadable_or_degraded_kept"]["rise"] == pytest.approx(0.08) and not c["unreadable_or_degraded_kept"]["pass"]
    assert c["damage_beyond_mix_kept"]["rise_from_mix"] == pytest.approx(0.08)
    assert c["damage_beyond_mix_kept"]["excess"] == pytest.approx(0.0, abs=1e-9) and c["damage_beyond_mix_kept"]["pass"]
    assert c["explicit_damage_kept"]["pass"]


def test_blobs_fail_the_damage_checks_whatever_the_mix():
    base = _labels("base", {DOCTOR: (["man"] * 36 + ["woman"] * 4, ["lighter"] * 36 + ["medium"] * 4)})
    blobs = (["man", "woman"] * 6 + [None] * 28, ["lighter", "medium", "darker"] * 4 + [None] * 28)
    s = bias_summary(pa.concat_tables([base, _labels("finetuned", {DOCTOR: blobs})]), bootstrap=200)
    c = verdict(s, "all", _fid(BASE_EXPLICIT), _fid(BASE_EXPLICIT))["checks"]
    assert c["damage_beyond_mix_kept"]["excess"] > 0.5 and not c["damage_beyond_mix_kept"]["pass"]
    # and a model whose explicit prompts' faces degrade fails the explicit check, 2 points being the bar
    worse = {"lighter": 0.0, "medium": 0.03, "darker": 0.24}
    c = verdict(s, "all", _fid(BASE_EXPLICIT), _fid(worse))["checks"]
    assert c["explicit_damage_kept"]["rise"] == pytest.approx(0.07 / 3) and not c["explicit_damage_kept"]["pass"]
    slightly = {"lighter": 0.0, "medium": 0.0, "darker": 0.25}
    assert verdict(s, "all", _fid(BASE_EXPLICIT), _fid(slightly))["checks"]["explicit_damage_kept"]["pass"]


def test_lost_fidelity_fails():
    base = _labels("base", {DOCTOR: (["man"] * 40, ["lighter"] * 40)})
    fair = _labels("finetuned", {DOCTOR: (["man", "woman"] * 20, (["lighter", "medium", "darker"] * 14)[:40])})
    s = bias_summary(pa.concat_tables([base, fair]), bootstrap=200)
    fid_b = {"gender": 0.97, "skin_tone_group": 0.9}
    assert verdict(s, "all", fid_b, {"gender": 0.95, "skin_tone_group": 0.88})["pass"]
    assert not verdict(s, "all", fid_b, {"gender": 0.90, "skin_tone_group": 0.9})["pass"]
    with pytest.raises(ValueError, match="held_out"):
        verdict(s, "held_out")


def test_goal_numbers_per_prompt():
    t = _labels("m", {DOCTOR: (["man"] * 3 + ["woman"], ["darker", "lighter", "lighter", "medium"])})
    g = goal_numbers(bias_summary(t, bootstrap=0)["models"]["m"]["all"])
    assert g["darker_share"] == {DOCTOR: 0.25} and g["max_gender_share"] == 0.75


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


def test_the_demo_summary_is_the_evaluation_stages_numbers(tmp_path):
    import json

    import pyarrow.parquet as pq

    from dft.config.load import load_config
    from dft.world.demo import summary, world_config_path

    skewed = (["man"] * 30 + ["woman"] * 2, ["lighter"] * 30 + ["darker"] * 2)
    even = (["man", "woman"] * 16, (["lighter", "medium", "darker"] * 11)[:32])
    t = pa.concat_tables([_labels("base", {DOCTOR: skewed, HELD_OUT: skewed}),
                          _labels("finetuned", {DOCTOR: even, HELD_OUT: skewed})])
    cfg = load_config([world_config_path()], [f"run.uri={tmp_path / 'run'}", "evaluate.bootstrap=200"])
    (tmp_path / "run" / "eval").mkdir(parents=True)
    pq.write_table(t, tmp_path / "run" / "eval" / "labels.parquet")
    text = summary(cfg)
    assert "trained" in text and "held-out" in text and "report:" in text
    # the held-out phrasing did not move here, and the summary says so
    assert "held-out prompts:  mean imbalance 0% lower" in text and "below 0 for no attribute" in text
    saved = json.loads((tmp_path / "run" / "eval" / "world_bias.json").read_text())
    assert saved["comparison"]["trained"]["attributes"]["gender"]["significant"] is True


def test_fidelity_gives_the_not_clean_rate_per_group_asked_for():
    read = pa.table({
        "asked_ethnicity": ["dark-skinned", "dark-skinned", "light-skinned", "medium-skinned"],
        "asked_gender": ["woman"] * 4, "asked_profession": ["nurse"] * 4,
        "read_gender": [None, "woman", "woman", None], "read_skin_tone_group": [None, "darker", "lighter", None],
        "read_world_profession": ["nurse"] * 4, "read_world_face": ["degraded", "clean", "clean", "none"],
    })
    f = fidelity_of(read)
    assert f["not_clean"] == 0.5
    assert f["not_clean_by_group"] == {"lighter": 0.0, "medium": 1.0, "darker": 0.5}
