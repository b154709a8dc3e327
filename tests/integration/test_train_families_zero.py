"""Fine-tuning SDXL, SD3 and FLUX through Ray Train + DeepSpeed (2 CPU workers, torch AdamW), ZeRO 2 and 3,
full and LoRA, precomputed latents and caption embeddings; the export loads with from_pretrained and generates.
Each family at ZeRO 2 and 3; all marked slow: about 1.5-2 minutes a case on a shared 2-core machine."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch
from train_shards import write_shards

from dft.config.schema import RunConfig
from dft.runs import Run

pytestmark = pytest.mark.integration

CASES = [
    # (source, zero stage, trainable, precompute latents + caption embeddings), default-suite cases first
    # 1.5-2 minutes each on a loaded 2-core machine: slow (the default suite trains FLUX under Ray Train +
    # DeepSpeed ZeRO-2 in test_gpu_suite_smoke.py, and every family's step in tests/unit/test_train_families.py)
    pytest.param("tiny-sd3", 3, "lora", True, id="sd3-zero3-lora-precomputed", marks=pytest.mark.slow),
    pytest.param("tiny-sdxl", 2, "unet", False, id="sdxl-zero2-full", marks=pytest.mark.slow),
    pytest.param("tiny-flux", 3, "full", True, id="flux-zero3-full-precomputed", marks=pytest.mark.slow),
    pytest.param("tiny-sdxl", 3, "lora", True, id="sdxl-zero3-lora-precomputed", marks=pytest.mark.slow),
    pytest.param("tiny-sd3", 2, "full", False, id="sd3-zero2-full", marks=pytest.mark.slow),
    pytest.param("tiny-flux", 2, "lora", False, id="flux-zero2-lora", marks=pytest.mark.slow),
]


def _cfg(run_uri: str, source: str, zero: int, trainable: str, precompute: bool) -> RunConfig:
    cfg = RunConfig.model_validate({"run": {"uri": run_uri, "name": "ft"}, "model": {"source": source}})
    t = cfg.train
    t.num_workers, t.zero_stage, t.batch_size, t.max_steps = 2, zero, 4, 3
    t.checkpoint_every, t.log_every, t.learning_rate, t.keep_checkpoints = 3, 1, 3e-3, 1
    t.trainable, t.caption_policy, t.attribute_dropout, t.empty_caption_prob = trainable, "attribute_dropout", 0.5, 0.1
    t.precompute_latents = t.precompute_text_embeddings = precompute
    return cfg


@pytest.mark.parametrize("source,zero,trainable,precompute", CASES)
def test_family_trains_under_deepspeed_and_exports(ray_session, tmp_run, source, zero, trainable, precompute):
    from diffusers import DiffusionPipeline

    from dft.models.families import denoiser_of
    from dft.models.sources import load_pipeline
    from dft.train.stage import run_train

    run = Run(tmp_run)
    write_shards(run.synthetic, n=16, shard_size=8)
    cfg = _cfg(tmp_run, source, zero, trainable, precompute)
    counts = run_train(cfg)
    assert counts["steps"] == 3 and np.isfinite(counts["final_loss"])
    per_rank = glob.glob(run.path("checkpoints", "ft", "checkpoint_*", "deepspeed", "step-00000003", "*optim_states.pt"))
    assert len(per_rank) == 2  # each rank's ZeRO partition

    out = run.finetuned_model
    name = "unet" if source == "tiny-sdxl" else "transformer"
    assert glob.glob(os.path.join(out, name, "*.safetensors"))
    DiffusionPipeline.from_pretrained(out)
    tuned, base = load_pipeline(out), load_pipeline(source)
    changed = [n for n, p in denoiser_of(tuned).state_dict().items()
               if not torch.equal(p, denoiser_of(base).state_dict()[n])]
    assert changed and not any("lora_" in n for n, _ in denoiser_of(tuned).named_parameters())  # LoRA merged
    if trainable == "lora":
        assert all(n.endswith("weight") and any(t in n for t in ("to_q", "to_k", "to_v", "to_out")) for n in changed)
    kwargs = {} if source == "tiny-sdxl" else {"max_sequence_length": 32}
    img = tuned("a photo of a Black woman doctor", num_inference_steps=2, height=32, width=32,
                generator=torch.Generator().manual_seed(0), **kwargs).images[0]
    assert img.size == (32, 32) and np.asarray(img).std() > 0
