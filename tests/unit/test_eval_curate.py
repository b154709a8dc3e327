"""Curation decisions and outputs, from a hand-made label table."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from dft.config.schema import RunConfig
from dft.evaluate.config import CurateConfig
from dft.evaluate.curate import apply_curation, decide


def labels():
    return pa.Table.from_pylist([
        {"key": "k1", "prompt_gender": "man", "gender": "man", "prompt_ethnicity": "A", "skin_tone": "2"},
        {"key": "k2", "prompt_gender": "man", "gender": "woman", "prompt_ethnicity": "A", "skin_tone": "2"},
        {"key": "k3", "prompt_gender": "woman", "gender": None, "prompt_ethnicity": "B", "skin_tone": "9"},
        {"key": "k4", "prompt_gender": "non-binary person", "gender": "man", "prompt_ethnicity": "B", "skin_tone": "3"},
        {"key": "k5", "prompt_gender": "woman", "gender": "woman", "prompt_ethnicity": "A", "skin_tone": "8"},
    ])


def test_gender_contradiction_is_dropped_unlisted_prompt_values_kept():
    keep, reason, detail = decide(labels(), CurateConfig())
    assert list(keep) == [True, False, True, True, True]
    assert reason[1] == "gender" and detail[1] == ("man", "woman")


def test_skin_tone_by_prompt_and_unreadable():
    cfg = CurateConfig(skin_tone_by_prompt={"A": 2, "B": 9}, skin_tone_tolerance=2, drop_unreadable=True)
    keep, reason, _ = decide(labels(), cfg)
    # k3 unreadable gender; k4 tone 3 vs 9; k5 tone 8 vs 2
    assert list(keep) == [True, False, False, False, False]
    assert reason[2:] == ["gender_unreadable", "skin_tone", "skin_tone"]


def test_outputs_keep_list_dropped_and_filtered_shards(tmp_path):
    shard = tmp_path / "synthetic" / "shard-00000.parquet"
    shard.parent.mkdir()
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(1, 6)], "image": [b"x"] * 5}), shard)
    out = tmp_path / "curated"
    counts = apply_curation(labels(), [str(shard)], str(out), CurateConfig(mode="filter"))
    assert counts == {"images": 5, "kept": 4, "dropped": 1, "dropped_by": {"gender": 1}, "filtered_rows": 4}
    assert pq.read_table(out / "keep.parquet").column("key").to_pylist() == ["k1", "k3", "k4", "k5"]
    d = pq.read_table(out / "dropped.parquet").to_pylist()
    assert d == [{"key": "k2", "reason": "gender", "prompt_value": "man", "perceived_value": "woman"}]
    assert pq.read_table(out / "parquet" / "shard-00000.parquet").column("key").to_pylist() == ["k1", "k3", "k4", "k5"]
    assert json.loads((out / "summary.json").read_text())["dropped_by"] == {"gender": 1}


def quota_labels():
    # prompt p1: image 0 fails (gender), 1-3 pass; prompt p2: only image 2 passes. Rows out of order, as
    # the readers may return them.
    rows = [("p1", 3, "man"), ("p2", 0, "woman"), ("p1", 0, "woman"), ("p1", 2, "man"), ("p2", 2, "man"),
            ("p1", 1, "man"), ("p2", 1, "woman")]
    return pa.Table.from_pylist([
        {"key": f"{pid}-{idx}", "prompt_id": pid, "image_index": idx, "prompt_gender": "man", "gender": seen}
        for pid, idx, seen in rows
    ])


def test_keep_per_prompt_keeps_the_first_passing_images_of_each_prompt(tmp_path):
    cfg = CurateConfig(mode="keep_list", keep_per_prompt=2)
    keep, reason, detail = decide(quota_labels(), cfg)
    kept = {k for k, ok in zip(quota_labels().column("key").to_pylist(), keep) if ok}
    # p1: image 0 fails, so images 1 and 2 are kept and 3 is over the quota; p2 keeps its one passing image
    assert kept == {"p1-1", "p1-2", "p2-2"}
    assert reason[0] == "over_quota" and detail[0] == (2, None)
    assert reason[2] == "gender"
    counts = apply_curation(quota_labels(), [], str(tmp_path / "curated"), cfg)
    assert counts["kept"] == 3 and counts["dropped_by"] == {"gender": 3, "over_quota": 1}
    assert counts["prompts_short_of_quota"] == 1  # p2 kept 1 of 2


def test_keep_per_prompt_is_checked_against_the_prompt_table():
    RunConfig.model_validate({"prompts": {"images_per_prompt": 40}, "curate": {"enabled": True, "keep_per_prompt": 32}})
    with pytest.raises(ValidationError, match=r"curate.keep_per_prompt=40 is more than prompts.images_per_prompt=32"):
        RunConfig.model_validate({"prompts": {"images_per_prompt": 32}, "curate": {"enabled": True, "keep_per_prompt": 40}})
    with pytest.raises(ValidationError, match=r"cannot be used with prompts.targets"):
        RunConfig.model_validate({"prompts": {"images_per_prompt": 8, "targets": {"gender": {"man": 0.5, "woman": 0.5}}},
                                  "curate": {"enabled": True, "keep_per_prompt": 4}})
    with pytest.raises(ValidationError, match="keep_per_prompt"):
        CurateConfig(keep_per_prompt=0)
