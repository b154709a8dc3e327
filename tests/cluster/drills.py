"""Helpers of the cluster drills: the local cluster tool and the job API, as a user drives them."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")

_spec = importlib.util.spec_from_file_location("raylocal", REPO / "cluster" / "local" / "raylocal.py")
raylocal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(raylocal)


class Jobs:
    """`ray job submit/status/logs/stop` against one local cluster, from a shell set up as the README says."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.env = {**os.environ, **cluster.env()}

    def _ray(self, *args, timeout=120, env=None) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=env or self.env)

    def submit(self, entrypoint: list[str], *, env_vars: dict | None = None, wait: bool = False,
               timeout: float = 900, env: dict | None = None) -> tuple[str, subprocess.CompletedProcess]:
        sid = f"drill-{uuid.uuid4().hex[:8]}"
        args = ["job", "submit", "--submission-id", sid, "--working-dir", "."]
        if env_vars:
            args += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
        if not wait:
            args.append("--no-wait")
        res = self._ray(*args, "--", *entrypoint, timeout=timeout, env=env)
        return sid, res

    def status(self, sid: str) -> str:
        """The job's status through the job API's client (the CLI prints it only as prose)."""
        code = ("import sys; from ray.job_submission import JobSubmissionClient as C; "
                "print('STATUS', C().get_job_status(sys.argv[1]).value)")
        res = subprocess.run([sys.executable, "-c", code, sid], capture_output=True, text=True, timeout=120,
                             cwd=REPO, env=self.env)
        found = re.search(r"^STATUS (\w+)$", res.stdout, re.M)
        return found.group(1) if found else "UNKNOWN"

    def logs(self, sid: str) -> str:
        return self._ray("job", "logs", sid).stdout

    def wait(self, sid: str, timeout: float = 900) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.status(sid)
            if state in ("SUCCEEDED", "FAILED", "STOPPED"):
                return state
            time.sleep(2)
        self._ray("job", "stop", sid)
        raise AssertionError(f"job {sid} still running after {timeout}s:\n{self.logs(sid)[-3000:]}")

    def wait_for_log(self, sid: str, predicate, timeout: float = 600, poll: float = 0.5) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.logs(sid)
            if predicate(text):
                return text
            if self.status(sid) in ("SUCCEEDED", "FAILED", "STOPPED"):
                raise AssertionError(f"job {sid} ended before the awaited log line:\n{text[-3000:]}")
            time.sleep(poll)
        raise AssertionError(f"awaited log line not seen in {timeout}s:\n{self.logs(sid)[-3000:]}")


def tiny_job(stage: str, run_uri: str, *sets: str) -> list[str]:
    return ["python", f"jobs/{stage}.py", "--config", "jobs/configs/local_tiny.yaml",
            "--set", f"run.uri={run_uri}", *[a for s in sets for a in ("--set", s)]]
