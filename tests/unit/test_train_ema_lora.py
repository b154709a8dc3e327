import pytest
import torch

from dft.config.schema import RunConfig
from dft.train.ema import EMA
from dft.train.step import choose_captions, drop_to_empty
from dft.train.trainable import TrainableSpec, apply_trainable, merge_lora


def test_ema_follows_the_update_rule_and_round_trips():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([("w", p)], decay=0.9, warmup=False)
    p.data.fill_(1.0)
    ema.update([("w", p)])
    torch.testing.assert_close(ema.shadow["w"], torch.full((3,), 0.1))
    ema.update([("w", p)])
    torch.testing.assert_close(ema.shadow["w"], torch.full((3,), 0.19))
    other = EMA([("w", torch.nn.Parameter(torch.zeros(3)))], decay=0.5)
    other.load_state_dict(ema.state_dict())
    q = torch.nn.Parameter(torch.zeros(3))
    other.copy_to([("w", q)])
    torch.testing.assert_close(q.data, torch.full((3,), 0.19))
    assert other.step_count == 2 and other.decay == 0.9


def test_ema_warmup_starts_fast():
    ema = EMA([("w", torch.nn.Parameter(torch.zeros(1)))], decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    with pytest.raises(ValueError):
        EMA([], decay=1.0)


def test_caption_policies():
    prompt, neutral = torch.ones(1000, 4, dtype=torch.long), torch.zeros(1000, 4, dtype=torch.long)
    assert torch.equal(choose_captions(prompt, neutral, "prompt", 0.5, None), prompt)
    assert torch.equal(choose_captions(prompt, neutral, "neutral", 0.5, None), neutral)
    out = choose_captions(prompt, neutral, "attribute_dropout", 0.3, torch.Generator().manual_seed(0))
    share = float((out[:, 0] == 0).float().mean())
    assert 0.25 < share < 0.35


def test_empty_caption_dropout_replaces_whole_captions_at_its_rate():
    ids = torch.arange(1, 5).repeat(2000, 1)
    empty = torch.tensor([49406, 49407, 49407, 49407])
    assert torch.equal(drop_to_empty(ids, empty, 0.0, None), ids)
    out = drop_to_empty(ids, empty, 0.1, torch.Generator().manual_seed(0))
    dropped = (out == empty).all(dim=1)
    kept = (out == ids).all(dim=1)
    assert bool((dropped | kept).all())  # a caption is either whole or wholly empty
    assert 0.08 < float(dropped.float().mean()) < 0.12


def _tiny_parts():
    from dft.models.sources import resolve_model_source
    from dft.train.components import load_components

    unet, encoders, vae, scheduler, _family = load_components(resolve_model_source("tiny-sd"))
    return unet, encoders[0], vae, scheduler


def test_lora_selection_unet_and_text_encoder():
    unet, te, vae, _ = _tiny_parts()
    cfg = RunConfig().train
    cfg.trainable = "lora"
    cfg.lora.text_encoder = True
    counts = apply_trainable(unet, te, vae, TrainableSpec.from_config(cfg))
    trained = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert any("to_q" in n for n in trained) and not any("conv" in n for n in trained)
    te_trained = [n for n, p in te.named_parameters() if p.requires_grad]
    assert te_trained and all("lora_" in n for n in te_trained)
    assert not any(p.requires_grad for p in vae.parameters())
    assert 0 < counts["unet_trainable"] < counts["total"] / 2


def test_full_unet_freezes_text_encoder_unless_asked():
    unet, te, vae, _ = _tiny_parts()
    cfg = RunConfig().train
    apply_trainable(unet, te, vae, TrainableSpec.from_config(cfg))
    assert all(p.requires_grad for p in unet.parameters())
    assert not any(p.requires_grad for p in te.parameters())
    cfg.train_text_encoder = True
    unet, te, vae, _ = _tiny_parts()
    apply_trainable(unet, te, vae, TrainableSpec.from_config(cfg))
    assert all(p.requires_grad for p in te.parameters())


def test_lora_merge_keeps_outputs_and_removes_layers():
    unet, te, vae, _ = _tiny_parts()
    cfg = RunConfig().train
    cfg.trainable = "lora"
    torch.manual_seed(0)
    apply_trainable(unet, te, vae, TrainableSpec.from_config(cfg))
    with torch.no_grad():  # make the adapters matter
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    x, t, h = torch.randn(1, 4, 16, 16), torch.tensor([10]), torch.randn(1, 77, 32)
    with torch.no_grad():
        before = unet(x, t, h).sample
        assert merge_lora(unet) > 0
        after = unet(x, t, h).sample
    assert not any("lora_" in n for n, _ in unet.named_parameters())
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)


def test_lora_targets_matching_nothing_fail():
    unet, te, vae, _ = _tiny_parts()
    cfg = RunConfig().train
    cfg.trainable = "lora"
    cfg.lora.targets = ["no_such_module"]
    with pytest.raises(ValueError):  # peft finds no target module, or nothing is left to train
        apply_trainable(unet, te, vae, TrainableSpec.from_config(cfg))
