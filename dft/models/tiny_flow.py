"""Built-in tiny flow-matching pipelines: SD3 (MMDiT, CLIP-L + CLIP-G + T5) and FLUX.1 (CLIP-L + T5).

The same recipe as ``tiny.py``: every component of the real pipeline at toy width, made from config
with fixed seeds and offline tokenizers, so saving, loading, generating, training and exporting run
without downloads. The shapes keep the real pipelines' constraints: SD3 pads the two CLIP hidden
states (concatenated) to the T5 width, so T5's d_model >= CLIP-L + CLIP-G; FLUX packs 2x2 latent
patches (transformer in_channels = 4 x latent channels) and its rotary axes sum to the head width.
The FLUX model has a guidance embedding (as FLUX.1-dev), so that code path is exercised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dft.models.tiny import SpecBase


@dataclass(frozen=True)
class FlowSpec(SpecBase):
    resolution: int = 32
    vae_channels: tuple[int, ...] = (16, 32)  # 2x downsampling: 32 px -> 16x16 latents
    latent_channels: int = 4
    clip_l_dim: int = 32
    clip_g_dim: int = 48
    t5_dim: int = 96
    t5_max_length: int = 32
    heads: int = 2
    head_dim: int = 16
    layers: int = 1
    seed: int = 0


FLOW_SPECS = {"tiny": FlowSpec()}


def _clip(dim: int, vocab_size: int, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=dim, intermediate_size=dim * 2, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=dim,
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def _t5(spec: FlowSpec, vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab_size, d_model=spec.t5_dim, d_kv=16, d_ff=spec.t5_dim * 2, num_layers=2,
                   num_heads=2, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0)
    return T5EncoderModel(cfg)


def _vae(spec: FlowSpec, scaling: float, shift: float):
    from diffusers import AutoencoderKL

    n = len(spec.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * n,
                         up_block_types=["UpDecoderBlock2D"] * n, block_out_channels=list(spec.vae_channels),
                         latent_channels=spec.latent_channels, layers_per_block=1, norm_num_groups=8,
                         sample_size=spec.resolution, scaling_factor=scaling, shift_factor=shift,
                         use_quant_conv=False, use_post_quant_conv=False)


def build_tiny_flow_pipeline(kind: str, variant: str, clip_tokenizer_dir: str | Path, t5_tokenizer_dir: str | Path):
    """A freshly initialised tiny SD3 ("sd3") or FLUX ("flux") pipeline, deterministic for a spec."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTokenizer, T5Tokenizer

    spec = FLOW_SPECS[variant]
    clip_tok = CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir))
    t5_tok = T5Tokenizer.from_pretrained(str(t5_tokenizer_dir))
    state = torch.random.get_rng_state()
    try:
        if kind == "sd3":
            torch.manual_seed(spec.seed)
            vae = _vae(spec, scaling=1.5305, shift=0.0609)  # SD3's published VAE factors
            torch.manual_seed(spec.seed + 1)
            te1 = _clip(spec.clip_l_dim, len(clip_tok), projection=True)
            torch.manual_seed(spec.seed + 2)
            te2 = _clip(spec.clip_g_dim, len(clip_tok), projection=True)
            torch.manual_seed(spec.seed + 3)
            te3 = _t5(spec, len(t5_tok))
            torch.manual_seed(spec.seed + 4)
            transformer = SD3Transformer2DModel(
                sample_size=spec.latent_size, patch_size=2, in_channels=spec.latent_channels,
                out_channels=spec.latent_channels, num_layers=spec.layers, attention_head_dim=spec.head_dim,
                num_attention_heads=spec.heads, joint_attention_dim=spec.t5_dim,
                caption_projection_dim=spec.heads * spec.head_dim,
                pooled_projection_dim=spec.clip_l_dim + spec.clip_g_dim, pos_embed_max_size=spec.latent_size,
                qk_norm="rms_norm", dual_attention_layers=(0,),  # SD3.5's MMDiT-X block
            )
            scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
            return StableDiffusion3Pipeline(
                transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=te1, tokenizer=clip_tok,
                text_encoder_2=te2, tokenizer_2=CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir)),
                text_encoder_3=te3, tokenizer_3=t5_tok,
            )
        if kind == "flux":
            torch.manual_seed(spec.seed)
            vae = _vae(spec, scaling=0.3611, shift=0.1159)  # FLUX.1's published VAE factors
            torch.manual_seed(spec.seed + 1)
            te1 = _clip(spec.clip_l_dim, len(clip_tok), projection=False)
            torch.manual_seed(spec.seed + 3)
            te2 = _t5(spec, len(t5_tok))
            torch.manual_seed(spec.seed + 4)
            transformer = FluxTransformer2DModel(
                patch_size=1, in_channels=spec.latent_channels * 4, num_layers=spec.layers,
                num_single_layers=spec.layers, attention_head_dim=spec.head_dim, num_attention_heads=spec.heads,
                joint_attention_dim=spec.t5_dim, pooled_projection_dim=spec.clip_l_dim, guidance_embeds=True,
                axes_dims_rope=(spec.head_dim // 4, spec.head_dim // 4, spec.head_dim // 2),
            )
            # FLUX.1's scheduler: the shift follows the image's token count (mu), as its pipeline computes it.
            scheduler = FlowMatchEulerDiscreteScheduler(
                num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                base_image_seq_len=256, max_image_seq_len=4096,
            )
            return FluxPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=te1,
                                tokenizer=clip_tok, text_encoder_2=te2, tokenizer_2=t5_tok)
        raise ValueError(f"unknown tiny flow pipeline kind {kind!r}: expected 'sd3' or 'flux'")
    finally:
        torch.random.set_rng_state(state)
