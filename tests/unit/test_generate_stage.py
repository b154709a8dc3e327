"""The generate stage and job fail fast, before Ray or any actor starts, on a bad model source or a missing or
empty prompt table. No Ray: connecting or starting the pipeline fails these tests."""

import pyarrow as pa
import pytest

from dft.config.load import load_config
from dft.generate import job as job_mod
from dft.generate.config import GenerateConfig
from dft.generate.job import fault_plan, generate_dataset
from dft.generate.plan import PromptTableError
from dft.generate.stage import run_generate
from dft.models.sources import ModelSourceError
from dft.prompts.config import PromptsConfig
from dft.prompts.stage import run_prompts
from dft.prompts.table import neutral_table
from dft.schema import PROMPT_SCHEMA


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("Ray was reached: the check did not fail fast")

    monkeypatch.setattr("dft.cluster.connect", refuse)
    monkeypatch.setattr(job_mod, "_run_pipeline", refuse)


def _cfg(run, **overrides):
    sets = [f"run.uri={run}", "prompts.include.profession=[doctor]", "prompts.include.ethnicity=[Black, White]",
            "prompts.images_per_prompt=1", "generate.steps=2"] + [f"{k}={v}" for k, v in overrides.items()]
    return load_config(None, sets)


def test_stage_without_prompts_names_the_missing_path(tmp_run, no_ray):
    with pytest.raises(PromptTableError, match=r"run/prompts/diverse.*run the prompts stage first"):
        run_generate(_cfg(tmp_run))


def test_stage_with_a_bad_model_source_fails_before_ray(tmp_run, no_ray):
    cfg = _cfg(tmp_run, **{"model.source": "/nowhere/model"})
    run_prompts(cfg)
    with pytest.raises(ModelSourceError, match="/nowhere/model"):
        run_generate(cfg)


def test_job_fails_fast_on_empty_table_and_bad_source(tmp_path, no_ray):
    with pytest.raises(PromptTableError, match="empty"):
        generate_dataset(PROMPT_SCHEMA.empty_table(), str(tmp_path / "a"), "tiny-sd", GenerateConfig())
    empty = tmp_path / "prompts"
    empty.mkdir()
    import pyarrow.parquet as pq

    pq.write_table(PROMPT_SCHEMA.empty_table(), empty / "part-00000.parquet")
    with pytest.raises(PromptTableError, match=str(empty)):
        generate_dataset(str(empty), str(tmp_path / "b"), "tiny-sd", GenerateConfig())
    table = neutral_table(PromptsConfig(neutral_max_professions=1), images_per_prompt=1)
    with pytest.raises(ModelSourceError, match="no-such-org/no-such-model"):
        generate_dataset(table, str(tmp_path / "c"), "no-such-org/no-such-model", GenerateConfig())
    with pytest.raises(PromptTableError, match="lacks columns"):
        generate_dataset(pa.table({"prompt": ["x"]}), str(tmp_path / "d"), "tiny-sd", GenerateConfig())


def test_fault_plan_from_config_and_environment(monkeypatch):
    monkeypatch.delenv("DFT_FAULT_INJECT", raising=False)
    assert fault_plan(GenerateConfig(fault_inject_crash_after=3)) == {"crash_after": 3, "fail_seeds": []}
    monkeypatch.setenv("DFT_FAULT_INJECT", "crash_after=1;fail_seeds=5,7")
    assert fault_plan(GenerateConfig()) == {"crash_after": 1, "fail_seeds": [5, 7]}
    monkeypatch.setenv("DFT_FAULT_INJECT", "explode=1")
    with pytest.raises(ValueError, match="unknown switch"):
        fault_plan(GenerateConfig())
