"""Real Ray clusters on this machine for the drills: each test starts its own head (no CPUs) and
worker nodes with cluster/local/raylocal.py, submits jobs through the job API (`ray job submit`, as a
user does), keeps its run folder on the local S3 server so no node relies on another's disk, and stops
exactly the processes it started."""

from __future__ import annotations

import shutil
import uuid

import pytest
from drills import Jobs, raylocal


@pytest.fixture
def local_cluster(request):
    """A function that starts a cluster (head with 0 CPUs, ``workers`` nodes); all are stopped after."""
    started = []

    def start(workers: int = 1, worker_cpus: float = 1, **kw):
        root = f"/tmp/dftd-{uuid.uuid4().hex[:6]}"  # short: Ray's socket paths must fit in 107 bytes
        c = raylocal.Cluster(root)
        started.append(c)
        c.up(head_cpus=0, workers=workers, worker_cpus=worker_cpus, **kw)
        return c

    yield start
    for c in started:
        pids = [n["pid"] for n in c.load()["nodes"].values()] if c.state_file.exists() else []
        # A node that ran jobs can take the whole graceful 30 s (about 31 s of teardown a drill, measured);
        # the drill is over and its results are read, so 5 s then SIGKILL is enough here.
        c.down(timeout=5)
        assert not [p for p in pids if raylocal._alive(p)], "a node outlived down()"
        shutil.rmtree(c.root, ignore_errors=True)  # its temp dirs and logs (job logs are in the test output)


@pytest.fixture
def jobs_for():
    return Jobs


@pytest.fixture
def s3_run(s3_server, request):
    return f"s3://dft-test/drill-{request.node.name[:30]}-{uuid.uuid4().hex[:6]}"
