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
            raise AssertionError(f"terraform {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
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
