"""The ONE place that builds a DeepSpeed config from our TrainConfig.

Optimizer: torch's AdamW through DeepSpeed (``torch_adam``) everywhere, so nothing is JIT-compiled
(FusedAdam and CPU-Adam would build C++/CUDA ops on first use). Precision: bf16 on GPU by default,
fp32 on CPU (DeepSpeed's CPU accelerator has no fp16 and bf16 gains nothing without AMX)."""

from __future__ import annotations

from typing import Any

from dft.errors import InputError


def resolve_precision(precision: str, use_gpu: bool) -> str:
    if precision == "auto":
        return "bf16" if use_gpu else "fp32"
    if precision == "fp16" and not use_gpu:
        raise InputError("train.precision fp16 needs a GPU (DeepSpeed's CPU accelerator has no fp16)")
    return precision


def build_deepspeed_config(train_cfg, world_size: int, use_gpu: bool) -> dict[str, Any]:
    t = train_cfg
    precision = resolve_precision(t.precision, use_gpu)
    zero: dict[str, Any] = {"stage": t.zero_stage}
    if t.zero_stage >= 2:
        zero.update(overlap_comm=use_gpu, contiguous_gradients=True, reduce_scatter=True)
    if t.zero_stage == 3:
        # Small models would otherwise keep every parameter whole on every rank (no partitioning).
        zero.update(stage3_param_persistence_threshold=0, stage3_gather_16bit_weights_on_model_save=False)
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": t.batch_size * t.grad_accum * world_size,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": t.learning_rate,
                "weight_decay": t.weight_decay,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "torch_adam": True,
                "adam_w_mode": True,
            },
        },
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": 10**9,  # our own progress line reports
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }
    if t.lr_schedule == "cosine":
        # Linear warm-up, then cosine decay to min_lr_ratio x lr at max_steps (DeepSpeed warms up over
        # at least 2 steps). The scheduler's position is part of DeepSpeed's checkpoint.
        cfg["scheduler"] = {
            "type": "WarmupCosineLR",
            "params": {"total_num_steps": t.max_steps, "warmup_min_ratio": 0.0,
                       "warmup_num_steps": t.warmup_steps, "cos_min_ratio": t.min_lr_ratio,
                       "warmup_type": "linear"},
        }
    elif t.warmup_steps:
        # Linear warmup to the learning rate, then constant (the lr is part of DeepSpeed's checkpoint).
        cfg["scheduler"] = {
            "type": "WarmupLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": t.learning_rate,
                       "warmup_num_steps": t.warmup_steps, "warmup_type": "linear"},
        }
    if t.max_grad_norm:
        cfg["gradient_clipping"] = t.max_grad_norm
    return cfg


def disable_cpu_shm_comm() -> None:
    """Keep DeepSpeed from JIT-building its shared-memory comm op (~30 s of g++) on CPU.

    DeepSpeed builds it in ``TorchBackend.__init__`` when ``deepspeed.ops.__compatible_ops__`` says the
    op is compatible; the dict is probed lazily (itself running compiler checks). Marking the op
    incompatible up front makes DeepSpeed use plain torch.distributed collectives over gloo, which is
    what ZeRO's reduce-scatter and all-gather use anyway. Harmless on GPU (the op is CPU-only)."""
    import deepspeed.ops as ops

    compat = ops.__dict__.get("__compatible_ops__")
    if compat is None:
        ops.__dict__["__compatible_ops__"] = {"deepspeed_shm_comm": False}
    else:
        compat["deepspeed_shm_comm"] = False
