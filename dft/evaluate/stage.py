"""The evaluate, curate and report stages of a run.

evaluate: for each model of ``evaluate.models`` generate N images per neutral prompt into
RUN/eval/images/<label>/ (the generation stage itself: deterministic, resumable), read perceived
attributes with the readers (a Ray Data actor pool) into RUN/eval/labels/<label>.parquet, then
RUN/eval/labels.parquet (all models) and RUN/eval/metrics.json (``dft fairness`` JSON plus the
quality guard). A model's labels are reused when its images and the readers are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re

import pyarrow as pa
import pyarrow.parquet as pq

from dft import storage
from dft.errors import MissingInput
from dft.evaluate.config import ReaderConfig
from dft.runs import Run, StageResult, run_stage

log = logging.getLogger(__name__)

EVAL_SECTIONS = ("model", "prompts", "generate", "evaluate")


def model_label(name: str) -> str:
    """A folder-safe label for a model name ('base', 'finetuned', or a source string)."""
    if name in ("base", "finetuned"):
        return name
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.rstrip("/").split("/")[-1] or name).strip("-.")
    return f"{slug or 'model'}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def model_sources(cfg, run: Run) -> dict[str, str]:
    """Label -> model source for every model to evaluate; checks the fine-tuned export exists."""
    out = {}
    for name in cfg.evaluate.models:
        if name == "base":
            out["base"] = cfg.model.source
        elif name == "finetuned":
            if not storage.exists(storage.join(run.finetuned_model, "model_index.json")):
                raise MissingInput(
                    f"evaluate.models names 'finetuned' but {run.finetuned_model} holds no exported pipeline "
                    "(run `dft train` first, or set evaluate.models=[base])"
                )
            out["finetuned"] = run.finetuned_model
        else:
            out[model_label(name)] = name
    return out


def eval_readers(cfg) -> list[ReaderConfig]:
    readers = list(cfg.evaluate.readers)
    if cfg.evaluate.clip_score_model:
        readers.append(ReaderConfig(kind="clip_score", model=cfg.evaluate.clip_score_model))
    return readers


def _readers_hash(readers: list[ReaderConfig]) -> str:
    blob = json.dumps([r.model_dump(mode="json") for r in readers], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _declared(readers: list[ReaderConfig]) -> dict:
    from dft.evaluate.registry import declared_attributes

    out: dict = {}
    for r in readers:
        out.update(declared_attributes(r) or {})
    return out


def label_model(images_uri: str, label: str, readers: list[ReaderConfig], out_uri: str, num_actors: int) -> pa.Table:
    """Labels of one model's evaluation images; reused when images and readers are unchanged."""
    from dft.evaluate.labels import label_table, write_labels
    from dft.evaluate.pipeline import read_with_ray
    from dft.generate.shards import read_manifest, shard_files

    manifest = read_manifest(images_uri)
    stamp = hashlib.sha256(
        (json.dumps(manifest.get("shards", []), sort_keys=True, default=str) + _readers_hash(readers)).encode()
    ).hexdigest()[:16]
    stamp_uri = out_uri + ".stamp"
    if storage.exists(out_uri) and storage.exists(stamp_uri) and storage.read_text(stamp_uri).strip() == stamp:
        log.info("labels of %s are up to date: %s", label, out_uri)
        return pq.read_table(storage.pyarrow_filesystem(out_uri)[1], filesystem=storage.pyarrow_filesystem(out_uri)[0])
    files = shard_files(images_uri, "parquet")
    raw = read_with_ray(files, readers, num_actors=num_actors, extra_columns={"model": label})
    table = label_table([raw] if raw.num_rows else [], _declared(readers))
    write_labels(table, out_uri)
    storage.write_text(stamp_uri, stamp + "\n")
    return table


def evaluate_stage(cfg, force: bool = False) -> StageResult:
    from dft.cluster import connect
    from dft.evaluate.clip_score import summarize
    from dft.evaluate.fairness import score_table
    from dft.evaluate.labels import label_table, write_labels
    from dft.generate.job import generate_dataset
    from dft.prompts.table import neutral_table

    run = Run(cfg.run.uri)
    ev = cfg.evaluate

    def work() -> dict:
        sources = model_sources(cfg, run)
        readers = eval_readers(cfg)
        prompts = neutral_table(cfg.prompts, images_per_prompt=ev.images_per_prompt, seed_offset=ev.seed_offset)
        if force:
            storage.remove(storage.join(run.eval, "labels.parquet"))
        connect(cfg.ray)
        tables, counts = [], {"prompts": len(set(prompts.column("prompt").to_pylist())), "models": {}}
        for label, source in sources.items():
            images = storage.join(run.eval, "images", label)
            gen = generate_dataset(prompts, images, source, cfg.generate, cache_dir=cfg.model.cache_dir)
            t = label_model(images, label, readers, storage.join(run.eval, "labels", f"{label}.parquet"), ev.num_actors)
            tables.append(t)
            counts["models"][label] = {"source": source, "images": gen["images"], "labels": t.num_rows}
        labels = label_table(tables, _declared(readers))
        write_labels(labels, storage.join(run.eval, "labels.parquet"))
        result = score_table(labels, bootstrap=ev.bootstrap, seed=cfg.prompts.seed + ev.seed_offset,
                             targets=ev.targets, intersections=ev.intersections, groups=ev.groups)
        result["models_sources"] = {k: v["source"] for k, v in counts["models"].items()}
        quality = summarize(labels, bootstrap=ev.bootstrap)
        if quality:
            result["quality"] = {"clip_score": quality, "clip_score_model": ev.clip_score_model}
        storage.write_json(storage.join(run.eval, "metrics.json"), result)
        counts["labels"] = labels.num_rows
        log.info("evaluation: %s", counts)
        return counts

    return run_stage(run, "evaluate", cfg, EVAL_SECTIONS, work, force=force)


def run_evaluate(cfg, force: bool = False) -> dict:
    """The stage's counts: prompts, models (source, images, labels of each), labels."""
    return evaluate_stage(cfg, force).counts


CURATE_SECTIONS = ("model", "prompts", "generate", "curate")
REPORT_SECTIONS = ("evaluate", "report")


def curate_stage(cfg, force: bool = False) -> StageResult:
    from dft.evaluate.curate import curate_run

    run = Run(cfg.run.uri)
    return run_stage(run, "curate", cfg, CURATE_SECTIONS, lambda: curate_run(cfg, run, force), force=force)


def run_curate(cfg, force: bool = False) -> dict:
    return curate_stage(cfg, force).counts


def report_stage(cfg, force: bool = False) -> StageResult:
    from dft.evaluate.report import write_report

    run = Run(cfg.run.uri)
    metrics_uri = storage.join(run.eval, "metrics.json")
    if not storage.exists(metrics_uri):
        raise MissingInput(f"{metrics_uri} does not exist: run `dft evaluate` first")
    # The marker records the metrics it was made from, so a re-evaluation makes the report stale.
    metrics = hashlib.sha256(storage.read_bytes(metrics_uri)).hexdigest()[:16]
    return run_stage(run, "report", cfg, REPORT_SECTIONS, lambda: write_report(run, cfg.report), force=force,
                     inputs={"metrics_sha256": metrics})


def run_report(cfg, force: bool = False) -> dict:
    return report_stage(cfg, force).counts
