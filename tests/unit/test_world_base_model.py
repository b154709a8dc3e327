"""Pieces of the base-model build that are cheap to check without training it."""

import numpy as np
import torch

from dft.world.base_model import BaseModelConfig, make_encoder_deterministic, make_vae, to_tensor, to_uint8
from dft.world.render import Person, render_batch


def test_vae_shape_and_deterministic_encoder():
    cfg = BaseModelConfig()
    vae = make_vae(cfg)
    imgs, _ = render_batch([Person("dark-skinned", "woman", "nurse")] * 2, [1, 2])
    x = to_tensor(imgs)
    with torch.no_grad():
        before = vae.encode(x).latent_dist
        make_encoder_deterministic(vae)
        after = vae.encode(x).latent_dist
    assert before.mean.shape == (2, 4, 8, 8)  # the small UNet's 8x8x4 latents
    assert torch.allclose(before.mean, after.mean)  # means untouched
    assert float(after.std.max()) < 1e-6 and float(before.std.min()) > 1e-3
    assert float((after.sample() - after.mean).abs().max()) < 1e-4  # a sample is its mean


def test_pixel_round_trip_and_config_hash():
    imgs, _ = render_batch([Person("light-skinned", "man", "doctor")], [3])
    assert np.array_equal(to_uint8(to_tensor(imgs)), imgs)
    assert BaseModelConfig().hash() == BaseModelConfig().hash()
    assert BaseModelConfig(unet_steps=10).hash() != BaseModelConfig().hash()
    assert make_vae(BaseModelConfig()).state_dict()["encoder.conv_in.weight"].equal(
        make_vae(BaseModelConfig()).state_dict()["encoder.conv_in.weight"])  # fixed seed
