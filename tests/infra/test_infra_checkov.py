"""Optional: checkov's terraform checks find nothing that is not skipped in place with a reason.

checkov pins an older boto3 than the project, so it lives in its own virtual environment and is not a
test dependency; this test runs when ``checkov`` is on the PATH or DFT_CHECKOV names it, and skips
otherwise (see docs/cluster.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from infra_helpers import TF_ROOT


def test_checkov_terraform(tmp_path):
    exe = os.environ.get("DFT_CHECKOV") or shutil.which("checkov")
    if not exe or not os.access(exe, os.X_OK):
        pytest.skip("checkov not installed (install it in its own venv and set DFT_CHECKOV; see docs/cluster.md)")
    work = tmp_path / "terraform"
    shutil.copytree(TF_ROOT, work, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    res = subprocess.run([exe, "-d", str(work), "--framework", "terraform", "--skip-download", "-o", "json"],
                         capture_output=True, text=True, timeout=600)
    report = json.loads(res.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert report["summary"]["passed"] > 50, report["summary"]
    # Every skip carries its reason in the code.
    for s in report["results"]["skipped_checks"]:
        assert s["check_result"].get("suppress_comment"), s["check_id"]
