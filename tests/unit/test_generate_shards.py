"""Planning, shard commits and readers, without Ray or a model: samples are made up here."""

import hashlib
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dft import storage
from dft.generate.config import GenerateConfig
from dft.generate.plan import PlanChanged, PromptTableError, check_or_write_plan, make_plan, prompt_source, stage_table
from dft.generate.shards import (
    POS,
    ShardIncomplete,
    commit_shard,
    commit_uri,
    committed_shards,
    iter_samples,
    iter_webdataset,
    read_manifest,
    sample_from_webdataset,
    shard_files,
    write_part,
)
from dft.prompts.config import PromptsConfig
from dft.prompts.table import PromptTable, neutral_table, write_table
from dft.schema import PROMPT_SCHEMA, SAMPLE_SCHEMA


def _table(n=10):
    return neutral_table(PromptsConfig(neutral_max_professions=3), images_per_prompt=4).slice(0, n)


def _fake_samples(prompts: pa.Table, start: int, failed=()) -> pa.Table:
    """What the actor writes: sample columns, an error column and the table position."""
    n = prompts.num_rows
    cols = {f.name: prompts.column(f.name) for f in PROMPT_SCHEMA}
    keys = [hashlib.sha256(f"{p}|{i}".encode()).hexdigest()[:24] for p, i in
            zip(cols["prompt_id"].to_pylist(), cols["image_index"].to_pylist())]
    errors = [("boom" if j in failed else None) for j in range(n)]
    return pa.table({
        "key": keys, **cols, "model": ["m"] * n, "settings_hash": ["h"] * n, "image_format": ["png"] * n,
        "width": pa.array([2] * n, pa.int32()), "height": pa.array([2] * n, pa.int32()),
        "image": [b"" if e else f"img{start + j}".encode() for j, e in enumerate(errors)],
        "error": pa.array(errors, pa.string()), POS: pa.array(range(start, start + n), pa.int64()),
    })


def test_prompt_source_reads_any_range_across_files_and_row_groups(tmp_path):
    cfg = PromptsConfig(include={"profession": ["doctor", "nurse"]}, images_per_prompt=3, chunk_rows=7)
    table = PromptTable(cfg)
    write_table(table.batches(), str(tmp_path / "t"), rows_per_file=20)
    whole = pa.concat_tables(pq.read_table(f) for f in storage.glob(str(tmp_path / "t"), "*.parquet"))
    src = prompt_source(str(tmp_path / "t"))
    assert src.rows == whole.num_rows == table.num_rows and len(src.groups) > 3
    for start, stop in [(0, 5), (5, 26), (19, 21), (src.rows - 3, src.rows)]:
        got = src.read_rows(start, stop)
        assert got.column(POS).to_pylist() == list(range(start, stop))
        assert got.drop_columns([POS]).equals(whole.slice(start, stop - start).cast(PROMPT_SCHEMA))
    assert prompt_source(str(tmp_path / "t")).fingerprint == src.fingerprint


def test_missing_or_empty_tables_fail_naming_the_path(tmp_path):
    with pytest.raises(PromptTableError, match=str(tmp_path / "nope")):
        prompt_source(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PromptTableError, match="no Parquet files"):
        prompt_source(str(tmp_path / "empty"))
    pq.write_table(PROMPT_SCHEMA.empty_table(), tmp_path / "empty" / "part-00000.parquet")
    with pytest.raises(PromptTableError, match="empty"):
        prompt_source(str(tmp_path / "empty"))
    with pytest.raises(PromptTableError, match="empty"):
        stage_table(PROMPT_SCHEMA.empty_table(), str(tmp_path / "out"))


