"""cluster/aws/spot_watch.py turns an EC2 spot interruption notice (IMDSv2) into `ray drain-node`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from infra_helpers import CLUSTER

SCRIPT = CLUSTER / "aws" / "spot_watch.py"


class FakeIMDS(BaseHTTPRequestHandler):
    notice: dict | None = None

    def do_PUT(self):  # IMDSv2 session token
        ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        self._reply(200 if ok else 400, b"tok")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != "tok":
            return self._reply(401, b"")
        if self.path == "/latest/meta-data/spot/instance-action" and self.notice:
            return self._reply(200, json.dumps(self.notice).encode())
        self._reply(404, b"")

    def _reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def imds():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeIMDS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    FakeIMDS.notice = None


def _run(imds, tmp_path):
    record = tmp_path / "ray-args"
    fake_ray = tmp_path / "ray"
    fake_ray.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    fake_ray.chmod(0o755)
    env = dict(os.environ, DFT_IMDS_ENDPOINT=f"http://127.0.0.1:{imds.server_port}")
    res = subprocess.run([sys.executable, str(SCRIPT), "--once", "--ray-bin", str(fake_ray)],
                         env=env, capture_output=True, text=True, timeout=60)
    return res, (record.read_text().splitlines() if record.exists() else None)


def test_no_notice_no_drain(imds, tmp_path):
    res, args = _run(imds, tmp_path)
    assert res.returncode == 1, res.stderr
    assert args is None


def test_notice_drains_with_deadline(imds, tmp_path):
    when = datetime.now(timezone.utc) + timedelta(seconds=110)
    FakeIMDS.notice = {"action": "terminate", "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
    res, args = _run(imds, tmp_path)
    assert res.returncode == 0, res.stderr
    assert args[:3] == ["drain-node", "--reason", "DRAIN_NODE_REASON_PREEMPTION"]
    deadline = int(args[args.index("--deadline-remaining-seconds") + 1])
    assert 90 <= deadline <= 110
    assert "spot interruption" in args[args.index("--reason-message") + 1]
