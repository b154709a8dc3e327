"""What fine-tuning a real-size model costs per GPU: a documented estimate, checked by tests.

Parameters come from the published architectures built on the meta device (``dft.models.published``).
Bytes per GPU, with N GPUs (Ray Train workers), ZeRO stage z, Psi_r the parameters resident in the
training module (the denoiser, plus the text encoders unless captions are precomputed, plus the VAE
unless latents are), Psi_t the trained ones (all of the denoiser, or its LoRA adapters):

- weights: b * Psi_r, divided by N at ZeRO-3 (b = 2 bytes in bf16/fp16, 4 in fp32);
- gradients: b * Psi_t, divided by N at ZeRO-2 and 3;
- optimizer states: Adam's two moments in fp32, plus an fp32 master copy under bf16/fp16:
  12 * Psi_t (8 in fp32), divided by N at ZeRO-1, 2 and 3 (the ZeRO paper's accounting, Rajbhandari 2020);
- EMA (``train.ema_decay``): an fp32 copy of the trained weights on every GPU, 4 * Psi_t;
- prior preservation (``train.prior_preservation``): the frozen base denoiser, b * Psi_denoiser on every
  GPU (added to the weights), and twice the activations (the full prompts' forward is kept for the backward);
- activations per sample, for the denoiser's transformer layers (Korthikanti et al. 2022, 16-bit
  activations, SDPA attention so no s^2 score matrices are kept): 34 s h bytes per layer of s tokens
  and width h; with gradient checkpointing each layer keeps only its 2 s h input, plus one layer
  recomputed in full. The UNet's convolution blocks add half again on top of its attention layers;
- a fixed 2 GiB for the CUDA context, NCCL buffers and allocator slack.

It is an estimate to plan with (expect +-30%), not a measurement: the GPU table of
benchmarks/RESULTS.md is where measured peaks go.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

GIB = 1024**3
OVERHEAD_BYTES = 2 * GIB
GPU_SIZES_GB = (80, 141)  # A100/H100 80 GB, H200 141 GB

# Per family: the published components, and the denoiser's transformer layers as (tokens at 1024 px
# relative to (px/16)^2, width, layers) for the activation estimate.
FAMILY_PARTS = {
    "sdxl": {"denoiser": "sdxl_unet", "text": ("clip_l", "clip_g"), "vae": "vae_sdxl"},
    "sd3": {"denoiser": "sd35_medium_transformer", "text": ("clip_l", "clip_g", "t5_xxl_encoder"), "vae": "vae_16ch"},
    "flux": {"denoiser": "flux_dev_transformer", "text": ("clip_l_text", "t5_xxl_encoder"), "vae": "vae_16ch"},
}


def _layers(family: str, resolution: int) -> list[tuple[int, int, int]]:
    """(tokens, width, count) of the denoiser's transformer layers at ``resolution`` px."""
    lat = resolution // 8
    if family == "sdxl":  # 640 wide at 1/2 of the latents (2 down + 3 up blocks x 2 layers), 1280 at 1/4 (x 10, + mid)
        return [((lat // 2) ** 2, 640, 10), ((lat // 4) ** 2, 1280, 60)]
    if family == "sd3":  # 2x2 patches + 77 CLIP + 256 T5 tokens, joint blocks
        return [((lat // 2) ** 2 + 333, 1536, 24)]
    if family == "flux":  # 2x2 packed patches + 512 T5 tokens; 19 double- and 38 single-stream blocks
        return [((lat // 2) ** 2 + 512, 3072, 57)]
    raise KeyError(family)


def activation_bytes(family: str, resolution: int, checkpointing: bool) -> float:
    """Activations kept for backward, per sample."""
    layers = _layers(family, resolution)
    if checkpointing:
        total = sum(2 * s * h * n for s, h, n in layers) + max(34 * s * h for s, h, _ in layers)
    else:
        total = sum(34 * s * h * n for s, h, n in layers)
    return total * (1.5 if family == "sdxl" else 1.0)


@functools.lru_cache(maxsize=None)
def component_parameters(name: str) -> int:
    """Parameters of a published component, counted on the meta device."""
    from dft.models.published import build_on_meta, count_parameters

    if name == "clip_l_text":  # FLUX uses CLIP-L without its projection (CLIPTextModel)
        model = build_on_meta("clip_l")
        return count_parameters(model) - model.text_projection.weight.numel()
    return count_parameters(build_on_meta(name))


@functools.lru_cache(maxsize=None)
def lora_parameters_of(denoiser: str, targets: tuple[str, ...], rank: int) -> int:
    from dft.models.published import build_on_meta, lora_parameters

    return lora_parameters(build_on_meta(denoiser), targets, rank)


@dataclass(frozen=True)
class MemoryEstimate:
    family: str
    gpus: int
    zero_stage: int
    resident_params: int
    trained_params: int
    weights: float  # bytes per GPU
    gradients: float
    optimizer: float
    activations: float
    ema: float = 0.0
    overhead: float = OVERHEAD_BYTES

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.ema + self.activations + self.overhead

    def gb(self, field: str) -> float:
        return round((self.total if field == "total" else getattr(self, field)) / 1e9, 1)

    def fits(self, gpu_gb: float) -> bool:
        return self.total <= gpu_gb * 1e9


def estimate(family: str, train_cfg, resolution: int) -> MemoryEstimate:
    """Per-GPU memory of fine-tuning the published ``family`` model with ``train_cfg`` (TrainConfig)."""
    parts = FAMILY_PARTS[family]
    denoiser = component_parameters(parts["denoiser"])
    resident = denoiser
    if not train_cfg.precompute_text_embeddings:
        resident += sum(component_parameters(n) for n in parts["text"])
    if not train_cfg.precompute_latents:
        resident += component_parameters(parts["vae"])
    if train_cfg.trainable == "lora":
        trained = lora_parameters_of(parts["denoiser"], tuple(train_cfg.lora.targets), train_cfg.lora.rank)
        resident += trained
    else:
        trained = denoiser
    n, z = train_cfg.num_workers, train_cfg.zero_stage
    b = 4 if train_cfg.precision == "fp32" else 2
    opt_per_param = 8 if train_cfg.precision == "fp32" else 12
    acts = train_cfg.batch_size * activation_bytes(family, resolution, train_cfg.gradient_checkpointing)
    teacher = 0.0
    if train_cfg.prior_preservation > 0:
        teacher = b * denoiser
        acts *= 2
    return MemoryEstimate(
        family, n, z, resident, trained,
        weights=b * resident / (n if z >= 3 else 1) + teacher,
        gradients=b * trained / (n if z >= 2 else 1),
        optimizer=opt_per_param * trained / (n if z >= 1 else 1),
        activations=acts,
        ema=4 * trained if train_cfg.ema_decay else 0.0,
    )


def markdown_row(label: str, est: MemoryEstimate, train_cfg) -> str:
    """One row of the tables in docs/train.md (the test compares the docs with this)."""
    fits = " / ".join("yes" if est.fits(g) else "no" for g in GPU_SIZES_GB)
    return (f"| {label} | {est.gpus} | {est.zero_stage} | {train_cfg.trainable} | {train_cfg.batch_size} | "
            f"{'on' if train_cfg.gradient_checkpointing else 'off'} | {est.gb('weights')} | {est.gb('gradients')} | "
            f"{est.gb('optimizer')} | {est.gb('ema')} | {est.gb('activations')} | {est.gb('total')} | {fits} |")


# The rows of docs/train.md's "what fits" table: (label, family, TrainConfig fields), all at 1024 px,
# bf16, LoRA rank 16 on the attention projections, latents and caption embeddings precomputed unless
# the label says otherwise.
DOC_ROWS = [
    (f"{fam}{suffix}", fam, dict(num_workers=g, zero_stage=z, trainable=tr, batch_size=b, gradient_checkpointing=ck, **extra))
    for fam in ("sdxl", "sd3", "flux")
    for suffix, g, z, tr, b, ck, extra in (
        ("", 1, 0, "full", 1, True, {}),
        ("", 1, 0, "lora", 1, True, {}),
        (", text encoders + VAE in the trainer", 1, 0, "lora", 1, True,
         {"precompute_latents": False, "precompute_text_embeddings": False}),
        ("", 8, 2, "full", 1, True, {}),
        ("", 8, 2, "full", 1, False, {}),
        ("", 8, 3, "full", 1, True, {}),
        ("", 8, 3, "full", 4, True, {}),
        ("", 8, 2, "lora", 4, True, {}),
    )
]


def doc_row_config(fields: dict):
    """The TrainConfig of one DOC_ROWS row."""
    from dft.train.config import TrainConfig

    base = {"precision": "bf16", "precompute_latents": True, "precompute_text_embeddings": True, "lora": {"rank": 16}}
    return TrainConfig.model_validate({**base, **fields})
