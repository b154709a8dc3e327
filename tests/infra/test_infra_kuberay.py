"""cluster/kuberay would run the presets: worker pods advertise what a fine-tuning worker asks for and
fit the node types terraform gives the GPU pool, there are enough of them, the preStop hook keeps its
word, and the RayJobs use KubeRay v1 fields with the semantics their comments state."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from infra_helpers import CLUSTER, INSTANCE_TYPES, fits, preset_demands, tf_default

KUBERAY = CLUSTER / "kuberay"
RAYJOBS = sorted(KUBERAY.glob("rayjob-*.yaml"))

# KubeRay v1 RayJobSpec's fields (ray-operator/apis/ray/v1/rayjob_types.go).
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML",
    "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
    "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule",
}


@pytest.fixture(scope="module")
def raycluster() -> dict:
    (doc,) = [d for d in yaml.safe_load_all((KUBERAY / "raycluster.yaml").read_text()) if d]
    return doc


def _cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if str(q).endswith("m") else float(q)


def _gib(q: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Gi|Mi)", str(q))
    assert m, q
    return float(m.group(1)) / (1024 if m.group(2) == "Mi" else 1)


def _ray_resources(group) -> dict:
    """What the worker pod's Ray node advertises: rayStartParams, else the container's limits."""
    (c,) = group["template"]["spec"]["containers"]
    params, limits = group["rayStartParams"], c["resources"]["limits"]
    return {"CPU": float(params.get("num-cpus", _cpu(limits["cpu"]))),
            "GPU": float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))}


def test_worker_pods_hold_every_preset_bundle(raycluster):
    """Pods used to advertise their 3-CPU limit: a fine-tuning worker {CPU: 6, GPU: 1} never fit."""
    for g in raycluster["spec"]["workerGroupSpecs"]:
        (c,) = g["template"]["spec"]["containers"]
        res = _ray_resources(g)
        # What Ray advertises is what the container may use.
        assert res["CPU"] <= _cpu(c["resources"]["limits"]["cpu"]), g["groupName"]
        assert res["GPU"] == int(c["resources"]["limits"]["nvidia.com/gpu"]), g["groupName"]
        for d in preset_demands():
            assert fits(d.bundle, res) >= 1, f"{d.what}: {d.bundle} does not fit {g['groupName']} {res}"


def test_worker_pods_fit_the_gpu_node_types(raycluster):
    """A pod that asks for more than a node of the pool can give stays Pending forever."""
    types = json.loads(tf_default("gpu_instance_types"))
    for g in raycluster["spec"]["workerGroupSpecs"]:
        (c,) = g["template"]["spec"]["containers"]
        req = c["resources"]["requests"]
        assert req == c["resources"]["limits"], "requests = limits: Guaranteed QoS, no CPU throttling surprises"
        for t in types:
            cpus, gpus, mem = INSTANCE_TYPES[t]
            # EKS reserves ~0.1 vCPU and ~1 GiB for the kubelet; daemons (CNI, kube-proxy) take ~0.2 vCPU.
            assert _cpu(req["cpu"]) <= cpus - 0.5, (t, req)
            assert _gib(req["memory"]) <= mem - 3, (t, req)
            assert int(req["nvidia.com/gpu"]) <= gpus, (t, req)


def test_gpu_capacity_covers_what_the_presets_ask_at_once(raycluster):
    """Fine-tuning needs all its workers at the same time: gpu_max_size was 4 for 8."""
    need = max(d.count * d.bundle["GPU"] for d in preset_demands())
    gpu_nodes = int(tf_default("gpu_max_size"))
    per_node = min(INSTANCE_TYPES[t][1] for t in json.loads(tf_default("gpu_instance_types")))
    assert gpu_nodes * per_node >= need, (gpu_nodes, per_node, need)
    pods = sum(g["maxReplicas"] * _ray_resources(g)["GPU"] for g in raycluster["spec"]["workerGroupSpecs"])
    assert pods >= need, (pods, need)


def _prestop(group) -> str:
    (c,) = group["template"]["spec"]["containers"]
    return " ".join(c["lifecycle"]["preStop"]["exec"]["command"])


def test_prestop_waits_the_deadline_it_announces_within_the_grace_period(raycluster):
    for g in raycluster["spec"]["workerGroupSpecs"]:
        cmd = _prestop(g)
        deadline = int(re.search(r"--deadline-remaining-seconds (\d+)", cmd).group(1))
        sleep = int(re.search(r"\bsleep (\d+)", cmd).group(1))
        grace = g["template"]["spec"]["terminationGracePeriodSeconds"]
        assert sleep == deadline, f"announces {deadline} s but keeps the pod {sleep} s"
        # The grace period counts the preStop hook; Ray needs a moment after SIGTERM too.
        assert grace >= sleep + 10, (grace, sleep)


def test_head_pod_names_the_bucket_for_the_presets(raycluster):
    (head,) = raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in head.get("env", [])}
    assert "DFT_BUCKET" in env, "jobs/configs/*_cluster.yaml read s3://${DFT_BUCKET}/..."


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.stem)
def test_rayjob_fields_and_comments_are_kuberays(path):
    text = path.read_text()
    (job,) = [d for d in yaml.safe_load_all(text) if d]
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC_FIELDS, set(spec) - RAYJOB_SPEC_FIELDS
    # With clusterSelector a KubeRay retry deletes the selected (shared) RayCluster: no retries.
    assert "clusterSelector" in spec and spec["backoffLimit"] == 0
    assert spec.get("shutdownAfterJobFinishes", False) is False
    assert spec["activeDeadlineSeconds"] > 0
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    # A finished RayJob does not run again when re-applied; the comments used to promise it would.
    assert not re.search(r"re-?apply(ing)? after a failure is safe", comments, re.I)
    assert "delete the RayJob" in comments and "same run.uri" in comments
    assert f"kubectl create -f cluster/kuberay/{path.name}" in comments


def test_raycluster_resources_set_once(raycluster):
    """KubeRay rejects a group that sets resources both in rayStartParams and in its resources field."""
    for g in [raycluster["spec"]["headGroupSpec"], *raycluster["spec"]["workerGroupSpecs"]]:
        in_params = {"num-cpus", "num-gpus", "memory", "resources"} & set(g.get("rayStartParams", {}))
        assert not (in_params and g.get("resources")), g.get("groupName", "head")


def test_docs_state_the_prestop_numbers():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cluster.md").read_text()
    assert "waits 60 s" not in doc
