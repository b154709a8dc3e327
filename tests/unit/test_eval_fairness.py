"""Scoring label tables (Parquet and CSV), the fairness JSON, and `dft label` over images."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dft.cli.evaluate import fairness_cli, label_cli
from dft.evaluate.fairness import METADATA_KEY, attribute_groups, score_table
from dft.evaluate.labels import label_table, write_labels


def _table(rows, groups=None):
    t = pa.Table.from_pylist(rows)
    if groups:
        t = t.replace_schema_metadata({METADATA_KEY: json.dumps(groups).encode()})
    return t


def rows_for(model, prompt, counts):
    out = []
    for value, n in counts.items():
        out += [{"model": model, "prompt": prompt, "gender": value}] * n
    return out


def test_score_table_by_hand_two_models():
    rows = rows_for("base", "a doctor", {"man": 9, "woman": 1, None: 2}) + rows_for("base", "a nurse", {"man": 2, "woman": 8})
    rows += rows_for("finetuned", "a doctor", {"man": 5, "woman": 5}) + rows_for("finetuned", "a nurse", {"man": 4, "woman": 6})
    r = score_table(_table(rows), bootstrap=200)
    base = r["models"]["base"]["attributes"]["gender"]
    assert base["groups"] == ["man", "woman"] and base["K"] == 2
    assert base["unreadable"] == 2 and base["unreadable_rate"] == pytest.approx(2 / 22)
    # imbalance per prompt |p_man - 0.5|: 0.4 and 0.3 -> mean 0.35
    assert base["mean"]["imbalance"]["value"] == pytest.approx(0.35)
    assert [p["prompt"] for p in base["prompts"]] == ["a doctor", "a nurse"]
    assert base["prompts"][0]["counts"] == {"man": 9, "woman": 1}
    ft = r["models"]["finetuned"]["attributes"]["gender"]
    assert ft["mean"]["imbalance"]["value"] == pytest.approx((0.0 + 0.1) / 2)
    comp = r["comparison"]
    assert (comp["base"], comp["other"]) == ("base", "finetuned")
    row = comp["attributes"]["gender"]["imbalance"]
    assert row["relative_change"] == pytest.approx((0.05 - 0.35) / 0.35)
    assert row["verdict"] == "better"
    lo, hi = base["mean"]["imbalance"]["ci"]
    assert lo <= hi
    json.dumps(r, allow_nan=False)  # strict JSON: undefined values are null


def test_declared_groups_count_empty_groups():
    rows = [{"prompt": "p", "skin_tone": "1"}] * 5 + [{"prompt": "p", "skin_tone": "2"}] * 5
    declared = _table(rows, {"skin_tone": [str(i) for i in range(1, 11)]})
    r = score_table(declared, bootstrap=0)
    blk = r["models"]["labels"]["attributes"]["skin_tone"]
    assert blk["K"] == 10
    assert blk["mean"]["imbalance"]["value"] == pytest.approx(0.16)
    # the same column without metadata still knows the 10 Monk tones by name
    assert score_table(_table(rows), bootstrap=0)["models"]["labels"]["attributes"]["skin_tone"]["K"] == 10


def test_attribute_detection_skips_known_non_attributes():
    t = _table([{"key": "k", "prompt": "p", "model": "m", "gender": "man", "gender_score": 0.9,
                 "gender_reason": None, "prompt_gender": "man", "skin_tone_ita": 3.0, "seed": 4}])
    assert list(attribute_groups(t)) == ["gender"]


def test_unreadable_tokens_and_undeclared_values():
    t = _table([{"prompt": "p", "gender": g} for g in ["man", "woman", "unreadable", "", None]])
    blk = score_table(t, bootstrap=0)["models"]["labels"]["attributes"]["gender"]
    assert blk["unreadable"] == 3
    bad = _table([{"prompt": "p", "gender": "robot"}], {"gender": ["man", "woman"]})
    with pytest.raises(ValueError, match="robot"):
        score_table(bad, bootstrap=0)


def test_fairness_cli_parquet_and_csv_agree(tmp_path, capsys):
    rows = rows_for("base", "a", {"man": 7, "woman": 3}) + rows_for("base", "b", {"man": 1, "woman": 1, None: 1})
    t = label_table([_table(rows)], {"gender": ["man", "woman"]})
    write_labels(t, str(tmp_path / "l.parquet"))
    write_labels(t, str(tmp_path / "l.csv"))
    outs = []
    for name in ("l.parquet", "l.csv"):
        assert fairness_cli(str(tmp_path / name), as_json=True, bootstrap=50) == 0
        outs.append(json.loads(capsys.readouterr().out))
    a, b = (o["models"]["base"]["attributes"]["gender"] for o in outs)
    assert a["mean"] == b["mean"] and a["counts"] == b["counts"] == {"man": 8, "woman": 4}
    assert fairness_cli(str(tmp_path / "l.parquet"), as_json=False, bootstrap=0) == 0
    assert "imbalance" in capsys.readouterr().out
    assert fairness_cli(str(tmp_path / "missing.parquet"), as_json=False, bootstrap=0) == 2


def test_label_cli_on_a_folder(tmp_path):
    from dft.config.load import load_config
    from dft.evaluate.skin_tone import MST_RGB, ita_class
    from dft.evaluate.synthetic_faces import paint_face, paint_no_face

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, tone in enumerate([2, 6, 9]):
        Image.fromarray(paint_face(MST_RGB[tone - 1], seed=i)).save(folder / f"face{i}.png")
        (folder / f"face{i}.txt").write_text("a photo of a person")
    Image.fromarray(paint_no_face(seed=3)).save(folder / "scene.jpg")
    cfg = load_config([], [])
    out = tmp_path / "labels.parquet"
    assert label_cli(str(folder), str(out), cfg) == 0
    t = pq.read_table(out)
    rows = {r["key"]: r for r in t.to_pylist()}
    assert set(rows) == {"face0", "face1", "face2", "scene"}
    for i, tone in enumerate([2, 6, 9]):
        assert abs(int(rows[f"face{i}"]["skin_tone"]) - tone) <= 1
        assert rows[f"face{i}"]["prompt"] == "a photo of a person"
        assert ita_class(rows[f"face{i}"]["skin_tone_ita"]) == rows[f"face{i}"]["skin_tone_ita_class"]
    assert rows["scene"]["skin_tone"] is None and rows["scene"]["skin_tone_reason"] == "no_face"
    assert json.loads(t.schema.metadata[METADATA_KEY])["skin_tone"] == [str(i) for i in range(1, 11)]
    assert label_cli(str(folder), str(tmp_path / "labels.txt"), cfg) == 2


def test_ten_million_rows_in_seconds():
    import time

    rng = np.random.default_rng(0)
    n = 10_000_000
    prompts = np.array([f"prompt {i}" for i in range(100)], dtype=object)
    t = pa.table({
        "prompt": pa.array(prompts[rng.integers(0, 100, n)]).dictionary_encode(),
        "skin_tone": pa.array(rng.integers(1, 11, n).astype(np.int8)),
    })
    t0 = time.perf_counter()
    r = score_table(t, bootstrap=200)
    elapsed = time.perf_counter() - t0
    assert r["models"]["labels"]["attributes"]["skin_tone"]["images"] == n
    assert elapsed < 20, elapsed


def test_csv_with_nothing_readable_still_scores_the_known_attribute(tmp_path, capsys):
    (tmp_path / "l.csv").write_text('"prompt","skin_tone","skin_tone_reason"\n"p",,"no_face"\n"p",,"no_face"\n')
    assert fairness_cli(str(tmp_path / "l.csv"), as_json=True, bootstrap=10) == 0
    blk = json.loads(capsys.readouterr().out)["models"]["labels"]["attributes"]["skin_tone"]
    assert blk["unreadable_rate"] == 1.0 and blk["unreadable_reasons"] == {"no_face": 2}
    assert blk["mean"]["imbalance"]["value"] is None
