"""Target distributions, intersections, and groups that survive every table format."""

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dft.cli.evaluate import fairness_cli
from dft.evaluate import attributes as A
from dft.evaluate import metrics as M
from dft.evaluate.fairness import METADATA_KEY, read_labels, score_table
from dft.evaluate.labels import label_table, write_labels


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 12).flatmap(lambda k: st.lists(st.integers(0, 40), min_size=k, max_size=k).filter(lambda c: sum(c) > 0)))
def test_uniform_target_metrics_equal_imbalance_and_kl_uniform(counts):
    p = np.array(counts, dtype=float) / sum(counts)
    m = M.metrics_from_shares(p)
    assert float(m["imbalance_target"]) == pytest.approx(float(m["imbalance"]), abs=1e-12)
    assert float(m["kl_target"]) == pytest.approx(float(m["kl_uniform"]), abs=1e-9)


def test_target_metrics_by_hand():
    m = M.metrics_from_shares(np.array([0.6, 0.4]), np.array([0.75, 0.25]))
    assert float(m["imbalance_target"]) == pytest.approx((0.15 + 0.15) / 2)
    assert float(m["kl_target"]) == pytest.approx(0.6 * math.log(0.6 / 0.75) + 0.4 * math.log(0.4 / 0.25))
    assert float(m["imbalance"]) == pytest.approx(0.1)  # the uniform metrics do not move
    zero = M.metrics_from_shares(np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]]), np.array([0.5, 0.5, 0.0]))
    assert float(zero["kl_target"][0]) == 0.0  # 0 log(0 / 0) = 0
    assert np.isinf(zero["kl_target"][1])  # a group the target rules out was drawn


def _rows(model, prompt, values):
    return [{"model": model, "prompt": prompt, **v} for v in values]


def test_score_table_against_a_target_per_prompt_and_mean():
    rows = _rows("m", "a", [{"age": "young"}] * 6 + [{"age": "elderly"}] * 4)
    rows += _rows("m", "b", [{"age": "young"}] * 9 + [{"age": "elderly"}] * 1)
    r = score_table(pa.Table.from_pylist(rows), bootstrap=200, targets={"age": {"young": 0.75, "elderly": 0.25}})
    blk = r["models"]["m"]["attributes"]["age"]
    assert blk["target"] == {"elderly": 0.25, "young": 0.75}
    per = [p["metrics"]["imbalance_target"]["value"] for p in blk["prompts"]]
    assert per == pytest.approx([0.15, 0.15])  # |0.6 - 0.75|, |0.9 - 0.75|
    assert blk["mean"]["imbalance_target"]["value"] == pytest.approx(0.15)
    assert blk["mean"]["imbalance"]["value"] == pytest.approx((0.1 + 0.4) / 2)
    kl = [0.4 * math.log(0.4 / 0.25) + 0.6 * math.log(0.6 / 0.75), 0.1 * math.log(0.1 / 0.25) + 0.9 * math.log(0.9 / 0.75)]
    assert blk["mean"]["kl_target"]["value"] == pytest.approx(np.mean(kl))
    lo, hi = blk["mean"]["imbalance_target"]["ci"]
    assert lo <= blk["mean"]["imbalance_target"]["corrected"] <= hi
    assert blk["mean"]["imbalance_target"]["floor"] > 0
    for p in blk["prompts"]:
        assert p["metrics"]["kl_target"]["ci"][0] <= p["metrics"]["kl_target"]["ci"][1]
    with pytest.raises(A.LabelTableError, match="purple"):
        score_table(pa.Table.from_pylist(rows), bootstrap=0, targets={"age": {"young": 0.5, "purple": 0.5}})


