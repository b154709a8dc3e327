"""Fixtures of the infrastructure tests (helpers in infra_helpers.py)."""

from __future__ import annotations

import os
import shutil

import pytest
from infra_helpers import TF_ROOT, Terraform, find_provider_mirror


@pytest.fixture(scope="module")
def terraform(tmp_path_factory) -> Terraform:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH (CI machines have it)")
    mirror = find_provider_mirror()
    if mirror is None:
        pytest.skip("no offline mirror of registry.terraform.io/hashicorp/aws found (set DFT_TF_PROVIDER_MIRROR)")
    base = tmp_path_factory.mktemp("tf")
    work = base / "terraform"
    shutil.copytree(TF_ROOT, work, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl"))
    cli = base / "terraform.rc"
    cli.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n    include = ["registry.terraform.io/*/*"]\n  }}\n'
        '  direct {\n    exclude = ["registry.terraform.io/*/*"]\n  }\n}\n'
    )
    env = dict(os.environ)
    env.update(
        TF_CLI_CONFIG_FILE=str(cli),
        TF_DATA_DIR=str(base / "data"),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        # Dummy credentials always: these tests only ever talk to a local emulator.
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
    )
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(k, None)
    tf = Terraform(work, env)
    tf.run("init", "-backend=false", "-no-color")
    return tf
