"""The demo world's base model is trained by the fine-tuning stage itself (a small config here)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration


def test_base_model_is_trained_by_the_fine_tuning_stage_and_a_build_resumes(ray_session, tmp_path, caplog):
    from safetensors.torch import load_file

    from dft.models.sources import resolve_model_source
    from dft.world.base_model import BaseModelConfig, _prepare_init, base_model_info, build_base_model, build_dir, corpus_dir
    from dft.world.corpus import CorpusConfig, build_corpus

    cache = str(tmp_path / "cache")
    cfg = BaseModelConfig(corpus=CorpusConfig(size=128, shard_size=64), vae_steps=5, unet_steps=6, unet_batch=16,
                          warmup_steps=2)
    # A build that stopped after phase 1: its starting point (trained VAE) is on disk, nothing else.
    build_corpus(cfg.corpus, str(corpus_dir(cfg, cache)))
    first = _prepare_init(cfg, build_dir(cfg, cache) / "init", corpus_dir(cfg, cache), cache)
    with caplog.at_level(logging.INFO, logger="dft.world.base_model"):
        folder = Path(build_base_model(cfg, cache_dir=cache))
    assert "reusing the trained VAE" in caplog.text

    info = base_model_info(str(folder))
    assert info["vae_reconstruction_fidelity"] == first["vae_reconstruction_fidelity"]
    assert info["train"]["steps"] == 6 and info["train"]["rows"] == 128
    t = info["train_config"]
    assert (t["caption_policy"], t["empty_caption_prob"], t["lr_schedule"], t["train_text_encoder"]) == (
        "prompt", 0.1, "cosine", True)
    # The fine-tuning stage's export wrote it (its provenance file), from a checkpoint of that run.
    provenance = json.loads((folder / "dft_finetune.json").read_text())
    assert provenance["base_model"].endswith("/init") and provenance["step"] == 6
    # UNet and text encoder both moved away from the untrained small-sd pipeline it started from.
    init = Path(resolve_model_source(cfg.init_source, cache_dir=cache))
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(str(init / part)), load_file(str(folder / part))
        assert a.keys() == b.keys()
        assert any(not torch.equal(a[k], b[k]) for k in a), part
    assert not build_dir(cfg, cache).exists()  # the build's own folder is removed once it is done
