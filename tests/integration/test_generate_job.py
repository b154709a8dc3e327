"""The Ray Data generation job on the shared local Ray: completeness in both formats, determinism across
actor counts, a crashed actor, a killed and restarted driver, S3 output and the failure threshold."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from dft import storage
from dft.generate.config import GenerateConfig
from dft.generate.core import settings_hash
from dft.generate.job import GenerationFailed, generate_dataset
from dft.generate.shards import iter_samples, read_failures, read_manifest, shard_files
from dft.prompts.config import PromptsConfig
from dft.prompts.table import neutral_table
from dft.schema import sample_key

pytestmark = pytest.mark.integration

MODEL = "tiny-sd"


def _table(n):
    table = neutral_table(PromptsConfig(neutral_max_professions=3), images_per_prompt=16)
    assert table.num_rows >= n
    return table.slice(0, n)


def _expected_keys(table, cfg):
    h = settings_hash(cfg)
    return {sample_key(r["prompt_id"], r["image_index"], r["seed"], MODEL, h) for r in table.to_pylist()}


CFG = GenerateConfig(steps=2, batch_size=4, shard_size=8, num_actors=2)
TABLE_ROWS = 20


@pytest.fixture(scope="module")
def two_actor_run(ray_session, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("gen") / "two")
    counts = generate_dataset(_table(TABLE_ROWS), out, MODEL, CFG, progress=False)
    return out, counts


def test_every_row_exactly_once_in_both_formats_and_readers(two_actor_run, ray_session):
    import ray
    import webdataset as wds

    out, counts = two_actor_run
    expected = _expected_keys(_table(TABLE_ROWS), CFG)
    assert counts["rows"] == counts["images"] == TABLE_ROWS and counts["failures"] == 0
    assert counts["shards"] == 3 and counts["images_per_s"] > 0
    manifest = read_manifest(out)
    assert manifest["keys"] == TABLE_ROWS and [s["images"] for s in manifest["shards"]] == [8, 8, 4]
    for s in manifest["shards"]:
        for info in s["files"].values():
            data = storage.read_bytes(storage.join(out, info["path"]))
            assert hashlib.sha256(data).hexdigest() == info["sha256"] and len(data) == info["bytes"]
    pq_files, tar_files = shard_files(out, "parquet"), shard_files(out, "webdataset")
    assert [os.path.basename(f) for f in tar_files] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]

    by_ray_parquet = ray.data.read_parquet(pq_files).select_columns(["key", "image"]).take_all()
    by_ray_wds = ray.data.read_webdataset(tar_files, decoder=None).take_all()
    by_lib = list(wds.WebDataset(tar_files, shardshuffle=False))
    ours = {fmt: list(iter_samples(out, fmt)) for fmt in ("parquet", "webdataset")}
    for keys in ([r["key"] for r in by_ray_parquet], [r["__key__"] for r in by_ray_wds], [s["__key__"] for s in by_lib],
                 [s["key"] for s in ours["parquet"]], [s["key"] for s in ours["webdataset"]]):
        assert len(keys) == TABLE_ROWS and set(keys) == expected
    images = {r["key"]: r["image"] for r in by_ray_parquet}
    assert all(images[r["__key__"]] == r["png"] for r in by_ray_wds)
    assert ours["parquet"] == ours["webdataset"]
    assert read_failures(out) == []
    assert not storage.listdir(storage.join(out, "_parts"))


def test_one_crashing_actor_gives_the_same_bytes_as_two_actors(two_actor_run, ray_session, tmp_path):
    """1 actor instead of 2, and that actor is killed after 2 batches: Ray restarts it, the batch is redone,
    and every image is byte-identical to the 2-actor run (same batch size, same batch composition)."""
    out2, _ = two_actor_run
    out1 = str(tmp_path / "one")
    cfg = CFG.model_copy(update={"num_actors": 1, "fault_inject_crash_after": 2})
    counts = generate_dataset(_table(TABLE_ROWS), out1, MODEL, cfg, progress=False)
    assert storage.exists(storage.join(out1, "_fault_injected")), "the fault switch did not fire"
    assert counts["images"] == TABLE_ROWS and counts["failures"] == 0
    a = {s["key"]: s["image"] for s in iter_samples(out1, "parquet")}
    b = {s["key"]: s["image"] for s in iter_samples(out2, "parquet")}
    assert len(a) == TABLE_ROWS and a == b
    assert read_manifest(out1)["shards"] == read_manifest(out2)["shards"]  # same files, same checksums


_CHILD = """
import sys, ray
from dft.generate.config import GenerateConfig
from dft.generate.job import generate_dataset
from dft.prompts.config import PromptsConfig
from dft.prompts.table import neutral_table
ray.init(address=sys.argv[1], logging_level="WARNING")
table = neutral_table(PromptsConfig(neutral_max_professions=3), images_per_prompt=16).slice(0, int(sys.argv[3]))
generate_dataset(table, sys.argv[2], "tiny-sd", GenerateConfig.model_validate_json(sys.argv[4]), progress=False)
"""


def test_killed_driver_then_restart_does_only_missing_shards(ray_session, tmp_path):
    out = str(tmp_path / "killed")
    rows, shards = 24, 6
    cfg = GenerateConfig(steps=8, batch_size=2, shard_size=4, num_actors=1)
    address = ray_session.get_runtime_context().gcs_address
    child = subprocess.Popen([sys.executable, "-c", _CHILD, address, out, str(rows), cfg.model_dump_json()],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    commits = storage.join(out, "_commits")
    deadline = time.time() + 240
    while not storage.listdir(commits) and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    # A commit the dead driver had already submitted may still land while Ray reaps its job: wait for quiet.
    seen, quiet_since = -1, time.time()
    while time.time() - quiet_since < 2:
        n = len(storage.listdir(commits))
        if n != seen:
            seen, quiet_since = n, time.time()
        time.sleep(0.2)
    before = {}
    for name in storage.listdir(commits):
        marker = storage.read_json(storage.join(commits, name))
        for info in marker["files"].values():
            path = storage.join(out, info["path"])
            before[path] = (os.stat(path).st_mtime_ns, storage.read_bytes(path))
    done_before = len(storage.listdir(commits))
    assert 1 <= done_before < shards, f"kill landed at {done_before} of {shards} shards: the test needs a partial run"
    counts = generate_dataset(_table(rows), out, MODEL, cfg, progress=False)
    assert counts["shards_skipped"] == done_before and counts["shards_generated"] == shards - done_before
    assert read_manifest(out)["resumed"] is True
    for path, (mtime, data) in before.items():  # finished shards untouched
        assert os.stat(path).st_mtime_ns == mtime and storage.read_bytes(path) == data
    for fmt in ("parquet", "webdataset"):
        keys = [s["key"] for s in iter_samples(out, fmt)]
        assert len(keys) == rows and set(keys) == _expected_keys(_table(rows), cfg)
    again = generate_dataset(_table(rows), out, MODEL, cfg, progress=False)  # nothing left: no actor starts
    assert again["shards_generated"] == 0 and again["images"] == rows


@pytest.mark.s3
def test_s3_output_with_a_failing_row_and_the_failure_threshold(ray_session, s3_uri, monkeypatch):
    import ray

    table = _table(6)
    bad_seed = table["seed"][3].as_py()
    monkeypatch.setenv("DFT_FAULT_INJECT", f"fail_seeds={bad_seed}")
    cfg = GenerateConfig(steps=2, batch_size=3, shard_size=4, num_actors=1, row_retries=1)
    # Dummy credentials of the local S3 server for the workers (a real cluster uses instance roles).
    creds = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    with pytest.raises(GenerationFailed, match="1 of 6 rows failed"):
        generate_dataset(table, s3_uri, MODEL, cfg, progress=False, worker_env=creds)
    failures = read_failures(s3_uri)
    assert [f["seed"] for f in failures] == [bad_seed] and "injected failure" in failures[0]["error"]
    manifest = read_manifest(s3_uri)
    assert manifest["failures"] == 1 and manifest["images"] == 5
    files = shard_files(s3_uri, "parquet")
    assert all(f.startswith("s3://dft-test/") for f in files)
    # Ray Data's own file listing runs in tasks that see neither the endpoint nor the dummy credentials:
    # hand it a filesystem object that carries both.
    import pyarrow.fs as pafs

    host = os.environ["AWS_ENDPOINT_URL"].split("://", 1)[1]
    fs = pafs.S3FileSystem(access_key=creds["AWS_ACCESS_KEY_ID"], secret_key=creds["AWS_SECRET_ACCESS_KEY"],
                           endpoint_override=host, scheme="http", region="us-east-1")
    rows = ray.data.read_parquet([f[len("s3://"):] for f in files], filesystem=fs).select_columns(["seed"]).take_all()
    assert sorted(r["seed"] for r in rows) == sorted(s for s in table["seed"].to_pylist() if s != bad_seed)
    tars = [f[len("s3://"):] for f in shard_files(s3_uri, "webdataset")]
    assert ray.data.read_webdataset(tars, filesystem=fs, decoder=None).count() == 5
    # a looser threshold accepts the same output without redoing anything
    counts = generate_dataset(table, s3_uri, MODEL, cfg.model_copy(update={"max_failures_fraction": 0.2}),
                              progress=False, worker_env=creds)
    assert counts["failures"] == 1 and counts["shards_generated"] == 0
