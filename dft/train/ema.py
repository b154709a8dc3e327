"""Exponential moving average of the trained weights, kept in fp32 beside the model (pure torch)."""

from __future__ import annotations

from typing import Iterable

import torch


class EMA:
    """shadow = decay * shadow + (1 - decay) * param, for the named trainable parameters.

    ``warmup`` uses decay_t = min(decay, (1 + t) / (10 + t)) so that early, random weights are
    forgotten quickly (the schedule diffusers' EMAModel uses by default)."""

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], decay: float, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.step_count = 0
        self.shadow = {n: p.detach().float().clone() for n, p in named_params}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.step_count) / (10 + self.step_count))

    @torch.no_grad()
    def update(self, named_params: Iterable[tuple[str, torch.nn.Parameter]]) -> None:
        d = self.current_decay()
        for name, p in named_params:
            s = self.shadow[name]
            s.mul_(d).add_(p.detach().to(s.device, torch.float32), alpha=1 - d)
        self.step_count += 1

    @torch.no_grad()
    def copy_to(self, named_params: Iterable[tuple[str, torch.nn.Parameter]]) -> None:
        for name, p in named_params:
            p.data.copy_(self.shadow[name].to(p.device, p.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "step_count": self.step_count, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        self.decay, self.warmup, self.step_count = state["decay"], state["warmup"], state["step_count"]
        for k, v in state["shadow"].items():
            if k in self.shadow:
                self.shadow[k].copy_(v)
