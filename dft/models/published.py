"""The real-size architectures this project fine-tunes, from their published config.json values.

Written out here (no download) so that a test can build each on the meta device (no memory, no
weights), count its parameters against the published sizes, and feed the counts to the memory
estimate of ``dft.train.memory``. Sources: the ``config.json`` files of
stabilityai/stable-diffusion-xl-base-1.0 (unet, text_encoder, text_encoder_2, vae),
stabilityai/stable-diffusion-3.5-medium (transformer, text_encoder_3, vae) and
black-forest-labs/FLUX.1-dev (transformer, text_encoder, text_encoder_2, vae).
"""

from __future__ import annotations

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
SD35_MEDIUM_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=384, qk_norm="rms_norm", dual_attention_layers=tuple(range(13)),
)
FLUX_DEV_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, feed_forward_proj="gated-gelu")
VAE_SDXL = dict(latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=1024,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
VAE_16CH = dict(VAE_SDXL, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)

# Published sizes (model cards, papers), in parameters.
PUBLISHED = {
    "sdxl_unet": 2.6e9, "sd35_medium_transformer": 2.5e9, "flux_dev_transformer": 12e9,
    "t5_xxl_encoder": 4.7e9, "clip_l": 123e6, "clip_g": 695e6,
}


def build_on_meta(name: str):
    """One real-size component, built on the meta device (shapes only; no memory, no weights)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        if name == "sdxl_unet":
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel(**SDXL_UNET)
        if name == "sd35_medium_transformer":
            from diffusers import SD3Transformer2DModel

            return SD3Transformer2DModel(**SD35_MEDIUM_TRANSFORMER)
        if name == "flux_dev_transformer":
            from diffusers import FluxTransformer2DModel

            return FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
        if name in ("clip_l", "clip_g"):
            from transformers import CLIPTextConfig, CLIPTextModelWithProjection

            return CLIPTextModelWithProjection(CLIPTextConfig(**(CLIP_L if name == "clip_l" else CLIP_G)))
        if name == "t5_xxl_encoder":
            from transformers import T5Config, T5EncoderModel

            model = T5EncoderModel(T5Config(**T5_XXL))
            # One embedding matrix, as in the checkpoint and after from_pretrained (built on meta, the
            # encoder's copy is not tied to ``shared`` and would count 131.6M twice).
            model.encoder.embed_tokens = model.shared
            return model
        if name in ("vae_sdxl", "vae_16ch"):
            from diffusers import AutoencoderKL

            return AutoencoderKL(**(VAE_SDXL if name == "vae_sdxl" else VAE_16CH))
    raise KeyError(f"no published architecture {name!r}")


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_parameters(module, targets, rank: int) -> int:
    """Parameters LoRA of ``rank`` adds on the Linear layers whose names end with one of ``targets``:
    rank x (in + out) each (peft's A and B matrices)."""
    import torch

    total = 0
    for name, child in module.named_modules():
        if isinstance(child, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            total += rank * (child.in_features + child.out_features)
    return total
