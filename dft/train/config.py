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
    latent_actors: int = Field(1, ge=1, description="Actors encoding latents (precompute_latents); one GPU each on GPU.")
    materialize: Literal["auto", "always", "never"] = Field(
        "auto", description="Keep the decoded set in Ray's object store ('auto': when the shards total <= 512 MiB)."
    )
    shuffle_buffer: int = Field(256, ge=0, description="Rows in each worker's local shuffle buffer (0: no shuffle).")
    deterministic_data: bool = Field(
        False,
        description="Fixed block order in Ray Data (preserve_order, for the preprocessing and the ingest): with the "
        "same seed and data a run repeats exactly; may slow a streaming ingest.",
    )
    trainable: Literal["unet", "lora"] = Field("unet", description="Full UNet or LoRA adapters.")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train_text_encoder: bool = Field(False, description="Also train the full text encoder (LoRA: see lora.text_encoder).")
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = Field(
        "auto", description="'auto' follows the scheduler config."
    )
    snr_gamma: float | None = Field(None, gt=0, description="Min-SNR-gamma weighting (e.g. 5.0).")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA decay of trained weights.")
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
        return self
