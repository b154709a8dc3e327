import math

import pytest
import torch

from dft.train.loss import add_noise, diffusion_loss, min_snr_weights, prediction_target, snr


def _schedule(n=1000):
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, n) ** 2
    return torch.cumprod(1 - betas, 0)


def test_epsilon_target_is_the_noise():
    ac = _schedule()
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 500, 999])
    assert torch.equal(prediction_target(x0, eps, t, ac, "epsilon"), eps)


def test_v_target_matches_definition_and_recovers_x0():
    ac = _schedule()
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    v = prediction_target(x0, eps, t, ac, "v_prediction")
    a = ac[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(v, a.sqrt() * eps - (1 - a).sqrt() * x0)
    # x0 = sqrt(a) x_t - sqrt(1-a) v  (the identity samplers use)
    xt = add_noise(x0, eps, t, ac)
    torch.testing.assert_close(a.sqrt() * xt - (1 - a).sqrt() * v, x0, atol=1e-5, rtol=1e-5)


def test_min_snr_weights():
    ac = _schedule()
    t = torch.tensor([0, 300, 999])
    s = snr(t, ac)
    w_eps = min_snr_weights(t, ac, 5.0, "epsilon")
    w_v = min_snr_weights(t, ac, 5.0, "v_prediction")
    torch.testing.assert_close(w_eps, torch.clamp(s, max=5.0) / s)
    torch.testing.assert_close(w_v, torch.clamp(s, max=5.0) / (s + 1))
    # low noise (high SNR) is down-weighted, high noise (SNR < gamma) keeps weight 1 for epsilon
    assert w_eps[0] < 0.01 and math.isclose(float(w_eps[2]), 1.0, rel_tol=1e-6)


def test_diffusion_loss_plain_and_weighted():
    ac = _schedule()
    pred, target = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    t = torch.tensor([0, 999])
    assert float(diffusion_loss(pred, target, t, ac, "epsilon")) == pytest.approx(1.0)
    w = min_snr_weights(t, ac, 5.0, "epsilon")
    assert float(diffusion_loss(pred, target, t, ac, "epsilon", 5.0)) == pytest.approx(float(w.mean()))
    with pytest.raises(ValueError, match="prediction_type"):
        prediction_target(pred, target, t, ac, "sample")
