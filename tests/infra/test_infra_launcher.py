"""cluster/aws/dft-cluster.yaml would launch: the head can load the AWS node provider, a submitted
job's `python` is the project's venv, the venv guard catches a half-made venv, and every bundle the
presets ask for fits a spot and an on-demand node type. The shell commands run for real in bash, with
stand-in `ray`, `python3` and `sudo` in a temporary HOME."""

from __future__ import annotations

import inspect
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from infra_helpers import CLUSTER, INSTANCE_TYPES, REPO, fits, preset_demands

AWS_CONFIG = CLUSTER / "aws" / "dft-cluster.yaml"


@pytest.fixture(scope="module")
def aws_cfg() -> dict:
    return yaml.safe_load(AWS_CONFIG.read_text())


def _workers(cfg):
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def _is_spot(node_type) -> bool:
    return node_type["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _bash(cmd: str, home: Path, path: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], env={"HOME": str(home), "PATH": path, **env},
                          capture_output=True, text=True, timeout=60)


# --- the head loads the AWS node provider ----------------------------------------------------------


def test_aws_extra_brings_boto3_and_the_setup_installs_it(aws_cfg):
    """Ray's AWS node provider imports boto3 on the head; it used to come only with the test extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    aws = project["optional-dependencies"]["aws"]
    assert any(r.startswith("boto3==") for r in aws), aws
    provider = Path(__import__("ray.autoscaler._private.aws.node_provider", fromlist=["x"]).__file__)
    assert re.search(r"^(import|from) boto3", provider.read_text(), re.M), "the node provider still needs boto3"
    install = next(c for c in aws_cfg["setup_commands"] if " -e " in c)
    assert '-e "$HOME/dft[aws]"' in install, "the venv the head's autoscaler runs in gets boto3"


# --- a submitted job runs in the venv --------------------------------------------------------------


@pytest.mark.parametrize("which", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_ray_start_runs_with_the_venv_first_on_path(aws_cfg, tmp_path, which):
    """Ray's raylet, the job supervisor and a job's driver inherit `ray start`'s PATH, so
    `ray job submit -- python jobs/...` gets the venv's python only if `ray start` had it first."""
    home = tmp_path / "home"
    venv_bin = home / "dft-venv" / "bin"
    venv_bin.mkdir(parents=True)
    record = tmp_path / "ray-start-env"
    _script(venv_bin / "ray", f'[ "$1" = start ] && {{ command -v python; command -v ray; }} > "{record}"\nexit 0\n')
    _script(venv_bin / "python", "exit 0\n")
    system = tmp_path / "usr-bin"
    system.mkdir()
    _script(system / "python", "exit 0\n")  # a system python that must not win
    path = f"{system}:/usr/bin:/bin"
    starts = [c for c in aws_cfg[which] if "ray start" in c]
    assert starts
    for cmd in starts:
        res = _bash(cmd, home, path, RAY_HEAD_IP="10.0.0.1")
        assert res.returncode == 0, res.stderr
        python, ray = record.read_text().split()
        assert (python, ray) == (str(venv_bin / "python"), str(venv_bin / "ray")), cmd


# --- the venv guard ---------------------------------------------------------------------------------


def _fake_python3(bin_dir: Path, log: Path, *, with_pip: bool) -> None:
    """A python3 whose `-m venv DIR` makes DIR/bin/python, and pip only if ``with_pip`` (Ubuntu's
    python3 without python3-venv makes the venv and then fails at ensurepip)."""
    pip = 'touch "$3/bin/pip"; chmod +x "$3/bin/pip"' if with_pip else "exit 1"
    _script(bin_dir / "python3", f'echo "$@" >> "{log}"\n'
            'if [ "$1 $2 $3" = "-m venv --help" ]; then exit 0; fi\n'  # the venv module is there either way
            f'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; touch "$3/bin/python"; {pip}; fi\n')


