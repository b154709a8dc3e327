"""Drills of the fine-tuning job on real nodes: a spot reclaim with notice (`ray drain-node`, reason
preemption, a deadline), a node lost without notice, and a state API that answers nothing. The run
folder is on the local S3 server; the head has no CPUs, so the train worker runs on a worker node. Worker
nodes have 2 CPUs: the train worker's, and one for Ray Data, which re-runs the preprocessing tasks whose
materialized blocks were lost with a node (with one CPU that re-run waits forever behind the worker)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time

import pytest
from drills import RAY, REPO, tiny_job
from train_shards import write_shards

from dft import storage
from dft.runs import Run

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RESULTS = REPO / ".cache" / "drills"


def _train_job(run_uri: str, steps: int, *sets: str) -> list[str]:
    job = tiny_job("finetune", run_uri, f"train.max_steps={steps}", "train.batch_size=8", "train.log_every=5",
                   "train.preemption_check_every=1", "train.keep_checkpoints=20", "train.caption_policy=prompt",
                   "train.deterministic_data=true", *sets)
    return job


def _upload_shards(run_uri: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        write_shards(d, n=64, shard_size=32)
        storage.upload_folder(d, Run(run_uri).synthetic)


def _steps(run_uri: str) -> list[int]:
    found = storage.glob(storage.join(Run(run_uri).checkpoints, "local-tiny"), "checkpoint_*/state.json")
    return sorted(storage.read_json(u)["step"] for u in found)


def _last_step(text: str) -> int:
    steps = [int(m) for m in re.findall(r"train step (\d+)/", text)]
    return max(steps) if steps else 0


def _record(name: str, figures: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2))
    print(f"\n{name}: {json.dumps(figures)}")


def test_spot_reclaim_with_notice_checkpoints_once_and_resumes(local_cluster, jobs_for, s3_run):
    cluster = local_cluster(workers=1, worker_cpus=2)
    jobs = jobs_for(cluster)
    _upload_shards(s3_run)
    # 200 steps: the kill lands near step 65-75 on 2 cores (20 s of notice after step 20), far from the end even
    # on a machine twice as fast; the steps after the resume only cost time.
    steps, deadline_s = 200, 20
    # No periodic checkpoint before the end: the only one mid-run can be the preemption checkpoint.
    sid, res = jobs.submit(_train_job(s3_run, steps, "train.checkpoint_every=1000", "train.max_failures=0"))
    assert res.returncode == 0, res.stderr[-2000:]
    jobs.wait_for_log(sid, lambda t: _last_step(t) >= 20, timeout=600)

    node = cluster.load()["nodes"]["worker-1"]
    gcs = cluster.load()["gcs"]
    t_notice = time.time()
    drain = subprocess.run([RAY, "drain-node", "--address", gcs, "--node-id", node["node_id"], "--reason",
                            "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim drill",
                            "--deadline-remaining-seconds", str(deadline_s)],
                           capture_output=True, text=True, env=jobs.env, timeout=60)
    assert drain.returncode == 0, drain.stdout + drain.stderr
    time.sleep(max(0.0, t_notice + deadline_s - time.time()))
    at_kill = _last_step(jobs.logs(sid))
    cluster.kill_node("worker-1")  # the deadline: the instance goes
    t_kill = time.time()
    cluster.add_node(cpus=2)
    text = jobs.wait_for_log(sid, lambda t: "resumed from step" in t, timeout=600, poll=0.5)
    t_resumed = time.time()
    assert jobs.wait(sid, timeout=900) == "SUCCEEDED", jobs.logs(sid)[-4000:]
    text = jobs.logs(sid)

    ckpts = _steps(s3_run)
    assert len(ckpts) == 2 and ckpts[-1] == steps, ckpts  # exactly one preemption checkpoint, then the final
    saved = ckpts[0]
    assert 20 <= saved <= at_kill
    assert text.count("node preemption notice") == 1
    assert f"resumed from step {saved} " in text  # the step count continues from the checkpoint
    final = storage.read_json(storage.glob(storage.join(Run(s3_run).checkpoints, "local-tiny"),
                                           "checkpoint_*/state.json")[-1])
    assert final["samples_seen"] == steps * 8  # no step counted twice, none lost
    _record("spot_reclaim", {"steps": steps, "deadline_s": deadline_s, "checkpoint_step": saved,
                             "step_at_kill": at_kill, "steps_redone": at_kill - saved,
                             "seconds_kill_to_resumed": round(t_resumed - t_kill, 1)})


def test_node_lost_without_notice(local_cluster, jobs_for, s3_server):
    cluster = local_cluster(workers=1, worker_cpus=2)
    jobs = jobs_for(cluster)

    # Failures allowed: the run resumes from its last periodic checkpoint on the replacement node.
    run = f"s3://dft-test/drill-lost-{os.getpid()}-{int(time.time())}"
    _upload_shards(run)
    sid, _ = jobs.submit(_train_job(run, 120, "train.checkpoint_every=20", "train.max_failures=1"))
    jobs.wait_for_log(sid, lambda t: _last_step(t) >= 50, timeout=600)
    cluster.kill_node("worker-1")
    t_kill = time.time()
    at_kill = _last_step(jobs.logs(sid))
    cluster.add_node(cpus=2)
    jobs.wait_for_log(sid, lambda t: "resumed from step" in t, timeout=600)
    t_resumed = time.time()
    assert jobs.wait(sid, timeout=900) == "SUCCEEDED", jobs.logs(sid)[-4000:]
    resumed = int(re.search(r"resumed from step (\d+)", jobs.logs(sid)).group(1))
    assert resumed % 20 == 0 and 40 <= resumed <= at_kill, (resumed, at_kill)
    assert _steps(run)[-1] == 120
    _record("node_lost", {"checkpoint_every": 20, "resumed_from": resumed, "step_at_kill": at_kill,
                          "steps_redone": at_kill - resumed, "seconds_kill_to_resumed": round(t_resumed - t_kill, 1)})

    # No failures allowed: the job fails, and says what happened and what to do.
    run = run + "-strict"
    _upload_shards(run)
    sid, _ = jobs.submit(_train_job(run, 200, "train.checkpoint_every=20", "train.max_failures=0"))
    jobs.wait_for_log(sid, lambda t: _last_step(t) >= 30, timeout=600)
    cluster.kill_node("worker-2")
    cluster.add_node(cpus=2)
    assert jobs.wait(sid, timeout=600) == "FAILED"
    text = " ".join(jobs.logs(sid).split())
    assert "training failed and train.max_failures=0 allows no further restart" in text, text[-3000:]
    assert "re-submit the same job to resume from it" in text
    # The driver ends with that line, not a traceback (Ray's controller logs its own worker errors).
    assert 'jobs/finetune.py", line' not in text and 'dft/train/job.py", line' not in text


def test_a_state_api_that_answers_nothing_does_not_tear_down_the_run(local_cluster, jobs_for, s3_run):
    cluster = local_cluster(workers=1, worker_cpus=2)
    jobs = jobs_for(cluster)
    _upload_shards(s3_run)
    # Every liveness question of the placement-group cleaner gets no answer, for the whole run.
    sid, res = jobs.submit(_train_job(s3_run, 60, "train.checkpoint_every=20", "train.max_failures=0"),
                           env_vars={"DFT_FAULT_INJECT": "controller_state=silent"}, wait=True)
    text = jobs.logs(sid)
    assert res.returncode == 0, text[-4000:]
    assert "resumed from step" not in text and "placement group was removed" not in text
    assert _steps(s3_run)[-1] == 60
    # The fault did reach the cleaner: it logged that it got no answer and kept the workers.
    head_logs = os.path.join(cluster.load()["nodes"]["head"]["temp_dir"], "session_latest", "logs")
    seen = subprocess.run(["grep", "-rl", "gave no answer", head_logs], capture_output=True, text=True).stdout
    assert seen or "gave no answer" in text
