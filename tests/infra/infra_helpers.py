"""Helpers of the infrastructure tests: a terraform working copy that never touches the repository.

Terraform runs offline from a filesystem mirror of the AWS provider: a CLI config naming the mirror is
written to a temporary folder and TF_CLI_CONFIG_FILE points at it; state, .terraform and the lock file
stay in the temporary copy of infra/terraform."""

from __future__ import annotations

import glob
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TF_ROOT = REPO / "infra" / "terraform"
CLUSTER = REPO / "cluster"

# Where provider mirrors are usually unpacked; DFT_TF_PROVIDER_MIRROR wins.
_MIRROR_ROOTS = ("/opt", "/usr/share", "/usr/local/share", "/usr/local/lib", "/var/lib", str(Path.home()))


def find_provider_mirror() -> Path | None:
    """The folder holding registry.terraform.io/hashicorp/aws/<version>/<platform>/, or None."""
    env = os.environ.get("DFT_TF_PROVIDER_MIRROR")
    candidates = [Path(env)] if env else []
    for root in _MIRROR_ROOTS:
        for depth in ("*", "*/*", "*/*/*"):
            candidates += [Path(p).parent for p in glob.glob(f"{root}/{depth}/registry.terraform.io")]
        candidates += [Path(root) / ".terraform.d" / "plugins"]
    for c in candidates:
        if any((c / "registry.terraform.io" / "hashicorp" / "aws").glob("*/*")):
            return c
    return None


@dataclass
class Terraform:
    """A copy of infra/terraform in a temporary folder, initialised against the offline mirror."""

    workdir: Path
    env: dict = field(default_factory=dict)

    def run(self, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(
            ["terraform", *args], cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"terraform {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            )
        return res

    def outputs(self) -> dict:
        return {k: v["value"] for k, v in json.loads(self.run("output", "-json").stdout).items()}


def emulator_vars(endpoint: str, **extra: object) -> list[str]:
    """-var arguments that point the provider at a local AWS emulator."""
    endpoints = "{" + ",".join(f'{s}="{endpoint}"' for s in ("s3", "iam", "sts", "ec2", "eks", "ssm")) + "}"
    args = ["-var", f"aws_endpoints={endpoints}", "-var", "region=us-east-1"]
    for k, v in extra.items():
        args += ["-var", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return args


# vCPUs, GPUs and GiB of memory of the EC2 instance types the cluster configs name (AWS's specs).
INSTANCE_TYPES = {
    "m6i.xlarge": (4, 0, 16),
    "m6i.2xlarge": (8, 0, 32),
    "g5.xlarge": (4, 1, 16),
    "g5.2xlarge": (8, 1, 32),
    "g5.12xlarge": (48, 4, 192),
    "g6.xlarge": (4, 1, 16),
    "g6.2xlarge": (8, 1, 32),
    "p4d.24xlarge": (96, 8, 1152),
}

# The cluster presets as the docs combine them.
CLUSTER_PRESETS = (
    ("sd15_cluster.yaml",),
    ("sd15_cluster.yaml", "spot_train.yaml"),
    ("sd15_cluster.yaml", "sdxl_cluster.yaml"),
)


@dataclass(frozen=True)
class Demand:
    """What one stage of a preset asks Ray for: ``count`` bundles of ``bundle``, all at once."""

    what: str
    bundle: dict
    count: int


def preset_demands() -> list[Demand]:
    """The bundles each cluster preset's stages request: a fine-tuning worker (ScalingConfig
    resources_per_worker), a generation actor, an evaluation reader actor."""
    from dft.config.load import load_config

    saved = os.environ.get("DFT_BUCKET")
    os.environ["DFT_BUCKET"] = "bucket"
    try:
        out = []
        for files in CLUSTER_PRESETS:
            cfg = load_config([REPO / "jobs" / "configs" / f for f in files])
            name = "+".join(files)
            t, g, e = cfg.train, cfg.generate, cfg.evaluate
            out.append(Demand(f"{name} train", {"CPU": t.cpus_per_worker, "GPU": 1 if t.use_gpu else 0}, t.num_workers))
            out.append(Demand(f"{name} generate", {"CPU": g.num_cpus_per_actor, "GPU": g.num_gpus_per_actor}, g.num_actors))
            gpus = max(r.num_gpus for r in e.readers)
            out.append(Demand(f"{name} evaluate readers", {"CPU": 1, "GPU": gpus}, e.num_actors))
        return out
    finally:
        if saved is None:
            os.environ.pop("DFT_BUCKET", None)
        else:
            os.environ["DFT_BUCKET"] = saved


def fits(bundle: dict, node: dict) -> int:
    """How many ``bundle``s one node with resources ``node`` holds."""
    counts = [int(node.get(k, 0) // v) for k, v in bundle.items() if v > 0]
    return min(counts) if counts else 0


def tf_default(name: str, path: Path | None = None) -> str:
    """The literal default of a variable in infra/terraform/variables.tf."""
    import re

    text = (path or TF_ROOT / "variables.tf").read_text()
    m = re.search(rf'variable "{name}" \{{.*?default\s*=\s*(.+?)\n', text, re.S)
    assert m, name
    return m.group(1).strip()
