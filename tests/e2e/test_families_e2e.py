"""`dft run` end to end for SDXL, SD3 and FLUX on their built-in tiny models: prompts, generation,
fine-tuning with attribute dropout (Ray Train + DeepSpeed), evaluation of base and fine-tuned, report.

Slow: 2-4 minutes a family on a shared 2-core machine (three generation passes and a training job)."""

from __future__ import annotations

import json
import os

import pytest

from dft.runs import Run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _sets(run_uri: str, source: str) -> list[str]:
    sets = [
        f"run.uri={run_uri}", "run.name=e2e", f"model.source={source}",
        "prompts.include.profession=[doctor, nurse]", "prompts.include.ethnicity=[Black, White]",
        "prompts.include.gender=[woman, man]", "prompts.include.age=[young]", "prompts.images_per_prompt=1",
        "prompts.neutral_max_professions=1", "prompts.neutral_images_per_prompt=4",
        "generate.steps=2", "generate.batch_size=4", "generate.shard_size=8",
        "train.max_steps=3", "train.batch_size=4", "train.num_workers=1", "train.zero_stage=2",
        "train.checkpoint_every=3", "train.caption_policy=attribute_dropout", "train.attribute_dropout=0.5",
        "train.learning_rate=1e-3",
        "evaluate.models=[base, finetuned]", "evaluate.bootstrap=20", "evaluate.readers=[{kind: skin_tone}]",
    ]
    if source in ("tiny-sd3", "tiny-flux"):
        sets += ["generate.guidance_scale=3.5", "generate.max_sequence_length=16", "train.max_sequence_length=16",
                 "train.precompute_latents=true", "train.precompute_text_embeddings=true"]
    return sets


@pytest.mark.parametrize("source", ["tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_dft_run_end_to_end(ray_session, tmp_run, source):
    from dft.cli.main import main

    assert main(["run", *[a for s in _sets(tmp_run, source) for a in ("--set", s)]]) == 0
    run = Run(tmp_run)
    for stage in ("prompts", "generate", "train", "evaluate", "report"):
        assert run.marker(stage) is not None, stage
    assert run.marker("generate")["counts"]["images"] == 8
    train = run.marker("train")["counts"]
    assert train["steps"] == 3 and train["final_loss"] is not None
    denoiser = "unet" if source == "tiny-sdxl" else "transformer"
    assert os.path.isdir(os.path.join(run.finetuned_model, denoiser))
    provenance = json.load(open(os.path.join(run.finetuned_model, "dft_finetune.json")))
    assert provenance["base_model"] == source and provenance["train"]["caption_policy"] == "attribute_dropout"
    report = run.path("report")
    assert os.path.exists(os.path.join(report, "index.html"))
    metrics = json.load(open(os.path.join(report, "metrics.json")))
    assert {"base", "finetuned"} <= set(json.dumps(metrics).replace('"', " ").split())