def test_plan_is_checked_on_resume(tmp_path):
    out = str(tmp_path / "out")
    src = prompt_source(stage_table(_table(10), out))
    plan = make_plan(src, "tiny-sd", GenerateConfig(shard_size=4))
    assert plan.num_shards == 3 and [plan.bounds(i) for i in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert check_or_write_plan(plan, out) is False
    assert check_or_write_plan(make_plan(src, "tiny-sd", GenerateConfig(shard_size=4, num_actors=2)), out) is True
    with pytest.raises(PlanChanged, match="steps"):
        check_or_write_plan(make_plan(src, "tiny-sd", GenerateConfig(shard_size=4, steps=3)), out)
    other = prompt_source(stage_table(_table(9), str(tmp_path / "other")))
    with pytest.raises(PlanChanged, match="input_fingerprint"):
        check_or_write_plan(make_plan(other, "tiny-sd", GenerateConfig(shard_size=4)), out)


def test_commit_writes_ordered_deterministic_shards_and_reports_failures(tmp_path):
    out = str(tmp_path / "out")
    prompts = _table(6)
    # two batches arriving out of order, one duplicated by a retried batch, one failed row
    write_part(out, 0, _fake_samples(prompts.slice(3, 3), 3, failed={1}))
    write_part(out, 0, _fake_samples(prompts.slice(0, 3), 0))
    write_part(out, 0, _fake_samples(prompts.slice(0, 3), 0))
    marker = commit_shard(out, 0, 0, 6, ["webdataset", "parquet"])
    assert marker["images"] == 5 and [f["seed"] for f in marker["failures"]] == [prompts["seed"][4].as_py()]
    assert marker["failures"][0]["error"] == "boom"
    assert not storage.exists(storage.join(out, "_parts", "shard-00000"))
    assert committed_shards(out)[0] == marker
    pq_rows = list(iter_samples(out, "parquet"))
    wds_rows = list(iter_samples(out, "webdataset"))
    assert [r["image"] for r in pq_rows] == [f"img{i}".encode() for i in (0, 1, 2, 3, 5)]
    assert pq_rows == wds_rows
    assert set(pq_rows[0]) == set(SAMPLE_SCHEMA.names)
    for info in marker["files"].values():
        data = storage.read_bytes(storage.join(out, info["path"]))
        assert hashlib.sha256(data).hexdigest() == info["sha256"] and len(data) == info["bytes"]
    # a retried commit (its parts already gone) returns the marker and leaves the shard's files alone
    mtimes = {f: os.path.getmtime(os.path.join(out, i["path"])) for f, i in marker["files"].items()}
    assert commit_shard(out, 0, 0, 6, ["webdataset", "parquet"]) == marker
    assert {f: os.path.getmtime(os.path.join(out, i["path"])) for f, i in marker["files"].items()} == mtimes
    # committing the same rows anew gives the same bytes (fixed tar headers, sorted rows)
    storage.remove(commit_uri(out, 0))
    write_part(out, 0, _fake_samples(prompts, 0, failed={4}))
    again = commit_shard(out, 0, 0, 6, ["webdataset", "parquet"])
    assert again["files"] == marker["files"]


def test_incomplete_shard_is_never_committed(tmp_path):
    out = str(tmp_path / "out")
    write_part(out, 1, _fake_samples(_table(3), 10))
    with pytest.raises(ShardIncomplete, match="expected 4"):
        commit_shard(out, 1, 10, 14, ["parquet"])
    assert committed_shards(out) == {}


def test_readers_and_the_webdataset_library_agree(tmp_path):
    import webdataset as wds

    out = str(tmp_path / "out")
    write_part(out, 0, _fake_samples(_table(4), 0))
    commit_shard(out, 0, 0, 4, ["webdataset"])
    with pytest.raises(FileNotFoundError, match="manifest"):
        read_manifest(out)
    files = shard_files(out, "webdataset")  # from commit markers while no manifest exists
    assert len(files) == 1 and files[0].endswith("webdataset/shard-00000.tar")
    with pytest.raises(ValueError, match="unknown format"):
        shard_files(out, "csv")
    lib = [sample_from_webdataset(s) for s in wds.WebDataset(files, shardshuffle=False, empty_check=False)]
    ours = list(iter_samples(out, "webdataset"))
    assert lib == ours and [s["__key__"] for s in wds.WebDataset(files, shardshuffle=False)] == [s["key"] for s in ours]
    first = next(iter(wds.WebDataset(files, shardshuffle=False)))
    assert set(first) >= {"__key__", "png", "json", "txt"}
    assert first["txt"].decode() == ours[0]["prompt"]
    assert json.loads(first["json"])["seed"] == ours[0]["seed"]


def test_the_one_tar_reader_groups_as_the_webdataset_library_does(tmp_path):
    import tarfile

    import webdataset as wds

    path = tmp_path / "shard.tar"
    members = [("a/x1.png", b"p1"), ("a/x1.seg.png", b"s1"), ("a/x1.json", b"{}"), ("x2.jpg", b"p2"), ("x2.txt", b"t")]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ours = list(iter_webdataset(str(path)))
    assert ours == [{"__key__": "a/x1", "png": b"p1", "seg.png": b"s1", "json": b"{}"},
                    {"__key__": "x2", "jpg": b"p2", "txt": b"t"}]
    lib = [{k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"}
           for s in wds.WebDataset([str(path)], shardshuffle=False, empty_check=False)]
    assert lib == ours
    with open(path, "rb") as f:  # an open file reads the same
        assert list(iter_webdataset(f)) == ours
