"""The `ray job submit` entry points are the command line: same parsing, same validation first."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "job, field",
    [
        ("generate.py", "generate.steps"),
        ("finetune.py", "train.max_steps"),
        ("evaluate.py", "evaluate.bootstrap"),
        ("run.py", "prompts.images_per_prompt"),
        ("prompts.py", "prompts.images_per_prompt"),
    ],
)
def test_job_rejects_bad_config_before_any_work(job, field, tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / job), "--set", f"{field}=-1", "--set", f"run.uri={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-1500:]
    assert field in res.stderr and "-1" in res.stderr
    assert not (tmp_path / "run").exists()  # nothing was started or written


def test_evaluate_job_curate_flag_selects_curation(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "evaluate.py"), "--curate", "--set", "curate.skin_tone_tolerance=99"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert res.returncode == 2 and "curate.skin_tone_tolerance" in res.stderr
