"""Built-in tiny text-to-image pipelines, made from config with a fixed seed and an offline tokenizer.

They exist so that every code path (save, load, generate, train, export) runs without downloads.
``variant="tiny"`` is the smallest that still has every component (tests); ``variant="small"`` has a
VAE that downsamples 4x and a larger UNet, enough to learn the demo world's images.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class SpecBase:
    """What every built-in spec derives from its fields (a dataclass with resolution and vae_channels)."""

    @property
    def latent_size(self) -> int:
        return self.resolution // (2 ** (len(self.vae_channels) - 1))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TinySpec(SpecBase):
    resolution: int
    vae_channels: tuple[int, ...]
    latent_channels: int
    unet_channels: tuple[int, ...]
    text_dim: int
    text_layers: int
    seed: int = 0


SPECS = {
    "tiny": TinySpec(resolution=32, vae_channels=(16, 32), latent_channels=4, unet_channels=(16, 32), text_dim=32, text_layers=2),
    "small": TinySpec(resolution=32, vae_channels=(32, 64, 64), latent_channels=4, unet_channels=(32, 64), text_dim=64,
                      text_layers=2),
}


def vocabulary_texts() -> list[str]:
    """Every word the shipped vocabularies use: the tiny tokenizer gives each one a single token."""
    texts: list[str] = []
    root = Path(__file__).resolve().parent.parent / "prompts"
    for folder in sorted(root.glob("vocab*")):
        for f in sorted(folder.glob("*.txt")):
            texts += [line for line in f.read_text().splitlines() if not line.startswith("#")]
    return texts


def _text_encoder(spec: TinySpec, vocab_size: int, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=spec.text_dim,
        intermediate_size=spec.text_dim * 2,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=spec.text_dim,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def _vae(spec: TinySpec):
    from diffusers import AutoencoderKL

    n = len(spec.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=list(spec.vae_channels),
        latent_channels=spec.latent_channels,
        layers_per_block=1,
        norm_num_groups=min(16, spec.vae_channels[0]),
        sample_size=spec.resolution,
    )


def _unet(spec: TinySpec, cross_dim: int, sdxl: bool):
    from diffusers import UNet2DConditionModel

    n = len(spec.unet_channels)
    kwargs = dict(
        sample_size=spec.latent_size,
        in_channels=spec.latent_channels,
        out_channels=spec.latent_channels,
        block_out_channels=spec.unet_channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=min(16, spec.unet_channels[0]),
    )
    if sdxl:
        kwargs.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            # text_embeds (pooled, text_dim) + 6 time ids of addition_time_embed_dim each
            projection_class_embeddings_input_dim=spec.text_dim + 6 * 8,
            transformer_layers_per_block=1,
        )
    return UNet2DConditionModel(**kwargs)


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        num_train_timesteps=1000,
        steps_offset=1,
    )


def build_tiny_pipeline(kind: str, variant: str, tokenizer_dir: str | Path):
    """A freshly initialised tiny SD ("sd") or SDXL ("sdxl") pipeline, deterministic for a spec."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    spec = SPECS[variant]
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    vocab_size = len(tokenizer)
    import torch

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(spec.seed)
        vae = _vae(spec)
        torch.manual_seed(spec.seed + 1)
        text_encoder = _text_encoder(spec, vocab_size)
        if kind == "sd":
            torch.manual_seed(spec.seed + 2)
            unet = _unet(spec, spec.text_dim, sdxl=False)
            pipe = StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                scheduler=_scheduler(),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        elif kind == "sdxl":
            torch.manual_seed(spec.seed + 3)
            text_encoder_2 = _text_encoder(spec, vocab_size, projection=True)
            torch.manual_seed(spec.seed + 2)
            unet = _unet(spec, spec.text_dim * 2, sdxl=True)
            pipe = StableDiffusionXLPipeline(
                vae=vae,
                text_encoder=text_encoder,
                text_encoder_2=text_encoder_2,
                tokenizer=tokenizer,
                tokenizer_2=CLIPTokenizer.from_pretrained(str(tokenizer_dir)),
                unet=unet,
                scheduler=_scheduler(),
                force_zeros_for_empty_prompt=False,
            )
        else:
            raise ValueError(f"unknown tiny pipeline kind {kind!r}: expected 'sd' or 'sdxl'")
    finally:
        torch.random.set_rng_state(gen_state)
    # diffusers derives vae_scale_factor from the VAE; make the default resolution the spec's.
    return pipe
