"""The evaluate and report stages on a tiny run, with Ray: generation, the reader actor pool,
metrics, resumption, and the report; plus curation of a synthetic set."""

import json
import os

import pyarrow.parquet as pq
import pytest

from dft import storage
from dft.config.load import load_config
from dft.evaluate.config import ReaderConfig
from dft.runs import Run

pytestmark = pytest.mark.integration

job = pytest.importorskip("dft.generate.job", reason="generation (dft/generate/job.py) is not built yet")


def tiny_cfg(run_uri, **evaluate):
    cfg = load_config([], [])
    cfg.run.uri = run_uri
    cfg.model.source = "tiny-sd"
    cfg.prompts.include = {"profession": ["doctor"]}
    cfg.prompts.neutral_max_professions = 1
    cfg.prompts.neutral_images_per_prompt = 4
    cfg.generate.steps = 2
    cfg.generate.batch_size = 4
    cfg.generate.shard_size = 8
    cfg.evaluate.models = ["base", "small-sd"]
    cfg.evaluate.bootstrap = 50
    cfg.evaluate.clip_score_model = "tiny-clip"
    cfg.evaluate.readers = [ReaderConfig(kind="skin_tone"), ReaderConfig(kind="clip", model="tiny-clip", batch_size=8)]
    for k, v in evaluate.items():
        setattr(cfg.evaluate, k, v)
    return cfg


@pytest.mark.slow  # ~2 minutes on 2 CPUs: two models generated and read by actor pools
def test_evaluate_then_report(ray_session, tmp_run):
    from dft.evaluate.stage import run_evaluate, run_report

    cfg = tiny_cfg(tmp_run, intersections=[["gender", "skin_tone_group"]])
    counts = run_evaluate(cfg)
    run = Run(tmp_run)
    labels = pq.read_table(storage.join(run.eval, "labels.parquet"))
    # 3 neutral prompts ("a photo of a doctor", "...person", "...face of a person") x 4 images x 2 models
    assert labels.num_rows == 24 == counts["labels"]
    assert set(labels.column("model").to_pylist()) == {"base", next(k for k in counts["models"] if k != "base")}
    assert set(labels.column("gender").to_pylist()) <= {"man", "woman"}
    reasons = set(labels.column("skin_tone_reason").to_pylist())
    assert reasons <= {None, "no_face", "no_skin", "overexposed"}  # a tiny model's noise has no faces to read
    metrics = json.loads(open(storage.join(run.eval, "metrics.json")).read())
    assert metrics["comparison"]["base"] == "base"
    assert "gender" in metrics["comparison"]["attributes"]
    assert metrics["comparison"]["resampling"] == "paired"  # both models drew the same (prompt, seed)s
    joint = metrics["models"]["base"]["attributes"]["gender+skin_tone_group"]
    assert joint["K"] == 6 and joint["parts"] == ["gender", "skin_tone_group"]
    assert metrics["models"]["base"]["attributes"]["gender"]["mean"]["imbalance"]["floor"] > 0
    assert set(metrics["quality"]["clip_score"]) == set(counts["models"])
    # a finished stage is a no-op the second time
    assert run_evaluate(cfg) == counts
    out = run_report(cfg)
    assert out["models"] == 2
    for name in ("index.html", "report.md", "metrics.json"):
        assert os.path.isfile(os.path.join(run.report, name))
    assert len(os.listdir(os.path.join(run.report, "sheets"))) == 2 * 3


def test_labels_are_reused_when_images_and_readers_are_unchanged(ray_session, tmp_run):
    from dft.evaluate.stage import run_evaluate

    cfg = tiny_cfg(tmp_run, models=["base"], clip_score_model=None, readers=[ReaderConfig(kind="skin_tone")])
    run_evaluate(cfg)
    stamp = storage.join(Run(tmp_run).eval, "labels", "base.parquet")
    before = os.path.getmtime(stamp)
    run_evaluate(cfg, force=True)  # regenerates nothing (images committed) and relabels nothing
    assert os.path.getmtime(stamp) == before


def test_finetuned_missing_names_the_fix(tmp_run):
    from dft.evaluate.stage import run_evaluate

    with pytest.raises(FileNotFoundError, match="dft train"):
        run_evaluate(tiny_cfg(tmp_run, models=["base", "finetuned"]))


def test_curate_synthetic_set(ray_session, tmp_run):
    from dft.evaluate.stage import run_curate
    from dft.prompts.stage import run_prompts

    cfg = tiny_cfg(tmp_run)
    cfg.prompts.include = {"profession": ["doctor"], "ethnicity": ["Black"], "age": ["young"]}
    cfg.prompts.images_per_prompt = 2
    cfg.curate.readers = [ReaderConfig(kind="clip", model="tiny-clip")]
    run_prompts(cfg)
    from dft.generate.stage import run_generate

    run_generate(cfg)
    counts = run_curate(cfg)
    run = Run(tmp_run)
    keep = pq.read_table(storage.join(run.curated, "keep.parquet")).column("key").to_pylist()
    assert counts["kept"] == len(keep) and counts["kept"] + counts["dropped"] == counts["images"]
    assert sum(counts["dropped_by"].values()) == counts["dropped"]
    filtered = pq.read_table(storage.join(run.curated, "parquet")).column("key").to_pylist()
    assert sorted(filtered) == sorted(keep)
