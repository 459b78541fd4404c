"""Optimizer parameter groups and the LR schedule (linear warm-up, then linear decay)."""
from __future__ import annotations

import math

import torch
from torch import nn

from mambadiff.ssm.mamba import param_groups  # the layers know which of their parameters skip decay


def warmup_linear_decay(warmup_steps: int, total_steps: int, final_ratio: float = 0.0):
    """LambdaLR factor: linear warm-up to 1 over ``warmup_steps``, then linear decay to ``final_ratio``."""
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if total_steps <= warmup_steps:
            return 1.0
        frac = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - (1.0 - final_ratio) * frac
    return factor


def cosine_decay(warmup_steps: int, total_steps: int, final_ratio: float = 0.0):
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        frac = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
    return factor


def clock_decay(warmup_steps: int, shape: str, budget_fraction):
    """LambdaLR factor: linear warm-up over ``warmup_steps``, then ``shape`` (linear | cosine) decay to
    0 over a budget of time rather than steps: ``budget_fraction()`` is the share of it used so far
    (read at every scheduler step; past 1 the factor stays 0)."""
    if shape not in ("linear", "cosine"):
        raise ValueError(f"clock_decay: shape must be linear or cosine, got {shape!r}")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        frac = min(1.0, max(0.0, float(budget_fraction())))
        return 1.0 - frac if shape == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
    return factor


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8):
    """AdamW over ``param_groups``: groups flagged ``_lr_scale`` (S4D kernel) get ``lr * lr_scale``."""
    groups = param_groups(model, weight_decay, lr=lr)
    for g in groups:
        g.pop("param_names", None)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
