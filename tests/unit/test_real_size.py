"""Real size on paper: the published architectures built on the meta device (no memory, no download)
against their published parameter counts, the cluster presets, and the per-GPU memory estimate that
docs/train.md prints."""

from pathlib import Path

import pytest

from dft.config.load import load_config
from dft.models.families import FAMILIES
from dft.models.published import PUBLISHED, build_on_meta, count_parameters
from dft.train.memory import DOC_ROWS, GIB, activation_bytes, doc_row_config, estimate, markdown_row

ROOT = Path(__file__).resolve().parents[2]
PRESETS = {"sdxl_cluster.yaml": "sdxl", "sd35_medium_cluster.yaml": "sd3", "flux_dev_lora_cluster.yaml": "flux"}

# What the published configs give, to the parameter, and how far that is from the announced size.
COUNTS = {
    "sdxl_unet": (2_567_463_684, 0.02),            # "2.6B UNet" (SDXL paper)
    "sd35_medium_transformer": (2_243_171_520, 0.11),  # announced "2.5B"; the MMDiT-X transformer is 2.24B
    "flux_dev_transformer": (11_901_408_320, 0.01),  # "12B" (11.9B)
    "t5_xxl_encoder": (4_762_310_656, 0.02),       # T5 v1.1 XXL encoder, "4.7B"
    "clip_l": (123_650_304, 0.01),                 # CLIP ViT-L/14 text tower with projection, "123M"
    "clip_g": (694_659_840, 0.01),                 # OpenCLIP bigG text tower with projection, "695M"
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_meta_device_parameter_counts_match_the_published_sizes(name):
    model = build_on_meta(name)
    assert all(p.is_meta for p in model.parameters())  # shapes only: nothing allocated
    exact, tolerance = COUNTS[name]
    assert count_parameters(model) == exact
    assert abs(exact - PUBLISHED[name]) / PUBLISHED[name] <= tolerance


@pytest.mark.parametrize("preset,family", sorted(PRESETS.items()))
def test_presets_validate_and_fit_their_family(preset, family, monkeypatch):
    monkeypatch.setenv("DFT_BUCKET", "my-runs")  # the presets read the runs bucket from the environment
    cfg = load_config([ROOT / "jobs/configs/sd15_cluster.yaml", ROOT / "jobs/configs" / preset])
    fam = FAMILIES[family]
    assert cfg.train.family_problems(fam) == [] and cfg.generate.family_problems(fam) == []
    t = cfg.train
    assert t.use_gpu is True and t.num_workers == 8 and t.precision == "bf16" and t.zero_stage in (2, 3)
    assert t.precompute_latents and t.precompute_text_embeddings and t.gradient_checkpointing
    assert t.resolution == cfg.generate.height == cfg.generate.width == 1024
    est = estimate(family, t, t.resolution)
    assert est.fits(80), f"{preset}: {est.gb('total')} GB per GPU"
    row = markdown_row(f"`{preset}`", est, t)
    assert row in (ROOT / "docs/train.md").read_text(), f"docs/train.md lacks the current row:\n{row}"


def test_the_estimate_is_the_documented_formula():
    """FLUX.1-dev LoRA rank 16 on 8 GPUs at ZeRO-2, by hand."""
    cfg = doc_row_config(dict(num_workers=8, zero_stage=2, trainable="lora", batch_size=4, gradient_checkpointing=True))
    est = estimate("flux", cfg, 1024)
    # double blocks: the image stream's q k v out (the text stream's are add_q_proj ..., not targeted)
    lora = 16 * (3072 + 3072) * 4 * 19
    lora += 16 * (3072 + 3072) * 3 * 38  # single blocks: q k v (their output is proj_out, not to_out)
    assert est.trained_params == lora
    assert est.resident_params == 11_901_408_320 + lora  # no text encoder, no VAE: precomputed
    assert est.weights == 2 * est.resident_params  # ZeRO-2 keeps whole weights
    assert est.gradients == 2 * lora / 8 and est.optimizer == 12 * lora / 8
    s, h = 64 * 64 + 512, 3072
    assert est.activations == 4 * (2 * s * h * 57 + 34 * s * h)
    assert est.total == est.weights + est.gradients + est.optimizer + est.activations + 2 * GIB
    full = estimate("flux", doc_row_config(dict(num_workers=1, zero_stage=0, trainable="full")), 1024)
    assert full.total > 141e9  # a full FLUX fine-tune does not fit one GPU; ZeRO-3 on 8 does
    sharded = dict(num_workers=8, zero_stage=3, trainable="full", batch_size=1, gradient_checkpointing=True)
    assert estimate("flux", doc_row_config(sharded), 1024).fits(80)
    assert activation_bytes("sd3", 1024, False) > 5 * activation_bytes("sd3", 1024, True)
    # the text encoders and VAE count only when they stay in the trainer
    inside = estimate("sd3", doc_row_config(dict(trainable="full", precompute_latents=False,
                                                 precompute_text_embeddings=False)), 1024)
    assert inside.resident_params == 2_243_171_520 + 123_650_304 + 694_659_840 + 4_762_310_656 + 83_819_683
    # prior preservation: a bf16 copy of the SDXL UNet on every GPU (ZeRO-3 or not) and twice the activations
    row = dict(num_workers=8, zero_stage=3, trainable="full", batch_size=2)
    plain, kept = (estimate("sdxl", doc_row_config({**row, "prior_preservation": w}), 1024) for w in (0.0, 0.5))
    assert kept.weights - plain.weights == 2 * 2_567_463_684
    assert kept.activations == 2 * plain.activations and kept.optimizer == plain.optimizer


def test_docs_print_every_row_of_the_what_fits_table():
    text = (ROOT / "docs/train.md").read_text()
    missing = []
    for label, family, fields in DOC_ROWS:
        cfg = doc_row_config(fields)
        row = markdown_row(label, estimate(family, cfg, 1024), cfg)
        if row not in text:
            missing.append(row)
    assert not missing, "docs/train.md is out of date; rows:\n" + "\n".join(missing)
