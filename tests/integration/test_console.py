"""What a person sees on the console when stages run: a few lines per stage, Ray's output in RUN/logs/.

The stage runs in a subprocess, as `dft` does: Ray's ``log_to_driver`` is fixed when Ray starts, so the
shared test session (started loud) could not show it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SETS = ["prompts.include.profession=[doctor, nurse]", "prompts.include.ethnicity=[Black]",
        "prompts.include.gender=[woman, man]", "prompts.include.age=[young]", "prompts.images_per_prompt=2",
        "generate.steps=2", "generate.batch_size=4", "generate.shard_size=4", "ray.num_cpus=2"]


def _dft(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "dft.cli.main", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


def test_generate_prints_its_start_and_end_lines_and_ray_goes_to_the_run_logs(tmp_path):
    run = tmp_path / "run"
    sets = [a for s in SETS + [f"run.uri={run}"] for a in ("--set", s)]
    assert _dft("prompts", *sets, cwd=tmp_path).returncode == 0
    res = _dft("generate", *sets, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    lines = [line for line in out.splitlines() if line.strip()]
    assert any(line.startswith("generate (1/1)") for line in lines), out
    assert any("✓ generate in" in line and "8 images" in line for line in lines), out
    # The generate table (13 lines), a start and an end line, Ray's token warning: nothing of Ray Data's.
    assert len(lines) <= 25, out
    assert "(pid=" not in out and "Dataset" not in out and "Running 0:" not in out, out
    logs = run / "logs"
    assert (logs / "dft.log").stat().st_size > 0
    assert "generation done" in (logs / "dft.log").read_text()
    assert (logs / "ray.log").exists()
    session = logs / "ray-session"
    assert session.is_symlink() and any(p.name.startswith("worker-") for p in session.iterdir())

    # -v: Ray's output on the console too, and a failure's traceback; without it, one line.
    again = _dft("generate", *sets, "--set", "generate.steps=3", cwd=tmp_path)
    assert again.returncode == 3
    err = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(err) == 2 and err[0].startswith("generate (1/1)"), again.stderr  # the start line, the error
    assert "--force" in err[1] and "generate.steps: 2 -> 3" in err[1], again.stderr
    loud = _dft("generate", *sets, "--set", "generate.steps=3", "-v", cwd=tmp_path)
    assert loud.returncode == 3 and "Traceback" in loud.stderr
