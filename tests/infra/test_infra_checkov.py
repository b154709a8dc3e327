"""checkov's terraform checks find nothing that is not skipped in place with a reason.

checkov pins an older boto3 than the project, so it lives in its own virtual environment and is not a
test dependency: .ci/run makes one (.cache/checkov-venv) and names it in DFT_CHECKOV; without
DFT_CHECKOV that venv is still found, then ``checkov`` on the PATH. Without checkov the test skips, except in CI (CI=true, or
DFT_REQUIRE_CHECKOV=1 as .ci/run sets), where it fails: a check that silently never runs is no check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from infra_helpers import TF_ROOT


def checkov_executable() -> str | None:
    """DFT_CHECKOV, else the venv .ci/run makes, else checkov on the PATH."""
    if os.environ.get("DFT_CHECKOV"):
        candidates = [os.environ["DFT_CHECKOV"]]
    else:
        candidates = [str(TF_ROOT.parents[1] / ".cache" / "checkov-venv" / "bin" / "checkov"), shutil.which("checkov")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def test_checkov_terraform(tmp_path):
    exe = checkov_executable()
    if exe is None:
        why = "checkov not installed (DFT_CHECKOV or PATH; .ci/run makes .cache/checkov-venv, see docs/cluster.md)"
        required = os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("DFT_REQUIRE_CHECKOV") == "1"
        if required:
            pytest.fail(why)
        pytest.skip(why)
    work = tmp_path / "terraform"
    shutil.copytree(TF_ROOT, work, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    res = subprocess.run([exe, "-d", str(work), "--framework", "terraform", "--skip-download", "-o", "json"],
                         capture_output=True, text=True, timeout=600)
    report = json.loads(res.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    assert report["summary"]["passed"] > 50, report["summary"]
    # Every skip carries its reason in the code.
    for s in report["results"]["skipped_checks"]:
        assert s["check_result"].get("suppress_comment"), s["check_id"]


def test_checkov_missing_fails_in_ci(monkeypatch):
    """The guard above, exercised: no checkov anywhere and CI=true is a failure, not a skip."""
    import test_infra_checkov as me

    monkeypatch.setenv("DFT_CHECKOV", "/nonexistent/checkov")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("DFT_REQUIRE_CHECKOV", raising=False)
    monkeypatch.setenv("CI", "true")
    assert me.checkov_executable() is None
    with pytest.raises(pytest.fail.Exception, match="checkov not installed"):
        me.test_checkov_terraform(None)
    monkeypatch.setenv("CI", "false")
    monkeypatch.setenv("DFT_REQUIRE_CHECKOV", "1")
    with pytest.raises(pytest.fail.Exception, match="checkov not installed"):
        me.test_checkov_terraform(None)
    monkeypatch.delenv("DFT_REQUIRE_CHECKOV")
    with pytest.raises(pytest.skip.Exception):
        me.test_checkov_terraform(None)


def test_ci_run_installs_pinned_checkov_in_its_own_venv():
    text = (TF_ROOT.parents[1] / ".ci" / "run").read_text()
    assert "CHECKOV_VERSION=3.3.30" in text and '"checkov==$CHECKOV_VERSION"' in text
    assert "CHECKOV_VENV=.cache/checkov-venv" in text and 'python3 -m venv "$CHECKOV_VENV"' in text
    assert 'export DFT_CHECKOV="$PWD/$CHECKOV_VENV/bin/checkov"' in text and "export DFT_REQUIRE_CHECKOV=1" in text
    # Made before the tests run, and only when missing (or another version).
    assert text.index("DFT_CHECKOV=") < text.index("make test")
    assert '--version 2>/dev/null)" != "$CHECKOV_VERSION"' in text
