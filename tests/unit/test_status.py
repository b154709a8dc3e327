"""`dft status` on runs left by the real stages (prompts, generate, evaluate) with no Ray and no model:
the generation job's Ray Data pipeline is replaced by the same actor class called in this process,
and its pipeline by made-up pixels, so every file in the run folder is written by the stages' own
writers (plan, parts, commit markers, failures.jsonl, manifest, stage markers, error records)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dft import storage
from dft.cli.main import main
from dft.config.load import load_config
from dft.evaluate.config import ReaderConfig
from dft.evaluate.stage import model_label
from dft.generate import job
from dft.generate.core import ImageGenerator, settings_hash
from dft.generate.shards import commit_shard
from dft.prompts.stage import run_prompts
from dft.runs import Run
from dft.status import RunNotFound, run_status


class MadeUpPixels(ImageGenerator):
    """The real ImageGenerator (row retries, per-row errors, sample columns) without a pipeline to load."""

    def __init__(self, model_source, cfg, cache_dir=None, *, inject_row_failures=()):
        self.cfg, self.model, self.settings_hash = cfg, model_source, settings_hash(cfg)
        self._fail_seeds = {int(s) for s in inject_row_failures}
        self.height = self.width = 8

    def _run(self, prompts, seeds):
        for s in seeds:
            if int(s) in self._fail_seeds:
                raise RuntimeError(f"injected failure for seed {s} (DFT_FAULT_INJECT)")
        return np.stack([np.random.default_rng(int(s)).integers(0, 256, (8, 8, 3), dtype=np.uint8) for s in seeds])


class Pipeline:
    """``job._run_pipeline`` in this process: the actor class on each shard's rows, then the commit.
    ``die`` maps an output folder's last name to the number of shards after which 'the job dies'."""

    def __init__(self):
        self.die: dict[str, int] = {}

    def __call__(self, plan, source, todo, out_uri, model_source, cfg, cache_dir, progress, worker_env,
                 generator_cls=None):  # noqa: ARG002 (job.ImageGenerator is patched)
        actor = job.GenerateAndWrite(model_source, cfg, out_uri, plan.shard_size, source, cache_dir,
                                     faults=job.fault_plan(cfg), generator_cls=job.ImageGenerator)  # MadeUpPixels here
        made = 0
        for n, index in enumerate(todo):
            if self.die.get(out_uri.rstrip("/").rsplit("/", 1)[-1]) == n:
                raise RuntimeError(f"the generation actor died after {n} shard(s) (test)")
            start, stop = plan.bounds(index)
            # One actor call per shard, as the stage's map_batches makes it.
            out = actor({"shard": np.array([index]), "start": np.array([start]), "stop": np.array([stop])})
            commit_shard(out_uri, index, start, stop, plan.formats)
            made += int((~out["failed"]).sum())
        return made


@pytest.fixture
def pipeline(monkeypatch):
    from dft.evaluate import pipeline as readers_pipeline

    p = Pipeline()
    monkeypatch.setattr(job, "_run_pipeline", p)
    monkeypatch.setattr(job, "ImageGenerator", MadeUpPixels)
    monkeypatch.setattr("dft.models.sources.resolve_model_source", lambda source, **kw: source)
    monkeypatch.setattr("dft.cluster.connect", lambda *a, **k: None)
    monkeypatch.setattr(readers_pipeline, "read_with_ray", lambda files, readers, num_actors=1, extra_columns=None:
                        readers_pipeline.read_local(files, readers, extra_columns))
    return p


def _cfg(run_uri, *sets):
    # 2 ethnicities x 1 profession x 3 genders x 3 ages = 18 rows, in shards of 6.
    return load_config(None, [f"run.uri={run_uri}", "prompts.include.profession=[doctor]",
                              "prompts.include.ethnicity=[Black, White]", "prompts.images_per_prompt=1",
                              "generate.shard_size=6", "generate.batch_size=6", "generate.max_failures_fraction=0.5",
                              "prompts.neutral_max_professions=1", "evaluate.images_per_prompt=2",
                              "evaluate.bootstrap=10", *sets])


def _first_seed(run_uri) -> int:
    import pyarrow.parquet as pq

    files = storage.glob(storage.join(Run(run_uri).prompts, "diverse"), "*.parquet")
    fs, path = storage.pyarrow_filesystem(files[0])
    return int(pq.read_table(fs.open_input_file(path)).column("seed")[0].as_py())


def _partial_generation(run_uri, pipeline, monkeypatch):
    """Prompts done; generation killed after its first shard, which has one row failing every retry."""
    from dft.generate.stage import run_generate

    cfg = _cfg(run_uri)
    run_prompts(cfg)
    monkeypatch.setenv("DFT_FAULT_INJECT", f"fail_seeds={_first_seed(run_uri)}")
    pipeline.die["synthetic"] = 1
    with pytest.raises(RuntimeError, match="actor died"):
        run_generate(cfg)
    return cfg


