"""The runner of dft/pipeline.py: order, results, observer, errors; with stand-in stages (no Ray)."""

import pytest

from dft import pipeline
from dft.config.load import load_config
from dft.errors import InputError, StageFailed
from dft.runs import Run, StageConfigChanged, StageResult, run_stage


class Lines:
    def __init__(self):
        self.seen = []

    def stage_started(self, name, index, total):
        self.seen.append(("start", name, index, total))

    def stage_finished(self, result, index, total):
        self.seen.append(("end", result.stage, result.status))


@pytest.fixture
def stand_ins(monkeypatch):
    """Every stage is a marker-keeping stand-in that records its calls."""
    calls = []

    def make(name):
        def stage(cfg, force=False):
            def work():
                calls.append(name)
                if name in getattr(cfg, "_fail", {}):
                    raise cfg._fail[name]
                return {"n": len(calls)}

            return run_stage(Run(cfg.run.uri), name, cfg, ["prompts"], work, force=force)

        return stage

    monkeypatch.setattr(pipeline, "stage_function", make)
    return calls


def test_runs_in_order_then_reuses_and_tells_the_observer(tmp_path, stand_ins):
    cfg = load_config(None, [f"run.uri={tmp_path / 'r'}", "curate.enabled=false"])
    lines = Lines()
    results = pipeline.run_pipeline(cfg, pipeline.STAGES, observer=lines)
    assert [r.stage for r in results] == list(pipeline.STAGES)
    assert [r.status for r in results] == ["run", "run", "skipped", "run", "run", "run"]
    assert results[2].note == "curate.enabled=false" and stand_ins == ["prompts", "generate", "train", "evaluate", "report"]
    assert lines.seen[:3] == [("start", "prompts", 1, 6), ("end", "prompts", "run"), ("start", "generate", 2, 6)]
    assert ("end", "curate", "skipped") in lines.seen and ("start", "curate", 3, 6) not in lines.seen
    assert all(isinstance(r, StageResult) and r.seconds >= 0 for r in results)

    again = pipeline.run_pipeline(cfg, ["prompts", "generate"])
    assert [r.status for r in again] == ["reused", "reused"] and len(stand_ins) == 5
    forced = pipeline.run_pipeline(cfg, ["generate"], force=True)
    assert forced[0].status == "run" and stand_ins[-1] == "generate"


def test_a_stage_error_names_the_stage_and_a_changed_config_passes_through(tmp_path, stand_ins):
    cfg = load_config(None, [f"run.uri={tmp_path / 'r'}"])
    cfg._fail = {"generate": InputError("generate.steps: 0 is not allowed")}
    with pytest.raises(StageFailed, match="stage 'generate' failed: generate.steps: 0") as e:
        pipeline.run_pipeline(cfg, ["prompts", "generate", "train"])
    assert isinstance(e.value.__cause__, InputError) and e.value.stage == "generate" and "train" not in stand_ins
    cfg._fail = {"generate": RuntimeError("a bug")}
    with pytest.raises(RuntimeError, match="a bug"):  # not a DftError: unchanged, with its traceback
        pipeline.run_pipeline(cfg, ["generate"])
    changed = load_config(None, [f"run.uri={tmp_path / 'r'}", "prompts.seed=7"])
    with pytest.raises(StageConfigChanged, match="prompts.seed: 0 -> 7"):
        pipeline.run_pipeline(changed, ["prompts"])


def test_unknown_stage_names_are_refused():
    with pytest.raises(ValueError, match="unknown stages"):
        pipeline.run_pipeline(load_config(None, []), ["prompt"])


def test_every_stage_function_exists():
    for name in pipeline.STAGES:
        fn = pipeline.stage_function(name)
        assert callable(fn) and fn.__name__ == f"{name}_stage"
