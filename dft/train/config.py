"""Config of the fine-tuning stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dft.config.base import Section


class LoraConfig(Section):
    rank: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha.")
    targets: list[str] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"], description="Module names to adapt."
    )
    text_encoder: bool = Field(False, description="Also adapt the text encoder.")
    merge_on_export: bool = Field(True, description="Merge adapters into the exported UNet.")


class FlowConfig(Section):
    """The rectified-flow objective of SD3 and FLUX (diffusers' train_dreambooth_*_sd3/flux recipes)."""

    weighting_scheme: Literal["logit_normal", "mode", "none", "sigma_sqrt", "cosmap"] = Field(
        "logit_normal",
        description="diffusers' --weighting_scheme: logit_normal/mode shape the timestep density (loss weight 1); "
        "sigma_sqrt/cosmap weight the loss (timesteps uniform); none: uniform and unweighted.",
    )
    logit_mean: float = Field(0.0, description="Mean of the logit-normal timestep density.")
    logit_std: float = Field(1.0, gt=0, description="Std of the logit-normal timestep density.")
    mode_scale: float = Field(1.29, description="Scale of the 'mode' timestep density.")
    guidance_scale: float = Field(
        3.5, ge=0.0, le=50.0, description="FLUX: the guidance value fed to its guidance embedding while training."
    )


class TrainConfig(Section):
    data_format: Literal["webdataset", "parquet"] = Field("parquet", description="Which shards to read.")
    data_uri: str | None = Field(None, description="Shards to train on (default: the run's synthetic/ or curated/).")
    use_curated: bool = Field(False, description="Read the curated set instead of all synthetic images.")
    resolution: int | None = Field(None, ge=8, multiple_of=8, description="Training resolution (default: model's).")
    caption_policy: Literal["prompt", "attribute_dropout", "neutral"] = Field(
        "attribute_dropout", description="Caption for each image."
    )
    attribute_dropout: float = Field(0.5, ge=0.0, le=1.0, description="Probability of the neutral caption.")
    empty_caption_prob: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Probability of the empty caption instead (after the caption policy): trains the unconditional "
        "model classifier-free guidance needs (diffusers' --proportion_empty_prompts).",
    )
    precompute_latents: bool = Field(False, description="Encode VAE latents in a Ray Data actor pool first.")
    precompute_text_embeddings: bool = Field(
        False,
        description="Encode captions with the frozen text encoders in a Ray Data actor pool first (the trainers then "
        "hold no text encoder: T5-XXL is 4.7B parameters). Needs frozen text encoders.",
    )
    max_sequence_length: int | None = Field(
        None, ge=1, le=512,
        description="SD3/FLUX: T5 tokens per caption (None: 256 for SD3, 512 for FLUX, capped at the tokenizer's "
        "model_max_length). Match generate.max_sequence_length.",
    )
    latent_actors: int = Field(
        1, ge=1, description="Actors encoding latents and caption embeddings (precompute_*); one GPU each on GPU."
    )
    materialize: Literal["auto", "always", "never"] = Field(
        "auto", description="Keep the decoded set in Ray's object store ('auto': when the shards total <= 512 MiB)."
    )
    shuffle_buffer: int = Field(256, ge=0, description="Rows in each worker's local shuffle buffer (0: no shuffle).")
    deterministic_data: bool = Field(
        False,
        description="Fixed block order in Ray Data (preserve_order, for the preprocessing and the ingest): with the "
        "same seed and data a run repeats exactly; may slow a streaming ingest.",
    )
    trainable: Literal["unet", "full", "lora"] = Field(
        "unet",
        description="Every weight of the denoiser (UNet or transformer: 'unet' and 'full' are the same), or LoRA adapters.",
    )
    flow: FlowConfig = Field(default_factory=FlowConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train_text_encoder: bool = Field(False, description="Also train the full text encoder (LoRA: see lora.text_encoder).")
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = Field(
        "auto", description="'auto' follows the scheduler config."
    )
    snr_gamma: float | None = Field(None, gt=0, description="Min-SNR-gamma weighting (e.g. 5.0); UNet families only.")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA decay of trained weights.")
    prior_preservation: float = Field(
        0.0, ge=0.0,
        description="Weight of a distillation term (UNet families): the denoiser's prediction on each image's full "
        "prompt is held to a frozen copy of the base model's on the same noisy latent, so neutral captions do not "
        "erode explicit-prompt fidelity. Costs one more forward of each per step and a second copy of the denoiser's "
        "weights in memory. 0: off.",
    )
    gradient_checkpointing: bool = Field(False)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps from 0 to the learning rate.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="After warm-up: constant, or cosine decay to min_lr_ratio x lr at max_steps."
    )
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Final lr / lr of the cosine schedule.")
    max_steps: int = Field(100, ge=1, description="Optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Samples per worker per micro-step.")
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    num_workers: int = Field(1, ge=1, description="Ray Train workers.")
    use_gpu: bool | Literal["auto"] = Field("auto")
    cpus_per_worker: float = Field(1.0, gt=0)
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage.")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description="'auto': bf16 on GPU, fp32 on CPU.")
    checkpoint_every: int = Field(50, ge=1, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (latest K).")
    max_failures: int = Field(3, ge=-1, description="Worker-group restarts Ray Train may do (-1: unlimited).")
    max_preemption_failures: int = Field(-1, ge=-1, description="Restarts after node preemption, counted apart (-1: unlimited).")
    preemption_check_every: int = Field(
        10, ge=1, description="Steps between checks for a draining (preempted) node; a checkpoint is saved on notice."
    )
    resize_policy: Literal["fail", "reset_optimizer"] = Field(
        "fail",
        description="Resuming a ZeRO checkpoint on another worker count: fail, or load the weights and restart the optimizer.",
    )
    log_every: int = Field(10, ge=1)
    mlflow_tracking_uri: str | None = Field(None)
    seed: int = Field(0, ge=0)
    fault_inject_step: int | None = Field(None, ge=1, description="Test switch: a worker raises once at this step.")

    @model_validator(mode="after")
    def _check(self):
        if self.precision == "fp16" and self.use_gpu is False:
            raise ValueError("train.precision fp16 needs a GPU; got use_gpu=False")
        if self.ema_decay is not None and self.zero_stage == 3:
            raise ValueError("train.ema_decay needs train.zero_stage <= 2 (ZeRO-3 partitions the weights EMA averages)")
        if self.precompute_text_embeddings and self.trains_text_encoder:
            raise ValueError(
                "train.precompute_text_embeddings needs frozen text encoders; got train_text_encoder="
                f"{self.train_text_encoder}, lora.text_encoder={self.lora.text_encoder} (trainable={self.trainable!r})"
            )
        return self

    @property
    def trains_text_encoder(self) -> bool:
        return self.train_text_encoder or (self.trainable == "lora" and self.lora.text_encoder)

    def family_problems(self, family) -> list[str]:
        """Settings that do not apply to a model family (dft.models.families.Family), each naming the field."""
        problems = []
        if family.flow_matching:
            if self.snr_gamma is not None:
                problems.append(f"train.snr_gamma: min-SNR weighting is for DDPM (UNet) families, not the flow matching "
                                f"of {family.name}; use train.flow.weighting_scheme; got {self.snr_gamma}")
            if self.prior_preservation > 0:
                problems.append(f"train.prior_preservation: the distillation term is built for DDPM (UNet) families, "
                                f"not the flow matching of {family.name}; got {self.prior_preservation}")
            if self.prediction_type != "auto":
                problems.append(f"train.prediction_type: {family.name} regresses the flow velocity (noise - x0); "
                                f"leave it 'auto'; got {self.prediction_type!r}")
        elif self.max_sequence_length is not None:
            problems.append(f"train.max_sequence_length: applies to the T5 encoder of sd3/flux, not {family.name}; "
                            f"got {self.max_sequence_length}")
        if family.name != "sd" and self.trains_text_encoder:
            problems.append(f"train.train_text_encoder / train.lora.text_encoder: text-encoder training is supported for "
                            f"sd only (diffusers' {family.name} recipes train the denoiser); got "
                            f"train_text_encoder={self.train_text_encoder}, lora.text_encoder={self.lora.text_encoder}")
        return problems
