"""What cluster nodes install: every dependency pinned (cluster/constraints.txt), the KubeRay image's
dependency layer apart from the code, and presets that take the bucket from one place."""

from __future__ import annotations

import re
import tomllib

import yaml
from infra_helpers import CLUSTER, REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = CLUSTER / "constraints.txt"
DOCKERFILE = CLUSTER / "kuberay" / "Dockerfile"


def _pins() -> dict[str, str]:
    lines = [ln for ln in CONSTRAINTS.read_text().splitlines() if ln and not ln.startswith("#")]
    pins = {}
    for ln in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9.]*)", ln)
        assert m, f"not name==version (no local +build label): {ln!r}"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_constraints_pin_every_dependency_as_pyproject_does():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for raw in project["dependencies"] + project["optional-dependencies"]["aws"]:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in {CONSTRAINTS.name} (run cluster/lock.py)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{raw} vs {name}=={pins[name]}"
    # Test tools stay out; the project itself is installed from the checkout.
    assert not {"pytest", "moto", "hypothesis", "dft"} & set(pins)


def test_dockerfile_installs_pinned_dependencies_before_copying_code():
    text = DOCKERFILE.read_text()
    steps = [ln for ln in text.splitlines() if re.match(r"^(COPY|RUN|FROM|WORKDIR)\b", ln)]
    copies = [i for i, s in enumerate(steps) if s.startswith("COPY")]
    code = [i for i in copies if "constraints.txt" not in steps[i]]
    deps = [i for i, s in enumerate(steps) if s.startswith("RUN") and "constraints.txt" in s]
    assert deps and code, steps
    # The dependency layers come from the constraints file alone: a code change leaves them cached.
    assert max(deps) < min(code), steps
    assert steps[copies[0]].endswith("cluster/constraints.txt /home/ray/constraints.txt"), steps[copies[0]]
    assert any("-r /home/ray/constraints.txt" in steps[i] for i in deps)
    assert any("-c /home/ray/constraints.txt" in steps[i] and "torch==2.13.0+cu" in steps[i] for i in deps)
    last = steps[-1]
    assert last.startswith("RUN") and "--no-deps -e ." in last, last
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore and "!cluster/constraints.txt" in ignore, "the 2 GB .venv stays out of the build context"


def test_presets_take_the_bucket_from_dft_bucket():
    """The bucket was hard-coded (s3://dft-runs) in four fields of a preset."""
    seen = 0
    for path in sorted((REPO / "jobs" / "configs").glob("*.yaml")):
        def walk(node, field="", path=path):
            nonlocal seen
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, f"{field}.{k}".lstrip("."))
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{field}.{i}")
            elif isinstance(node, str) and node.startswith("s3://"):
                seen += 1
                assert node.startswith("s3://${DFT_BUCKET}/"), f"{path.name} {field}: {node}"

        walk(yaml.safe_load(path.read_text()))
    assert seen >= 4