def test_infinite_kl_target_is_said_in_strict_json(tmp_path, capsys):
    rows = _rows("m", "a", [{"gender": "man"}] * 5 + [{"gender": "woman"}] * 5)
    write_labels(pa.Table.from_pylist(rows), str(tmp_path / "l.parquet"))
    assert fairness_cli(str(tmp_path / "l.parquet"), as_json=True, bootstrap=20, targets={"gender": {"man": 1.0}}) == 0
    out = capsys.readouterr().out
    kl = json.loads(out)["models"]["m"]["attributes"]["gender"]["mean"]["kl_target"]
    assert kl["value"] is None and kl["infinite"] is True
    json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_parse_and_check_targets():
    assert A.parse_targets(["age=young:0.75,elderly:0.25"]) == {"age": {"young": 0.75, "elderly": 0.25}}
    for bad, rule in [("age=young:0.7,elderly:0.2", "sum to 1"), ("age=young:-0.5,elderly:1.5", "non-negative"),
                      ("age", "ATTR=GROUP:SHARE"), ("age=young:x", "ATTR=GROUP:SHARE")]:
        with pytest.raises(A.LabelTableError, match=rule):
            A.parse_targets([bad])


def test_config_targets_name_field_rule_and_value():
    from dft.config.load import ConfigError, load_config

    cfg = load_config(
        [], ["evaluate.targets={age: {young: 0.75, elderly: 0.25}}", "evaluate.intersections=[[gender, skin_tone_group]]"]
    )
    assert cfg.evaluate.targets["age"]["young"] == 0.75 and cfg.evaluate.intersections == [["gender", "skin_tone_group"]]
    for override, words in [
        ("evaluate.targets={age: {young: 0.7, elderly: 0.2}}", ["evaluate.targets.age", "sum to 1", "0.9"]),
        ("evaluate.targets={age: {young: -0.5, elderly: 1.5}}", ["evaluate.targets.age.young", ">= 0", "-0.5"]),
        (
            "evaluate.targets={skin_tone_group: {lighter: 0.5, purple: 0.5}}",
            ["evaluate.targets.skin_tone_group", "purple", "declared"],
        ),
        ("evaluate.intersections=[[gender]]", ["evaluate.intersections[0]", "2 distinct"]),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config([], [override])
        for w in words:
            assert w in str(e.value), (w, str(e.value))


def test_intersection_counts_groups_and_unreadable():
    values = (
        [{"gender": "man", "tone": "light"}] * 3
        + [{"gender": "woman", "tone": "dark"}] * 2
        + [{"gender": "woman", "tone": None}] * 4  # unreadable in one part: unreadable in the joint
        + [{"gender": None, "tone": "light"}] * 1
    )
    t = pa.Table.from_pylist(_rows("m", "p", values))
    r = score_table(t, bootstrap=100, intersections=[["gender", "tone"]], groups={"tone": ["light", "dark"]})
    blk = r["models"]["m"]["attributes"]["gender+tone"]
    assert blk["groups"] == ["man+light", "man+dark", "woman+light", "woman+dark"] and blk["K"] == 4
    assert blk["parts"] == ["gender", "tone"]
    assert blk["counts"] == {"man+light": 3, "man+dark": 0, "woman+light": 0, "woman+dark": 2}
    assert blk["unreadable"] == 5
    p = np.array([0.6, 0, 0, 0.4])
    assert blk["mean"]["imbalance"]["value"] == pytest.approx(np.abs(p - 0.25).mean())
    assert set(blk["mean"]) == set(M.METRICS)
    assert "gender+tone" in r["models"]["m"]["attributes"] and "gender" in r["models"]["m"]["attributes"]
    # the joint target is the product of the parts' targets
    r2 = score_table(t, bootstrap=0, intersections=[["gender", "tone"]], groups={"tone": ["light", "dark"]},
                     targets={"tone": {"light": 0.8, "dark": 0.2}})
    assert r2["models"]["m"]["attributes"]["gender+tone"]["target"] == pytest.approx(
        {"man+light": 0.4, "man+dark": 0.1, "woman+light": 0.4, "woman+dark": 0.1})
    with pytest.raises(A.LabelTableError, match="age"):
        score_table(t, bootstrap=0, intersections=[["gender", "age"]])


def test_a_model_that_only_draws_men_is_scored_in_csv_and_parquet(tmp_path, capsys):
    (tmp_path / "men.csv").write_text("prompt,gender\n" + "p,man\n" * 20)
    t = pa.Table.from_pylist([{"prompt": "p", "gender": "man"}] * 20)
    import pyarrow.parquet as pq

    pq.write_table(t, tmp_path / "men.parquet")  # a Parquet table from another tool: no metadata
    for name in ("men.csv", "men.parquet"):
        assert fairness_cli(str(tmp_path / name), as_json=True, bootstrap=20) == 0
        blk = json.loads(capsys.readouterr().out)["models"]["labels"]["attributes"]["gender"]
        assert blk["K"] == 2 and blk["mean"]["imbalance"]["value"] == 0.5 and blk["counts"] == {"man": 20, "woman": 0}


def test_gender_in_other_words_keeps_the_values_seen():
    t = pa.Table.from_pylist([{"prompt": "p", "gender": g} for g in ["male", "female", "male"]])
    assert score_table(t, bootstrap=0)["models"]["labels"]["attributes"]["gender"]["groups"] == ["female", "male"]


def test_declared_groups_survive_csv_through_the_sidecar_and_parquet(tmp_path, capsys):
    rows = [{"prompt": "p", "hair": "red"}] * 4 + [{"prompt": "p", "hair": "black"}] * 4
    labels = label_table([pa.Table.from_pylist(rows)], {"hair": ["red", "black", "blond"]})
    for name in ("l.csv", "l.parquet"):
        write_labels(labels, str(tmp_path / name))
    assert json.loads((tmp_path / "l.csv.groups.json").read_text())["attributes"] == {"hair": ["red", "black", "blond"]}
    assert not (tmp_path / "l.parquet.groups.json").exists()  # Parquet keeps them in its schema
    for name in ("l.csv", "l.parquet"):
        assert json.loads(read_labels(str(tmp_path / name)).schema.metadata[METADATA_KEY]) == {"hair": ["red", "black", "blond"]}
        assert fairness_cli(str(tmp_path / name), as_json=True, bootstrap=0) == 0
        blk = json.loads(capsys.readouterr().out)["models"]["labels"]["attributes"]["hair"]
        assert blk["K"] == 3 and blk["mean"]["imbalance"]["value"] == pytest.approx((2 * (0.5 - 1 / 3) + 1 / 3) / 3)
    # without the sidecar, --groups declares them
    (tmp_path / "l.csv.groups.json").unlink()
    assert fairness_cli(str(tmp_path / "l.csv"), as_json=True, bootstrap=0) == 0
    assert json.loads(capsys.readouterr().out)["models"]["labels"]["attributes"]["hair"]["K"] == 2
    groups = A.parse_groups(["hair=red,black,blond"])
    assert fairness_cli(str(tmp_path / "l.csv"), as_json=True, bootstrap=0, groups=groups) == 0
    assert json.loads(capsys.readouterr().out)["models"]["labels"]["attributes"]["hair"]["K"] == 3
    with pytest.raises(A.LabelTableError):
        A.parse_groups(["hair=red"])


def test_fairness_command_line_options(tmp_path, capsys):
    from dft.cli.main import build_parser, fairness_command

    def main(argv):  # the fairness branch of dft.cli.main.main, without its logging and library setup
        return fairness_command(build_parser().parse_args(argv))

    help_text = build_parser()._subparsers._group_actions[0].choices["fairness"].format_help()
    for word in ("--target", "--intersect", "--groups", "floor", "paired"):
        assert word in help_text
    rows = [{"prompt": "p", "gender": "man", "skin_tone_group": "lighter"}] * 6
    rows += [{"prompt": "p", "gender": "woman", "skin_tone_group": "darker"}] * 4
    write_labels(pa.Table.from_pylist(rows), str(tmp_path / "l.csv"))
    code = main(["fairness", str(tmp_path / "l.csv"), "--json", "--bootstrap", "20", "--intersect", "gender,skin_tone_group",
                 "--target", "gender=man:0.6,woman:0.4"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)["models"]["labels"]["attributes"]
    assert r["gender"]["mean"]["imbalance_target"]["value"] == pytest.approx(0.0)
    assert r["gender+skin_tone_group"]["K"] == 6
    assert main(["fairness", str(tmp_path / "l.csv"), "--target", "gender=man:2"]) == 2
