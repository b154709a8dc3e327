"""The training step per family on the tiny models, without Ray: SDXL's pooled embeddings and time ids,
SD3's and FLUX's flow matching, each checked against a direct computation with diffusers' own pipeline
pieces; precomputed caption embeddings; one caption draw for every tokenizer; the loss falls."""

import numpy as np
import pytest
import torch
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
from train_shards import rows

from dft.config.schema import RunConfig
from dft.models.sources import load_pipeline, resolve_model_source
from dft.train.components import build_module
from dft.train.preprocess import decode_image_with_geometry, preprocess_batch
from dft.train.step import TorchBackend, choose_captions, drop_to_empty, prepare_batch, run_steps
from dft.train.text import caption_tokenizers, embed_captions, load_text_encoders


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module on one torch thread (tests/conftest.py)."""


def _raw(source, n=8):
    rs = rows(n)
    raw = preprocess_batch({"image": [r["image"] for r in rs], "prompt": [r["prompt"] for r in rs],
                            "neutral_prompt": [r["neutral_prompt"] for r in rs]}, 32, source, None)
    return {k: torch.from_numpy(v) for k, v in raw.items()}, [r["prompt"] for r in rs]


def _module(source, **train):
    cfg = RunConfig().train
    for k, v in train.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    module, _ = build_module(resolve_model_source(source), cfg)
    return module.eval(), cfg


def _encode_pixels(vae, px, scaling, shift):
    lat = vae.encode(px.float() / 127.5 - 1.0).latent_dist.sample()
    return (lat - shift) * scaling


def test_sdxl_loss_is_the_recipe_with_pooled_embeddings_and_time_ids():
    module, _ = _module("tiny-sdxl")
    raw, prompts = _raw("tiny-sdxl")
    batch = prepare_batch(raw, "prompt", 0.0, 0.0, None, None, "cpu")
    batch["original_size"] = torch.tensor([[40, 56]] * 8)  # as if the sources were larger, cropped
    batch["crop_top_left"] = torch.tensor([[4, 12]] * 8)
    pipe = load_pipeline("tiny-sdxl")
    with torch.no_grad():
        torch.manual_seed(3)
        ours = float(module(batch))
        torch.manual_seed(3)
        x0 = _encode_pixels(pipe.vae, batch["pixels"], pipe.vae.config.scaling_factor, 0.0)
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (8,))
        sched = pipe.scheduler
        noisy = sched.add_noise(x0, noise, t)
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
        time_ids = torch.tensor([[40, 56, 4, 12, 32, 32]] * 8, dtype=torch.float32)
        pred = pipe.unet(noisy, t, embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        direct = float(torch.nn.functional.mse_loss(pred, noise))
    assert ours == pytest.approx(direct, rel=1e-4)


def test_sdxl_crop_geometry_per_sample():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(buf, format="PNG")
    px, original, crop = decode_image_with_geometry(buf.getvalue(), 32)
    assert px.shape == (3, 32, 32) and original == (32, 48) and crop == (0, 8)
    raw, _ = _raw("tiny-sdxl", 2)
    assert raw["original_size"].tolist() == [[32, 32]] * 2 and raw["crop_top_left"].tolist() == [[0, 0]] * 2


@pytest.mark.parametrize("source,scheme", [("tiny-sd3", "logit_normal"), ("tiny-sd3", "cosmap"),
                                           ("tiny-flux", "mode"), ("tiny-flux", "sigma_sqrt")])
def test_flow_matching_loss_is_the_recipe(source, scheme):
    module, cfg = _module(source, flow={"weighting_scheme": scheme, "guidance_scale": 3.5})
    raw, prompts = _raw(source)
    batch = prepare_batch(raw, "prompt", 0.0, 0.0, None, None, "cpu")
    pipe = load_pipeline(source)
    vae = pipe.vae
    with torch.no_grad():
        torch.manual_seed(5)
        ours = float(module(batch))
        torch.manual_seed(5)
        x0 = _encode_pixels(vae, batch["pixels"], vae.config.scaling_factor, vae.config.shift_factor)
        noise = torch.randn_like(x0)
        u = compute_density_for_timestep_sampling(scheme, 8, logit_mean=0.0, logit_std=1.0, mode_scale=1.29)
        idx = (u * 1000).long()
        sched = pipe.scheduler  # a fresh scheduler: its training grid, before any set_timesteps
        t, sigmas = sched.timesteps[idx], sched.sigmas[idx].view(-1, 1, 1, 1)
        noisy = (1.0 - sigmas) * x0 + sigmas * noise
        if source == "tiny-sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(prompts, prompts, prompts, device="cpu",
                                                      do_classifier_free_guidance=False, max_sequence_length=32)
            pred = pipe.transformer(hidden_states=noisy, timestep=t, encoder_hidden_states=embeds,
                                    pooled_projections=pooled).sample
        else:
            embeds, pooled, text_ids = pipe.encode_prompt(prompts, None, device="cpu", max_sequence_length=32)
            b, c, h, w = noisy.shape
            packed = pipe._pack_latents(noisy, b, c, h, w)
            img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32)
            out = pipe.transformer(hidden_states=packed, timestep=t / 1000, guidance=torch.full((b,), 3.5),
                                   pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                                   img_ids=img_ids).sample
            pred = pipe._unpack_latents(out, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor, pipe.vae_scale_factor)
        target = noise - x0
        weighting = compute_loss_weighting_for_sd3(scheme, sigmas)
        direct = float(torch.mean((weighting.float() * (pred.float() - target.float()) ** 2).reshape(8, -1), 1).mean())
    assert ours == pytest.approx(direct, rel=1e-4)


@pytest.mark.parametrize("source", ["tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_precomputed_caption_embeddings_give_the_same_loss(source):
    module, _ = _module(source)
    raw, _ = _raw(source)
    folder = resolve_model_source(source)
    family, toks = caption_tokenizers(folder)
    encoders = [e.eval() for e in load_text_encoders(folder, family)]
    rs = rows(8)
    pre = {k: v for k, v in raw.items() if not k.startswith(("prompt_", "neutral_"))}
    for prefix, key in (("prompt", "prompt"), ("neutral", "neutral_prompt")):
        emb = embed_captions(family, encoders, toks, [r[key] for r in rs], None)
        pre.update({f"{prefix}_{k}": torch.from_numpy(v) for k, v in emb.items()})
    frozen, _ = _module(source, precompute_text_embeddings=True)
    assert not frozen.text_encoders and module.text_encoders
    with torch.no_grad():
        torch.manual_seed(9)
        a = float(module(prepare_batch(raw, "prompt", 0.0, 0.0, None, None, "cpu")))
        torch.manual_seed(9)
        b = float(frozen(prepare_batch(pre, "prompt", 0.0, 0.0, None, None, "cpu")))
    assert a == pytest.approx(b, rel=1e-5)


def test_one_caption_draw_decides_every_tokenizer_and_matches_the_single_tokenizer_policy():
    raw, _ = _raw("tiny-sd3", 16)
    empty = {k[len("prompt_"):]: torch.full_like(v[0], 7) for k, v in raw.items() if k.startswith("prompt_")}
    out = prepare_batch(raw, "attribute_dropout", 0.5, 0.3, torch.Generator().manual_seed(1), empty, "cpu")
    neutral = [bool((out["input_ids"][i] == raw["neutral_ids"][i]).all()) for i in range(16)]
    emptied = [bool((out["input_ids"][i] == 7).all()) for i in range(16)]
    for col in ("ids_2", "ids_3"):
        assert [bool((out["input_" + col][i] == raw["neutral_" + col][i]).all()) for i in range(16)] == neutral
        assert [bool((out["input_" + col][i] == 7).all()) for i in range(16)] == emptied
    assert 0 < sum(neutral) < 16 and 0 < sum(emptied) < 16
    # the draws are those of the single-tokenizer helpers: an SD run keeps its exact captions
    g = torch.Generator().manual_seed(1)
    ids = drop_to_empty(choose_captions(raw["prompt_ids"], raw["neutral_ids"], "attribute_dropout", 0.5, g),
                        empty["ids"], 0.3, g)
    assert torch.equal(ids, out["input_ids"])


def _fixed_loss(module, batch) -> float:
    """The loss on a batch with the same noise and timesteps every time (4 seeds averaged)."""
    module.eval()
    with torch.no_grad():
        out = []
        for seed in range(4):
            torch.manual_seed(100 + seed)
            out.append(float(module(batch)))
    module.train()
    return float(np.mean(out))


@pytest.mark.parametrize("source,trainable,lr,ratio", [
    ("tiny-sdxl", "unet", 1e-3, 0.5), ("tiny-sd3", "full", 1e-2, 0.9),  # SD3's VAE scale makes x0 large: slower
    ("tiny-flux", "full", 3e-3, 0.6), ("tiny-flux", "lora", 1e-2, 0.85)])
def test_the_loss_falls_in_a_few_dozen_steps(source, trainable, lr, ratio):
    module, _ = _module(source, trainable=trainable)
    module.train()
    assert not module.vae.training and not any(e.training for e in module.text_encoders)  # frozen parts stay eval
    raw, _ = _raw(source, 16)
    batch = prepare_batch(raw, "prompt", 0.0, 0.0, None, None, "cpu")
    before = _fixed_loss(module, batch)
    params = [p for p in module.parameters() if p.requires_grad]
    torch.manual_seed(1)
    run_steps(TorchBackend(module, torch.optim.AdamW(params, lr=lr), 1.0), iter([batch] * 30), start_step=0,
              max_steps=30, grad_accum=1, samples_per_micro_step=16)
    after = _fixed_loss(module, batch)
    assert after < ratio * before, (before, after)
