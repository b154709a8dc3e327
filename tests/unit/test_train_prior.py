"""train.prior_preservation: the full prompts' predictions held to a frozen copy of the base UNet."""

from __future__ import annotations

import pytest
import torch
from train_shards import rows

from dft.config.schema import RunConfig
from dft.models.families import FAMILIES
from dft.models.sources import resolve_model_source
from dft.train.components import build_module
from dft.train.preprocess import preprocess_batch
from dft.train.step import TorchBackend, prepare_batch, run_steps


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module on one torch thread (tests/conftest.py)."""


def _raw(n=8):
    rs = rows(n)
    raw = preprocess_batch({"image": [r["image"] for r in rs], "prompt": [r["prompt"] for r in rs],
                            "neutral_prompt": [r["neutral_prompt"] for r in rs]}, 32, "tiny-sd", None)
    return {k: torch.from_numpy(v) for k, v in raw.items()}


def _module(weight: float):
    cfg = RunConfig().train
    cfg.prior_preservation = weight
    torch.manual_seed(0)
    module, _ = build_module(resolve_model_source("tiny-sd"), cfg)
    return module


def _drift(module, batch) -> float:
    """MSE between the student's and the teacher's predictions on the full prompts (fixed noise)."""
    module.eval()
    with torch.no_grad():
        torch.manual_seed(5)
        latents = module.latents(batch)
        noise = torch.randn_like(latents)
        t = torch.randint(0, module.alphas_cumprod.shape[0], (latents.shape[0],))
        from dft.train.loss import add_noise

        noisy = add_noise(latents, noise, t, module.alphas_cumprod)
        value = float(module.prior_loss(batch, noisy, t, latents))
    module.train()
    return value


def test_full_prompts_are_kept_whatever_caption_was_drawn():
    raw = _raw()
    out = prepare_batch(raw, "neutral", 0.0, 0.0, None, None, "cpu", keep_prompt=True)
    assert torch.equal(out["input_ids"], raw["neutral_ids"])
    assert torch.equal(out["full_ids"], raw["prompt_ids"])
    assert not torch.equal(out["full_ids"], out["input_ids"])
    assert "full_ids" not in prepare_batch(raw, "neutral", 0.0, 0.0, None, None, "cpu")


def test_the_teacher_is_frozen_and_neither_a_parameter_nor_saved():
    module = _module(1.0)
    plain = _module(0.0)
    assert module._teacher is not None and plain._teacher is None
    assert not any(p.requires_grad for p in module._teacher.parameters())
    assert set(module.state_dict()) == set(plain.state_dict())  # checkpoints and EMA see the student only
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in plain.parameters())


def test_the_term_is_zero_before_training_and_the_loss_unchanged():
    batch = prepare_batch(_raw(), "neutral", 0.0, 0.0, None, None, "cpu", keep_prompt=True)
    with_prior, plain = _module(1.0).eval(), _module(0.0).eval()
    with torch.no_grad():
        torch.manual_seed(3)
        a = float(with_prior(batch))
        torch.manual_seed(3)
        b = float(plain(batch))
    assert _drift(with_prior, batch) < 1e-10
    assert a == pytest.approx(b, rel=1e-6)


def test_training_on_neutral_captions_moves_the_full_prompts_less_with_the_term():
    """The situation the term is for: every caption neutral (the extreme of attribute dropout), so
    nothing but the term holds the full prompts' predictions; after 25 steps they drifted from the
    base model's less with it than without it, and less the larger its weight (measured: 0.42, 0.21, 0.04
    of MSE at weights 0, 1, 4)."""
    batch = prepare_batch(_raw(16), "neutral", 0.0, 0.0, None, None, "cpu", keep_prompt=True)
    drift = {}
    for weight in (0.0, 1.0, 4.0):
        module = _module(weight)
        if weight == 0.0:  # a teacher to measure against, not trained against
            object.__setattr__(module, "_teacher", _module(1.0)._teacher)
        module.train()
        params = [p for p in module.parameters() if p.requires_grad]
        torch.manual_seed(1)
        run_steps(TorchBackend(module, torch.optim.AdamW(params, lr=1e-3), 1.0), iter([batch] * 25), start_step=0,
                  max_steps=25, grad_accum=1, samples_per_micro_step=16)
        drift[weight] = _drift(module, batch)
    assert drift[0.0] > 0, drift
    assert drift[4.0] < 0.75 * drift[1.0] < 0.75 * drift[0.0], drift


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_reusing_the_drawn_prediction_gives_the_same_term_and_gradient(q):
    """forward reuses the student's prediction for samples that drew their full prompt and runs it again
    only on the others: the term and its gradient equal those of a second forward on every sample."""
    from dft.train.step import drew_other_caption

    gen = torch.Generator().manual_seed(4)
    batch = prepare_batch(_raw(16), "attribute_dropout", q, 0.0, gen, None, "cpu", keep_prompt=True)
    redo = drew_other_caption(batch)
    expected = {0.0: (0, 0), 0.5: (1, 15), 1.0: (16, 16)}[q]  # none, a mix, or all run again
    assert expected[0] <= int(redo.sum()) <= expected[1], redo
    module = _module(1.0)
    with torch.no_grad():  # a student that moved away from its teacher, so the term is not zero
        for p in module.unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.manual_seed(5)
    latents = module.latents(batch)
    t = torch.randint(0, module.alphas_cumprod.shape[0], (16,))
    from dft.train.loss import add_noise

    noisy = add_noise(latents, torch.randn_like(latents), t, module.alphas_cumprod)
    values, grads = [], []
    for reuse in (True, False):
        module.zero_grad()
        hidden, pooled = module.condition(batch)
        pred = module._denoise(module.unet, noisy, t, hidden, pooled, batch, latents)
        term = module.prior_loss(batch, noisy, t, latents, pred if reuse else None)
        term.backward()
        values.append(float(term.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in module.unet.parameters() if p.grad is not None]))
    assert values[0] > 0
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_every_step_runs_the_student_twice_whatever_was_drawn(q):
    """The same forwards on every rank, whatever its samples drew (ZeRO-3 gathers parameters collectively
    in each): a batch with no sample to run again still runs one."""
    gen = torch.Generator().manual_seed(4)
    batch = prepare_batch(_raw(8), "attribute_dropout", q, 0.0, gen, None, "cpu", keep_prompt=True)
    module = _module(1.0)
    calls = []
    module.unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        module(batch)
    assert len(calls) == 2 and calls[0] == 8, calls
    assert 1 <= calls[1] <= 8, calls


def test_flow_matching_families_are_refused_naming_the_field():
    cfg = RunConfig().train
    cfg.prior_preservation = 0.5
    problems = cfg.family_problems(FAMILIES["sd3"])
    assert any("train.prior_preservation" in p and "0.5" in p for p in problems), problems
    assert not RunConfig().train.family_problems(FAMILIES["sd3"])


def test_a_negative_weight_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="prior_preservation"):
        RunConfig.model_validate({"train": {"prior_preservation": -1}})