def _guard_commands(cfg) -> tuple[str, str]:
    probe = next(c for c in cfg["setup_commands"] if "python3-venv" in c)
    make = next(c for c in cfg["setup_commands"] if "~/dft-venv" in c and "-m venv" in c)
    return probe, make


def test_venv_guard_remakes_a_venv_without_pip(aws_cfg, tmp_path):
    _, make = _guard_commands(aws_cfg)
    home, bin_dir, log = tmp_path / "home", tmp_path / "bin", tmp_path / "python3.log"
    bin_dir.mkdir()
    _fake_python3(bin_dir, log, with_pip=True)
    half = home / "dft-venv" / "bin"
    half.mkdir(parents=True)
    (half / "python").touch()
    (half / "python").chmod(0o755)
    (home / "dft-venv" / "stale").touch()
    res = _bash(make, home, f"{bin_dir}:/usr/bin:/bin")
    assert res.returncode == 0, res.stderr
    assert (half / "pip").exists() and not (home / "dft-venv" / "stale").exists(), "the half-made venv was kept"
    # A whole venv is left alone.
    log.unlink()
    assert _bash(make, home, f"{bin_dir}:/usr/bin:/bin").returncode == 0
    assert not log.exists()


@pytest.mark.parametrize("venv_works", [True, False])
def test_venv_probe_installs_python3_venv_only_when_venvs_lack_pip(aws_cfg, tmp_path, venv_works):
    probe, _ = _guard_commands(aws_cfg)
    bin_dir, log, sudo_log = tmp_path / "bin", tmp_path / "python3.log", tmp_path / "sudo.log"
    bin_dir.mkdir()
    _fake_python3(bin_dir, log, with_pip=venv_works)
    _script(bin_dir / "sudo", f'echo "$@" >> "{sudo_log}"\n')
    res = _bash(probe, tmp_path, f"{bin_dir}:/usr/bin:/bin")
    assert res.returncode == 0, res.stderr
    installs = sudo_log.read_text() if sudo_log.exists() else ""
    assert ("install -y python3-venv" in installs) is (not venv_works), installs
    assert not Path("/tmp/dft-venv-probe").exists()


# --- node types that hold the presets' bundles ------------------------------------------------------


def test_node_resources_are_the_instances(aws_cfg):
    for name, nt in _workers(aws_cfg).items():
        cpus, gpus, _ = INSTANCE_TYPES[nt["node_config"]["InstanceType"]]
        assert nt["resources"] == {"CPU": cpus, "GPU": gpus}, name


def test_every_preset_bundle_fits_a_spot_and_an_on_demand_type(aws_cfg):
    """The on-demand types are where a run goes when spot capacity is short (by min_workers or by
    switching spot off, docs/cluster.md): they must hold every stage, training included, whole."""
    workers = _workers(aws_cfg)
    for market, types in (("spot", {k: v for k, v in workers.items() if _is_spot(v)}),
                          ("on-demand", {k: v for k, v in workers.items() if not _is_spot(v)})):
        for d in preset_demands():
            holds = {k: fits(d.bundle, v["resources"]) for k, v in types.items()}
            assert any(holds.values()), f"{d.what} {d.bundle}: no {market} type holds one"
            room = sum(n * types[k]["max_workers"] for k, n in holds.items())
            assert room >= d.count, f"{d.what}: {d.count} x {d.bundle}, {market} types hold {room}"


def test_the_config_claims_no_automatic_fallback(aws_cfg):
    """The old comment promised the autoscaler would back off a spot type and launch the on-demand one;
    its default scorer picks by fit alone, so the config and docs say what to do instead."""
    text = AWS_CONFIG.read_text()
    assert "backs off" not in text
    assert "does NOT switch to these by itself" in text
    doc = (REPO / "docs" / "cluster.md").read_text()
    assert "no automatic spot-to-on-demand fallback" in doc
    from ray.autoscaler._private import resource_demand_scheduler as rds

    src = inspect.getsource(rds._resource_based_utilization_scorer)
    body = src[src.index("remaining = "):]
    assert "availability" not in body, "Ray's default scorer now weighs failed launches: revisit the docs"
