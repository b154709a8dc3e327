"""Flow matching (SD3, FLUX) and the weightings, checked numerically against diffusers' own functions and
direct computations; min-SNR weighting stays finite on a zero-terminal-SNR schedule. No model, no Ray."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from dft.train.flow import latent_image_ids, pack_latents, unpack_latents
from dft.train.loss import (
    flow_loss,
    flow_loss_weighting,
    flow_noisy,
    flow_target,
    min_snr_weights,
    sample_flow_timesteps,
    snr,
    timestep_density,
)


@pytest.mark.parametrize("scheme", ["logit_normal", "mode", "none", "sigma_sqrt", "cosmap"])
def test_timestep_density_is_diffusers(scheme):
    ours = timestep_density(scheme, 512, logit_mean=0.3, logit_std=1.2, mode_scale=1.29,
                            generator=torch.Generator().manual_seed(7))
    theirs = compute_density_for_timestep_sampling(scheme, 512, logit_mean=0.3, logit_std=1.2, mode_scale=1.29,
                                                   generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert ((ours >= 0) & (ours <= 1)).all()
    if scheme == "logit_normal":  # sigmoid of N(0.3, 1.2): the median is sigmoid(0.3)
        assert abs(float(ours.median()) - 1 / (1 + math.exp(-0.3))) < 0.05


@pytest.mark.parametrize("scheme", ["logit_normal", "mode", "none", "sigma_sqrt", "cosmap"])
def test_loss_weighting_is_diffusers_and_finite(scheme):
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sigmas = sched.sigmas[:1000]
    ours = flow_loss_weighting(scheme, sigmas)
    torch.testing.assert_close(ours, compute_loss_weighting_for_sd3(scheme, sigmas).float())
    assert torch.isfinite(ours).all() and (ours > 0).all()
    direct = {"sigma_sqrt": sigmas ** -2, "cosmap": 2 / (math.pi * (1 - 2 * sigmas + 2 * sigmas ** 2))}
    torch.testing.assert_close(ours, direct.get(scheme, torch.ones_like(sigmas)).float())


def test_training_grid_is_the_schedulers_and_noisy_target_are_the_straight_path():
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    u = torch.tensor([0.0, 0.25, 0.5, 0.999, 1.0])
    t, s = sample_flow_timesteps(u, sched.timesteps, sched.sigmas)
    idx = torch.tensor([0, 250, 500, 999, 999])  # floor(u N), u = 1.0 clamped to the last index
    torch.testing.assert_close(t, sched.timesteps[idx])
    torch.testing.assert_close(s, sched.sigmas[idx])
    torch.testing.assert_close(t / 1000, s)  # the grid's timesteps are sigma x N (SD3's convention)
    # shift 3: sigma' = 3 s / (1 + 2 s) of the unshifted s = (N - i) / N
    plain = (1000 - idx.float()) / 1000
    torch.testing.assert_close(s, 3 * plain / (1 + 2 * plain))
    x0, eps = torch.randn(5, 4, 8, 8), torch.randn(5, 4, 8, 8)
    noisy = flow_noisy(x0, eps, s)
    for b in range(5):
        torch.testing.assert_close(noisy[b], (1 - s[b]) * x0[b] + s[b] * eps[b])
    torch.testing.assert_close(flow_target(x0, eps), eps - x0)
    # the target is the velocity of the path: d noisy / d sigma
    ds = 1e-3
    torch.testing.assert_close((flow_noisy(x0, eps, s + ds) - noisy) / ds, eps - x0, atol=2e-3, rtol=1e-3)


def test_flow_loss_is_the_recipes_reduction():
    pred, target = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    w = torch.tensor([0.5, 1.0, 2.0])
    recipe = torch.mean((w.view(-1, 1, 1, 1) * (pred - target) ** 2).reshape(3, -1), 1).mean()
    torch.testing.assert_close(flow_loss(pred, target, w), recipe)


def test_flux_packing_and_image_ids_are_the_pipelines():
    lat = torch.randn(2, 4, 16, 12)
    packed = pack_latents(lat)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(lat, 2, 4, 16, 12))
    assert packed.shape == (2, 8 * 6, 16)
    # the pipeline unpacks from pixel sizes (vae_scale_factor 8 -> latents 16 x 12)
    torch.testing.assert_close(unpack_latents(packed, 16, 12), FluxPipeline._unpack_latents(packed, 128, 96, 8))
    torch.testing.assert_close(unpack_latents(packed, 16, 12), lat)
    torch.testing.assert_close(latent_image_ids(8, 6, "cpu", torch.float32),
                               FluxPipeline._prepare_latent_image_ids(2, 8, 6, "cpu", torch.float32))


def _zero_terminal_snr(n=1000):
    """Lin et al. 2024's rescaled schedule: alphas_cumprod[-1] == 0 exactly (diffusers' rescale_zero_terminal_snr)."""
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, n) ** 2
    return torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_stay_finite_with_zero_terminal_snr(prediction_type):
    ac = _zero_terminal_snr()
    assert float(ac[-1]) == 0.0
    t = torch.arange(1000)
    s = snr(t, ac)
    assert float(s[-1]) == 0.0
    w = min_snr_weights(t, ac, 5.0, prediction_type)
    assert torch.isfinite(w).all(), w[~torch.isfinite(w)]
    inner = t[:-1]
    if prediction_type == "epsilon":
        torch.testing.assert_close(w[inner], torch.clamp(s[inner], max=5.0) / s[inner])
        assert float(w[-1]) == 1.0  # the limit of min(SNR, gamma) / SNR as SNR -> 0 (diffusers sets 1 too)
    else:
        torch.testing.assert_close(w, torch.clamp(s, max=5.0) / (s + 1))
        assert float(w[-1]) == 0.0
