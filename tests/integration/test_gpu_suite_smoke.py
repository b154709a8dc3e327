"""benchmarks/gpu_suite.py --smoke: every measurement of the GPU suite runs on CPU with a tiny model."""

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def _run(tmp_path, families):
    import gpu_suite

    out = tmp_path / "rows.json"
    assert gpu_suite.main(["--smoke", "--families", *families, "--images", "4", "--train-steps", "2",
                           "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["family"] for r in rows] == list(families)
    for r in rows:
        for key in ("gen_bare_images_per_s", "gen_ray_images_per_s", "train_bare_samples_per_s",
                    "train_ray_samples_per_s", "reader_images_per_s", "peak_memory_gb", "gen_ratio", "train_ratio"):
            assert r[key] > 0, (r["family"], key, r[key])
    return rows


def test_smoke_one_family(ray_session, tmp_path):
    _run(tmp_path, ["flux"])


@pytest.mark.slow  # about a minute a family on a shared 2-core machine
def test_smoke_the_other_families(ray_session, tmp_path):
    """SDXL and SD3 (FLUX is test_smoke_one_family's, in the default suite)."""
    _run(tmp_path, ["sdxl", "sd3"])
