import pytest

from dft.runs import Run, StageConfigChanged, run_stage


def test_stage_runs_once_then_skips(tmp_path):
    run = Run(str(tmp_path / "r"))
    calls = []

    def work():
        calls.append(1)
        return {"n": len(calls)}

    first = run_stage(run, "s", "h1", {"a": 1}, work)
    assert not first.skipped and first.counts == {"n": 1}
    second = run_stage(run, "s", "h1", {"a": 1}, work)
    assert second.skipped and second.counts == {"n": 1} and len(calls) == 1


def test_changed_config_is_reported_then_forced(tmp_path):
    run = Run(str(tmp_path / "r"))
    run_stage(run, "s", "h1", {"a": 1, "b": {"c": 2}}, lambda: {"n": 1})
    with pytest.raises(StageConfigChanged) as e:
        run_stage(run, "s", "h2", {"a": 1, "b": {"c": 3}}, lambda: {"n": 2})
    assert "b.c: 2 -> 3" in str(e.value) and "--force" in str(e.value)
    forced = run_stage(run, "s", "h2", {"a": 1, "b": {"c": 3}}, lambda: {"n": 2}, force=True)
    assert not forced.skipped and run.marker("s")["config_hash"] == "h2"


def test_failed_work_leaves_no_marker(tmp_path):
    run = Run(str(tmp_path / "r"))

    def boom():
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        run_stage(run, "s", "h", {}, boom)
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
        run_stage(run, "s", "h", {}, boom)
    err = run.error("s")
    assert err["stage"] == "s" and err["type"] == "ValueError" and "no prompt table" in err["message"]
    assert err["time"].endswith("+00:00")
    assert run.error_uri("s").endswith("/r/_stages/s.error.json")
    run_stage(run, "s", "h", {}, lambda: {"n": 1})
    assert run.error("s") is None and run.marker("s")["counts"] == {"n": 1}


def test_an_unwritable_error_record_does_not_hide_the_stage_error(tmp_path, monkeypatch):
    run = Run(str(tmp_path / "r"))

    def refuse(*a, **k):
        raise OSError("store is down")

    monkeypatch.setattr("dft.storage.write_json", refuse)
    with pytest.raises(KeyError, match="the real failure"):
        run_stage(run, "s", "h", {}, lambda: (_ for _ in ()).throw(KeyError("the real failure")))
