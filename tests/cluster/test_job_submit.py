"""The job path as the README documents it: `ray job submit --working-dir . -- python jobs/<stage>.py`
against a head with no CPUs and a worker node, token authentication on."""

from __future__ import annotations

import json

import pytest
from drills import tiny_job

from dft import storage
from dft.runs import Run

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_jobs_run_in_the_project_env_write_where_run_uri_says_and_fail_clearly(local_cluster, jobs_for, s3_run,
                                                                               tmp_path):
    cluster = local_cluster(workers=1, worker_cpus=1)
    jobs = jobs_for(cluster)

    # What the job sees: the project's venv, a working dir without .venv/, runs/ or caches.
    probe = ["python", "-c", "import os, sys, json; print('PROBE', json.dumps({'exe': sys.executable, "
             "'ls': sorted(os.listdir('.')), 'x': os.environ.get('DFT_PROBE')}))"]
    sid, res = jobs.submit(probe, env_vars={"DFT_PROBE": "seen"}, wait=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    seen = json.loads(jobs.logs(sid).split("PROBE ", 1)[1].splitlines()[0])
    assert seen["exe"].startswith(str(cluster.env()["PATH"].split(":")[0]))  # the venv's python
    assert {"dft", "jobs", "pyproject.toml"} <= set(seen["ls"])
    assert not {".venv", "runs", ".cache"} & set(seen["ls"]), seen["ls"]
    assert seen["x"] == "seen"

    # Without the token the job API refuses (authentication is on for the shell too).
    no_token = {**jobs.env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    _, res = jobs.submit(probe, wait=True, env=no_token, timeout=120)
    assert res.returncode != 0 and "auth" in (res.stdout + res.stderr).lower()

    # The prompts and generation stages, with --runtime-env-json env_vars, into an s3:// run folder.
    sid, res = jobs.submit(tiny_job("prompts", s3_run, "prompts.sample_fraction=0.02"),
                           env_vars={"DFT_PROBE": "1"}, wait=True)
    assert res.returncode == 0, jobs.logs(sid)[-3000:]
    sid, res = jobs.submit(tiny_job("generate", s3_run, "prompts.sample_fraction=0.02", "generate.steps=2"),
                           env_vars={"DFT_PROBE": "1"}, wait=True)
    assert res.returncode == 0, jobs.logs(sid)[-3000:]
    manifest = storage.read_json(storage.join(Run(s3_run).synthetic, "manifest.json"))
    assert manifest["images"] == manifest["rows"] > 0

    # A relative run folder would land in Ray's temporary copy of the working dir: refused, by name.
    sid, res = jobs.submit(tiny_job("prompts", "runs/relative"), wait=True)
    assert res.returncode != 0
    assert "run.uri: 'runs/relative' is a relative path" in jobs.logs(sid)

    # A stage whose actors cannot be placed fails after ray.placement_timeout_s, saying what it asked for.
    sid, res = jobs.submit(tiny_job("generate", s3_run, "prompts.sample_fraction=0.02", "generate.steps=2",
                                    "generate.num_cpus_per_actor=4", "ray.placement_timeout_s=5") + ["--force"],
                           wait=True, timeout=300)
    assert res.returncode != 0
    logs = " ".join(jobs.logs(sid).split())  # the console wraps long lines
    assert "asked for 1 x {CPU: 4}" in logs, logs[-2000:]
    nodes = logs.split("its nodes have ", 1)[1].split(". ", 1)[0]
    assert sorted(nodes.split(", ")) == ["{CPU: 0}", "{CPU: 1}"], nodes  # the head (no CPUs) and the worker
