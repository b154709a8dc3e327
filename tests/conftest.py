"""Shared fixtures. Unit tests start no Ray; integration tests share one local Ray session.
Nothing touches the network: the hub is offline and S3 is a local moto server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# One model cache for the whole session (built-in tiny models are built once, then loaded).
_CACHE = Path(os.environ.get("DFT_TEST_CACHE", Path(__file__).resolve().parent.parent / ".cache" / "test-models"))
os.environ.setdefault("DFT_CACHE", str(_CACHE))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The S3 endpoint and dummy credentials are in the environment from the start, before any Ray
# process is spawned, so every Ray process (Train controllers included) inherits them; the server
# itself starts only when a test asks for it. No test reaches a real AWS endpoint.
_S3_PORT = _free_port()
os.environ.update(
    AWS_ENDPOINT_URL=f"http://127.0.0.1:{_S3_PORT}",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on 127.0.0.1 (moto's server mode), with a bucket ``dft-test``, at the
    AWS_ENDPOINT_URL set above: s3fs, pyarrow and Ray workers reach it through the standard AWS
    environment, as on a real cluster."""
    port = _S3_PORT
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="dft-test")
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_uri(s3_server, request):
    """A fresh s3:// prefix per test."""
    import uuid

    return f"s3://dft-test/{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for all integration tests (2 CPUs, no dashboard)."""
    import ray

    from dft.cluster import prefer_local_worker_niceness

    if not ray.is_initialized():
        prefer_local_worker_niceness()  # as dft.cluster.connect starts an embedded Ray
        # A new local Ray, never one found on the machine (a drill's `ray start` cluster, say), as
        # dft.cluster.connect starts an embedded one.
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one thread is 5x faster than fighting over two."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def tmp_run(tmp_path):
    return str(tmp_path / "run")
