"""cluster/: the AWS cluster launcher config and the KubeRay manifests, checked for structure
(Ray's own schema for the launcher config; PyYAML for the Kubernetes objects)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from infra_helpers import CLUSTER, REPO, TF_ROOT

AWS_CONFIG = CLUSTER / "aws" / "dft-cluster.yaml"
KUBERAY = CLUSTER / "kuberay"
STAGE_JOBS = {"generate", "finetune", "evaluate"}


@pytest.fixture(scope="module")
def aws_cfg() -> dict:
    return yaml.safe_load(AWS_CONFIG.read_text())


def _workers(cfg):
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def test_launcher_config_passes_rays_schema(aws_cfg):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(aws_cfg)
    validate_config(prepare_config(copy.deepcopy(aws_cfg)))


def test_launcher_head_on_demand_workers_spot_and_on_demand(aws_cfg):
    head = aws_cfg["available_node_types"][aws_cfg["head_node_type"]]
    assert "InstanceMarketOptions" not in head["node_config"], "the head must not be spot"
    assert not head["node_config"]["InstanceType"].startswith(("g", "p")), "the head is a CPU instance"
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0

    workers = _workers(aws_cfg)
    spot = {k for k, v in workers.items() if v["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"}
    on_demand = set(workers) - spot
    assert len(spot) >= 2 and on_demand, "several spot GPU types and on-demand ones for when spot is short"
    for name, w in workers.items():
        assert re.match(r"(g5|g6|g6e|p4d|p4de|p5)\.", w["node_config"]["InstanceType"]), name
        assert w["min_workers"] == 0 and w["max_workers"] >= 1, name
    assert sum(w["max_workers"] for w in workers.values()) >= aws_cfg["max_workers"]
    assert max(workers[k]["max_workers"] for k in on_demand) <= 2, "the on-demand types stay small"
    assert aws_cfg["provider"]["cache_stopped_nodes"] is False, "spot nodes cannot be stopped"


def test_launcher_profiles_match_terraform_names(aws_cfg):
    """The config names the instance profiles that infra/terraform creates with its default name_prefix."""
    variables = (TF_ROOT / "variables.tf").read_text()
    prefix = re.search(r'variable "name_prefix" \{.*?default\s*=\s*"([^"]+)"', variables, re.S).group(1)
    iam = (TF_ROOT / "modules" / "ray_iam" / "main.tf").read_text()
    assert '"${var.name_prefix}-ray-head"' in iam and '"${var.name_prefix}-ray-worker"' in iam
    cluster_default = re.search(r'variable "ray_cluster_name" \{.*?default\s*=\s*"([^"]+)"', variables, re.S).group(1)
    assert aws_cfg["cluster_name"] == cluster_default, "the head may only terminate instances of its own cluster"
    for name, nt in aws_cfg["available_node_types"].items():
        role = "head" if name == aws_cfg["head_node_type"] else "worker"
        assert nt["node_config"]["IamInstanceProfile"] == {"Name": f"{prefix}-ray-{role}"}, name
        assert nt["node_config"]["MetadataOptions"]["HttpTokens"] == "required", name


def test_launcher_installs_pinned_cuda_torch_then_the_repo(aws_cfg):
    setup = "\n".join(aws_cfg["setup_commands"])
    torch_line = next(c for c in aws_cfg["setup_commands"] if "torch==" in c)
    assert "torch==2.13.0" in torch_line and "download.pytorch.org/whl/cu" in torch_line
    assert setup.index("torch==2.13.0") < setup.index('-e "$HOME/dft')
    # Both installs are pinned by the same constraints as the KubeRay image.
    installs = [c for c in aws_cfg["setup_commands"] if "pip install" in c and "--upgrade pip" not in c]
    assert all("-c ~/dft/cluster/constraints.txt" in c for c in installs)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject, "the cluster's torch pin follows pyproject.toml"
    ray_pin = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', pyproject).group(1)
    assert f'"ray[default]=={ray_pin}"' in setup
    assert aws_cfg["file_mounts"] == {"~/dft": "."}
    assert any("spot_watch.py" in c for c in aws_cfg["worker_start_ray_commands"])
    assert (CLUSTER / "aws" / "spot_watch.py").exists()


def test_render_applies_terraform_outputs(aws_cfg, tmp_path):
    outputs = {
        "region": {"value": "eu-west-1"},
        "availability_zones": {"value": ["eu-west-1a", "eu-west-1b"]},
        "public_subnet_ids": {"value": ["subnet-a", "subnet-b"]},
        "ray_security_group_id": {"value": "sg-1"},
        "ray_head_instance_profile_arn": {"value": "arn:aws:iam::1:instance-profile/x-ray-head"},
        "ray_worker_instance_profile_arn": {"value": "arn:aws:iam::1:instance-profile/x-ray-worker"},
        "ray_cluster_name": {"value": "dft-eu"},
        "bucket_name": {"value": "dft-runs-eu"},
    }
    src = tmp_path / "outputs.json"
    src.write_text(json.dumps(outputs))
    dst = tmp_path / "cluster.yaml"
    res = subprocess.run([sys.executable, str(CLUSTER / "aws" / "render.py"), "--outputs-json", str(src), "-o", str(dst)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(dst.read_text())
    assert cfg["provider"]["region"] == "eu-west-1"
    assert cfg["provider"]["availability_zone"] == "eu-west-1a,eu-west-1b"
    assert cfg["cluster_name"] == "dft-eu"
    for name, nt in cfg["available_node_types"].items():
        nc = nt["node_config"]
        assert nc["IamInstanceProfile"]["Arn"].endswith("ray-head" if name == cfg["head_node_type"] else "ray-worker")
        assert nc["SubnetIds"] == ["subnet-a", "subnet-b"] and nc["SecurityGroupIds"] == ["sg-1"]
    # The runs bucket reaches the presets (s3://${DFT_BUCKET}/...) through the head's `ray start`.
    starts = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    assert starts and all(c.startswith("export DFT_BUCKET=dft-runs-eu; ") for c in starts)
    # Everything else is the template's.
    assert cfg["setup_commands"] == aws_cfg["setup_commands"]
    assert cfg["worker_start_ray_commands"] == aws_cfg["worker_start_ray_commands"]
    from ray.autoscaler._private.util import validate_config

    validate_config(cfg)


# --- KubeRay -------------------------------------------------------------------------------------


def _load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def raycluster() -> dict:
    (doc,) = _load(KUBERAY / "raycluster.yaml")
    return doc


def _gpu(container) -> int:
    res = container.get("resources", {})
    return int(res.get("limits", {}).get("nvidia.com/gpu", 0)) + int(res.get("requests", {}).get("nvidia.com/gpu", 0))


def test_raycluster_structure(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1" and raycluster["kind"] == "RayCluster"
    assert raycluster["metadata"]["name"] and raycluster["metadata"]["namespace"]
    spec = raycluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)

    head = spec["headGroupSpec"]["template"]["spec"]
    assert all(_gpu(c) == 0 for c in head["containers"]), "the head has no GPU"
    assert not any(t.get("key") == "nvidia.com/gpu" for t in head.get("tolerations", []))
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"

    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert g["groupName"] and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] and g["maxReplicas"] >= 1
        pod = g["template"]["spec"]
        (container,) = pod["containers"]
        res = container["resources"]
        assert int(res["limits"]["nvidia.com/gpu"]) >= 1 and res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
        assert container["image"] == head["containers"][0]["image"]
        # The pool, not the capacity type: with gpu_capacity_type=ON_DEMAND the same pods still land.
        assert pod["nodeSelector"] == {"dft.io/pool": "gpu"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert "drain-node" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        assert pod["terminationGracePeriodSeconds"] >= 60


def test_kuberay_matches_terraform_node_pool_and_identity(raycluster):
    """Labels, taint, namespace and service account are the ones infra/terraform gives the EKS pools."""
    eks = (TF_ROOT / "modules" / "eks" / "main.tf").read_text()
    assert '"dft.io/pool"            = "gpu"' in eks
    assert 'key    = "nvidia.com/gpu"' in eks and 'effect = "NO_SCHEDULE"' in eks
    variables = (TF_ROOT / "variables.tf").read_text()
    ns = re.search(r'variable "k8s_namespace" \{.*?default\s*=\s*"([^"]+)"', variables, re.S).group(1)
    sa = re.search(r'variable "k8s_service_account" \{.*?default\s*=\s*"([^"]+)"', variables, re.S).group(1)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _load(KUBERAY / "namespace.yaml")}
    assert kinds == {("Namespace", ns), ("ServiceAccount", sa)}
    assert raycluster["metadata"]["namespace"] == ns
    pods = [raycluster["spec"]["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in raycluster["spec"]["workerGroupSpecs"]]
    assert all(p["serviceAccountName"] == sa for p in pods)


RAYJOBS = sorted(KUBERAY.glob("rayjob-*.yaml"))


def test_rayjob_per_stage():
    assert {p.stem.removeprefix("rayjob-") for p in RAYJOBS} == STAGE_JOBS


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.stem)
def test_rayjob_structure(path, raycluster):
    (job,) = _load(path)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["namespace"] == raycluster["metadata"]["namespace"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": raycluster["metadata"]["name"]}
    stage = path.stem.removeprefix("rayjob-")
    m = re.fullmatch(r"python (jobs/(\w+)\.py) --config (jobs/configs/[\w.-]+\.yaml)", job["spec"]["entrypoint"])
    assert m, job["spec"]["entrypoint"]
    assert m.group(2) == stage
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert env["working_dir"] == "/home/ray/dft", "the repository inside the image (cluster/kuberay/Dockerfile)"


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.stem)
def test_rayjob_entrypoint_files_exist(path):
    """The job scripts and presets are written by other parts of the project: skip what is not there yet."""
    (job,) = _load(path)
    _, script, _, config = job["spec"]["entrypoint"].split()
    missing = [f for f in (script, config) if not (REPO / f).exists()]
    if missing:
        pytest.skip(f"not in the repository yet: {', '.join(missing)}")
    assert (REPO / script).is_file() and (REPO / config).is_file()


def test_dockerfile_workdir_and_pins():
    text = (KUBERAY / "Dockerfile").read_text()
    ray_pin = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray_pin)}-py3\d+-gpu$", text, re.M)
    assert "WORKDIR /home/ray/dft" in text
    assert text.index("torch==2.13.0") < text.index("pip install --no-cache-dir --no-deps -e .")


def test_local_scripts_are_valid_bash():
    for script in ("start.sh", "stop.sh", "env.sh"):
        path = CLUSTER / "local" / script
        res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
    tool = (CLUSTER / "local" / "raylocal.py").read_text()
    assert 'HOST = "127.0.0.1"' in tool and '"--dashboard-host", HOST' in tool and "RAY_ADDRESS" in tool
    assert "ray stop" not in (CLUSTER / "local" / "stop.sh").read_text().split("Never", 1)[0]
