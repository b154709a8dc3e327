from types import SimpleNamespace

import pytest

from dft.runs import Run, StageConfigChanged, config_hash, run_stage, stage_config


class Section(dict):
    def model_dump(self, mode=None):
        return dict(self)


def cfg(**sections):
    """A stand-in config: each keyword a section whose dump is the given dict."""
    return SimpleNamespace(**{k: Section(v) for k, v in sections.items()})


def test_stage_runs_once_then_skips(tmp_path):
    run = Run(str(tmp_path / "r"))
    calls = []

    def work():
        calls.append(1)
        return {"n": len(calls)}

    first = run_stage(run, "s", cfg(a={"x": 1}), ["a"], work)
    assert not first.skipped and first.counts == {"n": 1} and first.status == "run"
    second = run_stage(run, "s", cfg(a={"x": 1}), ["a"], work)
    assert second.skipped and second.counts == {"n": 1} and len(calls) == 1 and second.status == "reused"


def test_changed_config_is_reported_then_forced(tmp_path):
    run = Run(str(tmp_path / "r"))
    run_stage(run, "s", cfg(a={"x": 1}, b={"c": 2}), ["a", "b"], lambda: {"n": 1})
    with pytest.raises(StageConfigChanged) as e:
        run_stage(run, "s", cfg(a={"x": 1}, b={"c": 3}), ["a", "b"], lambda: {"n": 2})
    assert "b.c: 2 -> 3" in str(e.value) and "--force" in str(e.value)
    forced = run_stage(run, "s", cfg(a={"x": 1}, b={"c": 3}), ["a", "b"], lambda: {"n": 2}, force=True)
    assert not forced.skipped and run.marker("s")["config_hash"] == config_hash({"a": {"x": 1}, "b": {"c": 3}})


def test_every_stage_records_one_shape_sections_plus_inputs(tmp_path):
    """The marker holds each hashed section's dump and the named inputs, and the hash of exactly that."""
    run = Run(str(tmp_path / "r"))
    c = cfg(model={"source": "m"}, train={"steps": 3})
    run_stage(run, "t", c, ["model", "train"], lambda: {"n": 1}, inputs={"run_name": "x"})
    marker = run.marker("t")
    assert marker["config"] == {"model": {"source": "m"}, "train": {"steps": 3}, "run_name": "x"}
    expected = config_hash(stage_config(c, ["model", "train"], {"run_name": "x"}))
    assert marker["config_hash"] == config_hash(marker["config"]) == expected
    with pytest.raises(StageConfigChanged, match="run_name: 'x' -> 'y'"):
        run_stage(run, "t", c, ["model", "train"], lambda: {"n": 1}, inputs={"run_name": "y"})


def test_the_hash_of_sections_is_the_configs_section_hash():
    """Markers written before the record was shared stay valid (prompts, generate, curate, evaluate)."""
    from dft.config.load import load_config

    c = load_config(None, ["generate.steps=3"])
    assert config_hash(stage_config(c, ["model", "prompts", "generate"])) == c.section_hash("model", "prompts", "generate")


def test_failed_work_leaves_no_marker(tmp_path):
    run = Run(str(tmp_path / "r"))

    def boom():
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        run_stage(run, "s", cfg(), [], boom)
    assert run.marker("s") is None


def test_layout_paths(tmp_path):
    run = Run(str(tmp_path / "r"))
    assert run.synthetic.endswith("/r/synthetic") and run.finetuned_model.endswith("/r/models/finetuned")
    s3 = Run("s3://bucket/runs/x/")
    assert s3.uri == "s3://bucket/runs/x" and s3.checkpoints == "s3://bucket/runs/x/checkpoints"


def test_failed_work_records_its_error_until_a_success_removes_it(tmp_path):
    run = Run(str(tmp_path / "r"))

    def boom():
        raise ValueError("no prompt table at s3://b/r/prompts")

    with pytest.raises(ValueError):
        run_stage(run, "s", cfg(), [], boom)
    err = run.error("s")
    assert err["stage"] == "s" and err["type"] == "ValueError" and "no prompt table" in err["message"]
    assert err["time"].endswith("+00:00")
    assert run.error_uri("s").endswith("/r/_stages/s.error.json")
    run_stage(run, "s", cfg(), [], lambda: {"n": 1})
    assert run.error("s") is None and run.marker("s")["counts"] == {"n": 1}


def test_an_unwritable_error_record_does_not_hide_the_stage_error(tmp_path, monkeypatch):
    run = Run(str(tmp_path / "r"))

    def refuse(*a, **k):
        raise OSError("store is down")

    monkeypatch.setattr("dft.storage.write_json", refuse)
    with pytest.raises(KeyError, match="the real failure"):
        run_stage(run, "s", cfg(), [], lambda: (_ for _ in ()).throw(KeyError("the real failure")))


def test_local_logs_of_a_local_and_an_s3_run(tmp_path, monkeypatch):
    assert Run(str(tmp_path / "r")).local_logs == str(tmp_path / "r" / "logs")
    monkeypatch.setenv("DFT_CACHE", str(tmp_path / "cache"))
    assert Run("s3://bucket/runs/x").local_logs == str(tmp_path / "cache" / "logs" / "s3-bucket-runs-x")