def test_a_missing_run_is_one_line_naming_the_uri_and_an_empty_one_shows_nothing_started(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main(["status", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "does not exist" in err
    with pytest.raises(RunNotFound, match=str(missing)):
        run_status(str(missing))
    (tmp_path / "empty").mkdir()
    status = run_status(str(tmp_path / "empty"))
    assert [s.state for s in status.stages] == ["not started"] * 6
    assert status.generation is None and status.train is None and status.evaluation is None and status.errors == []
    assert main(["status", str(tmp_path / "empty")]) == 0
    assert "nothing written yet" in capsys.readouterr().out


def test_generation_killed_mid_job_then_resumed(tmp_run, pipeline, monkeypatch, capsys):
    cfg = _partial_generation(tmp_run, pipeline, monkeypatch)
    status = run_status(tmp_run)
    prompts = status.stage("prompts")
    assert prompts.state == "done" and prompts.counts["rows"] == 18 and prompts.finished_at
    assert prompts.config_hash == cfg.section_hash("prompts")
    gen = status.stage("generate")
    assert gen.state == "failed" and gen.error.type == "RuntimeError" and "actor died after 1 shard" in gen.error.message
    g = status.generation
    assert (g.planned_rows, g.planned_shards, g.committed_shards, g.rows_done) == (18, 3, 1, 6)
    assert (g.images, g.failures, g.finished) == (5, 1, False)
    assert "injected failure for seed" in g.recent_failures[-1]["error"]
    assert [e.where for e in status.errors] == ["stage generate", "generate: shard commit markers"]
    assert status.stage("train").state == "not started"

    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 without a terminal
    assert main(["status", tmp_run]) == 0
    out = capsys.readouterr().out
    assert "1 / 3" in out and "6 / 18" in out and "RuntimeError: the generation actor died" in out
    assert "failed" in out and "1 row(s) failed every retry" in out

    # The same command again resumes: the stage finishes, its error record goes, failures.jsonl stays.
    from dft.generate.stage import run_generate

    pipeline.die.clear()
    counts = run_generate(cfg)
    status = run_status(tmp_run)
    assert status.stage("generate").state == "done" and status.stage("generate").error is None
    assert status.stage("generate").counts["images"] == counts["images"] == 17
    g = status.generation
    assert (g.committed_shards, g.rows_done, g.images, g.failures, g.finished) == (3, 18, 17, 1, True)
    assert [e.where for e in status.errors] == [f"generate: {storage.join(Run(tmp_run).synthetic, 'failures.jsonl')}"]


def test_evaluation_with_one_model_read_and_the_next_one_failed(tmp_run, pipeline, monkeypatch, capsys):
    from dft.evaluate.stage import run_evaluate

    models = "evaluate.models=[base, tiny-sd]"
    cfg = _cfg(tmp_run, models, "evaluate.readers=[{kind: skin_tone}]")
    assert cfg.evaluate.readers == [ReaderConfig(kind="skin_tone")]
    other = model_label("tiny-sd")
    pipeline.die[other] = 0
    with pytest.raises(RuntimeError, match="actor died after 0"):
        run_evaluate(cfg)
    status = run_status(tmp_run, planned_models=["base", "tiny-sd"])
    assert status.stage("evaluate").state == "failed"
    ev = status.evaluation
    assert ev.planned_models == ["base", "tiny-sd"] and not ev.metrics
    by = {m.label: m for m in ev.models}
    # 3 neutral prompts (a doctor, a person, the face of a person) x 2 images.
    assert by["base"].images.finished and by["base"].images.images == 6 and by["base"].labels == 6
    assert by[other].images.planned_rows == 6 and by[other].images.images == 0 and by[other].labels is None

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["status", tmp_run, "--set", models]) == 0
    out = capsys.readouterr().out
    assert "1 model(s) read of 2 planned" in out and "metrics not yet" in out
    assert main(["status", tmp_run, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["evaluation"]["planned_models"] is None  # no config given, and no marker yet
    assert {m["label"]: m["labels"] for m in data["evaluation"]["models"]} == {"base": 6, other: None}


@pytest.mark.s3
def test_an_s3_run_in_progress(s3_uri, pipeline, monkeypatch, capsys):
    _partial_generation(s3_uri, pipeline, monkeypatch)
    assert main(["status", "--set", f"run.uri={s3_uri}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["uri"] == s3_uri
    states = {s["name"]: s["state"] for s in data["stages"]}
    assert states == {"prompts": "done", "generate": "failed", "curate": "not started", "train": "not started",
                      "evaluate": "not started", "report": "not started"}
    g = data["generation"]
    assert g["uri"] == s3_uri + "/synthetic"
    assert (g["committed_shards"], g["planned_shards"], g["rows_done"], g["failures"]) == (1, 3, 6, 1)
    assert main(["status", s3_uri + "-nope"]) == 2
    assert f"no run at {s3_uri}-nope" in capsys.readouterr().err


def test_status_imports_neither_ray_nor_torch():
    code = "import sys, dft.status, dft.cli.status; print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_says_what_status_reads(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["status", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "usage: dft status" in out and "s3://" in out and "--json" in out and "starts no Ray" in out
    assert main(["status", "--set", "run.nam=x"]) == 2  # a bad config is refused like everywhere else
