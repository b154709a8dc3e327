"""Shares corrected for a reader's measured confusion matrix (issue 12, item 7)."""

import json

import numpy as np
import pyarrow as pa
import pytest

from dft.cli.evaluate import fairness_cli
from dft.evaluate import confusion as C
from dft.evaluate.fairness import score_table

GROUPS = ["lighter", "medium", "darker"]
# rows: true class; columns: read as lighter, medium, darker, unreadable
RATES = np.array([[0.90, 0.10, 0.00, 0.00],
                  [0.05, 0.90, 0.05, 0.00],
                  [0.00, 0.30, 0.50, 0.20]])


def _audit(per_class: int) -> dict:
    counts = np.rint(RATES * per_class).astype(int)
    return {"attributes": {"skin_tone_group": {"confusion": {
        "true": GROUPS, "predicted": GROUPS + ["unreadable"], "counts": counts.tolist()}}}}


def _reported(true_shares, n):
    """What the reader reports for n images of these true shares (expected counts)."""
    return np.rint(n * np.asarray(true_shares) @ RATES).astype(int)


def test_inverting_the_confusion_recovers_the_true_shares():
    conf, with_unreadable = C.align(C.read_audit(json.dumps(_audit(1000)))["skin_tone_group"], GROUPS, "skin_tone_group")
    assert with_unreadable and conf.shape == (3, 4)
    truth = np.array([0.2, 0.3, 0.5])
    reported = _reported(truth, 100_000)
    naive = reported[:3] / reported[:3].sum()
    assert abs(naive[2] - 0.5) > 0.1  # the reader hides darker faces
    np.testing.assert_allclose(C.corrected_shares(reported, conf, True), truth, atol=2e-3)
    # an audit without an unreadable column corrects the confusions among readable reads only
    readable = C.corrected_shares(np.r_[reported[:3], 0], conf, False)
    assert abs(readable.sum() - 1) < 1e-9 and readable.min() >= 0


def test_fairness_json_carries_corrected_metrics_with_intervals_that_include_the_audit(tmp_path, capsys):
    rows = []
    for j in range(3):
        for g, n in zip(GROUPS + [None], _reported([1 / 3, 1 / 3, 1 / 3], 3000)):
            rows += [{"prompt": f"p{j}", "skin_tone_group": g}] * int(n)
    t = pa.Table.from_pylist(rows)
    blocks = {}
    for per_class in (50, 5000):
        r = score_table(t, bootstrap=200, reader_audit=C.read_audit(json.dumps(_audit(per_class))))
        blocks[per_class] = r["models"]["labels"]["attributes"]["skin_tone_group"]
    blk = blocks[5000]
    assert blk["mean"]["imbalance"]["value"] > 0.08  # as read: far from even
    rc = blk["reader_corrected"]
    assert rc["mean"]["imbalance"]["value"] < 0.01  # corrected: the even truth
    assert rc["shares"] == pytest.approx({g: 1 / 3 for g in GROUPS}, abs=0.01)
    for g in GROUPS:
        lo, hi = rc["shares_ci"][g]
        assert lo <= 1 / 3 <= hi
    width = {k: b["reader_corrected"]["shares_ci"]["darker"][1] - b["reader_corrected"]["shares_ci"]["darker"][0]
             for k, b in blocks.items()}
    assert width[50] > 2 * width[5000]  # a small audit is an uncertain correction
    (tmp_path / "audit.json").write_text(json.dumps(_audit(500)))
    pq_path = tmp_path / "l.parquet"
    import pyarrow.parquet as pq

    pq.write_table(t, pq_path)
    assert fairness_cli(str(pq_path), as_json=False, bootstrap=50, reader_audit=str(tmp_path / "audit.json")) == 0
    assert "corrected for the reader's confusion" in capsys.readouterr().out
    bad = _audit(10)
    bad["attributes"]["skin_tone_group"]["confusion"]["true"] = ["lighter", "medium", "purple"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert fairness_cli(str(pq_path), bootstrap=0, reader_audit=str(tmp_path / "bad.json")) == 2
    assert "purple" in capsys.readouterr().err
