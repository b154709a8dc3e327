"""Drill: the worker node holding the generation actor is SIGKILLed mid-job and a replacement joins.
The job succeeds and every prompt row is in the WebDataset and the Parquet shards exactly once."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import time

import pyarrow.parquet as pq
import pytest
from drills import tiny_job

from dft import storage
from dft.generate.shards import committed_shards, iter_webdataset
from dft.runs import Run

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SETS = ("prompts.sample_fraction=0.05", "generate.steps=6", "generate.shard_size=16", "generate.batch_size=4")


def _prompt_rows(run: Run) -> collections.Counter:
    out = collections.Counter()
    for uri in storage.glob(storage.join(run.prompts, "diverse"), "*.parquet"):
        t = pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=["prompt_id", "seed"])
        out.update(zip(t["prompt_id"].to_pylist(), t["seed"].to_pylist()))
    return out


def test_generation_survives_losing_the_node_of_its_actor(local_cluster, jobs_for, s3_run):
    cluster = local_cluster(workers=1, worker_cpus=1)
    jobs = jobs_for(cluster)
    run = Run(s3_run)
    sid, res = jobs.submit(tiny_job("prompts", s3_run, *SETS), wait=True)
    assert res.returncode == 0, jobs.logs(sid)[-3000:]
    expected = _prompt_rows(run)
    assert sum(expected.values()) > 100

    sid, res = jobs.submit(tiny_job("generate", s3_run, *SETS))
    assert res.returncode == 0, res.stderr[-2000:]
    deadline = time.time() + 600
    while len(committed_shards(run.synthetic)) < 2:  # mid-job: some shards done, most to do
        assert time.time() < deadline and jobs.status(sid) in ("PENDING", "RUNNING"), jobs.logs(sid)[-3000:]
        time.sleep(0.5)
    done_before = len(committed_shards(run.synthetic))
    cluster.kill_node("worker-1")  # SIGKILL: raylet, agents, the generation actor and its committer
    cluster.add_node(cpus=1)
    assert jobs.wait(sid, timeout=900) == "SUCCEEDED", jobs.logs(sid)[-4000:]

    manifest = storage.read_json(storage.join(run.synthetic, "manifest.json"))
    assert done_before < manifest["num_shards"]  # the kill did land mid-job
    assert manifest["failures"] == 0 and manifest["images"] == manifest["rows"] == sum(expected.values())
    wds, parquet_rows, keys = collections.Counter(), collections.Counter(), collections.Counter()
    for shard in manifest["shards"]:
        for fmt, info in shard["files"].items():
            blob = storage.read_bytes(storage.join(run.synthetic, info["path"]))
            assert hashlib.sha256(blob).hexdigest() == info["sha256"], info["path"]  # checksums verify
            if fmt == "webdataset":
                for sample in iter_webdataset(io.BytesIO(blob)):
                    meta = json.loads(sample["json"])
                    wds[(meta["prompt_id"], meta["seed"])] += 1
                    keys[sample["__key__"]] += 1
            else:
                t = pq.read_table(io.BytesIO(blob), columns=["prompt_id", "seed"])
                parquet_rows.update(zip(t["prompt_id"].to_pylist(), t["seed"].to_pylist()))
    assert wds == expected  # every prompt row exactly once: none missing, none doubled
    assert parquet_rows == expected
    assert max(keys.values()) == 1
