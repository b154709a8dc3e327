"""`run_generate` end to end on the shared local Ray: prompts stage -> RUN/synthetic, then a no-op re-run."""

import pytest

from dft.config.load import load_config
from dft.generate.shards import iter_samples, read_manifest
from dft.generate.stage import run_generate
from dft.prompts.stage import run_prompts
from dft.runs import Run, StageConfigChanged

pytestmark = pytest.mark.integration


def test_stage_writes_synthetic_then_is_a_no_op(ray_session, tmp_run):
    sets = [f"run.uri={tmp_run}", "prompts.include.profession=[doctor, nurse]", "prompts.include.ethnicity=[Black]",
            "prompts.include.gender=[woman, man]", "prompts.include.age=[young]", "prompts.images_per_prompt=2",
            "generate.steps=2", "generate.batch_size=4", "generate.shard_size=4"]
    cfg = load_config(None, sets)
    run_prompts(cfg)
    counts = run_generate(cfg)
    run = Run(tmp_run)
    assert counts["rows"] == counts["images"] == 8 and counts["shards"] == 2
    assert run.marker("generate")["counts"] == counts
    samples = list(iter_samples(run.synthetic, "webdataset"))
    assert sorted((s["profession"], s["gender"]) for s in samples) == sorted(
        [(p, g) for p in ("doctor", "nurse") for g in ("woman", "man")] * 2)
    mtime = read_manifest(run.synthetic)
    assert run_generate(cfg) == counts  # finished: nothing runs, the marker's counts come back
    assert read_manifest(run.synthetic) == mtime
    with pytest.raises(StageConfigChanged, match="steps"):
        run_generate(load_config(None, sets + ["generate.steps=3"]))


@pytest.mark.parametrize("source", [pytest.param("tiny-sd3", marks=pytest.mark.slow), "tiny-flux"])
def test_flow_matching_families_through_the_ray_data_stage(ray_session, tmp_run, source):
    """SD3 and FLUX through the same actor pool and shard writer, with their own settings in config."""
    sets = [f"run.uri={tmp_run}", f"model.source={source}", "prompts.include.profession=[doctor]",
            "prompts.include.ethnicity=[Black]", "prompts.include.gender=[woman, man]", "prompts.include.age=[young]",
            "prompts.images_per_prompt=2", "generate.steps=2", "generate.batch_size=2", "generate.shard_size=2",
            "generate.guidance_scale=3.5", "generate.flow_shift=2.0", "generate.max_sequence_length=16"]
    cfg = load_config(None, sets)
    run_prompts(cfg)
    counts = run_generate(cfg)
    assert counts["rows"] == counts["images"] == 4 and counts["shards"] == 2
    samples = list(iter_samples(Run(tmp_run).synthetic, "parquet"))
    assert len(samples) == 4 and {s["model"] for s in samples} == {source}
    assert len({s["image"] for s in samples}) == 4  # one image per row and seed
    assert {(s["width"], s["height"]) for s in samples} == {(32, 32)}
