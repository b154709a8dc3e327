"""The reader audit (dft audit-reader) and the skin-tone reader on a held-out painted set."""

import json

import pytest
from painted_faces import write_set

from dft.evaluate import audit as A
from dft.evaluate.config import ReaderConfig

MST = [str(i) for i in range(1, 11)]


def test_wilson_interval():
    w = A.wilson(0, 10)
    assert w["value"] == 0 and w["ci"][0] == pytest.approx(0, abs=1e-12) and 0.25 < w["ci"][1] < 0.32  # 0/10: ~0.28
    w = A.wilson(5, 10)
    assert w["ci"][0] == pytest.approx(0.237, abs=0.002) and w["ci"][1] == pytest.approx(0.763, abs=0.002)
    assert A.wilson(0, 0)["value"] is None


def test_confusion_accuracy_and_verdict():
    truth = ["1"] * 10 + ["9"] * 10 + [None] * 4
    # tone 1 read right 9 times (one unreadable); tone 9 read as 8 (within one) 5 times, unreadable 5 times
    pred = ["1"] * 9 + [None] + ["8"] * 5 + [None] * 5 + [None, None, None, "5"]
    a = A.audit_attribute("skin_tone", truth, pred, MST, tolerance=0.10)
    conf = a["confusion"]
    assert conf["true"] == ["1", "9", "none"] and conf["predicted"] == MST + ["unreadable"]
    assert conf["counts"][0][0] == 9 and conf["counts"][0][-1] == 1
    assert conf["counts"][1][7] == 5 and conf["counts"][1][-1] == 5
    assert conf["counts"][2][4] == 1 and conf["counts"][2][-1] == 3
    assert a["accuracy"]["value"] == pytest.approx(9 / 20)
    assert a["within_one"]["value"] == pytest.approx(14 / 20)
    assert a["unreadable_by_class"]["9"]["value"] == 0.5
    assert a["false_reading_rate"]["value"] == 0.25
    v = a["verdict"]
    assert v["status"] == "fail" and v["compared"] == "groups"
    unread = next(c for c in v["checks"] if c["measure"] == "unreadable")
    assert unread["worst"] == "darker" and unread["spread"] == pytest.approx(0.4)
    assert "darker" in v["text"]
    exact = next(c for c in v["checks"] if c["measure"] == "accuracy")
    assert exact["informational"] and exact["worst"] == "darker" and exact["spread"] == pytest.approx(0.9)
    # the same readings judged with a tolerance above the gap pass
    assert A.audit_attribute("skin_tone", truth, pred, MST, tolerance=0.5)["verdict"]["status"] == "pass"


def test_unordered_attribute_has_no_within_one():
    a = A.audit_attribute("gender", ["man", "woman", "man"], ["man", "man", None], ["man", "woman"])
    assert a["within_one"] is None and a["verdict"]["compared"] == "classes"
    assert a["by_class"]["woman"]["accuracy"]["value"] == 0


def test_truth_rows_that_match_no_image_are_an_error():
    labels = [{"key": "a/x", "path": "a/x.png", "skin_tone": "3"}]
    rows = [{"file": "x.png", "skin_tone": "3"}, {"file": "typo.png", "skin_tone": "4"}]
    with pytest.raises(A.TruthError, match="typo"):
        A.audit_labels(labels, rows, "file", {"skin_tone": MST})
    out = A.audit_labels(labels, rows[:1], "file", {"skin_tone": MST})
    assert out["attributes"]["skin_tone"]["accuracy"]["value"] == 1.0


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    # The face step was tuned on seed 0 only; seed 101 was fixed before it was first run.
    folder = tmp_path_factory.mktemp("painted")
    write_set(str(folder), seed=101, per_tone=12, no_face=24)
    return str(folder)


def test_skin_tone_reader_meets_the_goal_on_a_held_out_painted_set(held_out):
    """Issue 12's goal: within one tone >= 90% overall and >= 85% in every coarse group, unreadable
    rates within 10 points of each other across groups, images without a face unreadable (here: at
    most 2 of 24 read); and far above the Haar cascade alone on darker faces."""
    res = A.audit_reader(held_out, held_out + "/TRUTH.csv", [ReaderConfig(kind="skin_tone")])
    st = res["attributes"]["skin_tone"]
    groups = st["by_group"]
    table = json.dumps({g: (b["within_one"]["value"], b["unreadable"]["value"]) for g, b in groups.items()})
    assert st["within_one"]["value"] >= 0.90, table
    assert all(b["within_one"]["value"] >= 0.85 for b in groups.values()), table
    unread = [b["unreadable"]["value"] for b in groups.values()]
    assert max(unread) - min(unread) <= 0.10, table
    assert st["false_reading_rate"]["k"] <= 2
    assert st["confusion"]["true"][-1] == "none"
    haar = A.audit_reader(held_out, held_out + "/TRUTH.csv",
                          [ReaderConfig(kind="skin_tone", options={"detectors": ["haar"]})])
    hg = haar["attributes"]["skin_tone"]["by_group"]
    assert groups["darker"]["within_one"]["value"] >= hg["darker"]["within_one"]["value"] + 0.5


def test_cli_writes_the_audit_json(tmp_path, capsys):
    from dft.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["audit-reader", "--help"])
    assert exc.value.code == 0 and "--tolerance" in capsys.readouterr().out
    folder = tmp_path / "set"
    write_set(str(folder), seed=5, per_tone=1, no_face=2, size=128)
    out = tmp_path / "audit.json"
    assert main(["audit-reader", str(folder), "--truth", str(folder / "TRUTH.csv"), "--json", str(out)]) == 0
    st = json.loads(out.read_text())["attributes"]["skin_tone"]
    assert st["confusion"]["predicted"][-1] == "unreadable"
    assert [sum(r) for r in st["confusion"]["counts"]] == [1] * 10 + [2]
    assert st["verdict"]["status"] in ("pass", "fail")
    assert main(["audit-reader", str(folder), "--truth", str(tmp_path / "missing.csv")]) == 2
