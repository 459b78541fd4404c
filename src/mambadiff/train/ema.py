"""Exponential moving average of model weights (sampling and evaluation use the EMA copy).

The decay warms up as ``min(decay, (1 + step) / (10 + step))``: without it a short run's EMA is still
mostly the random initialisation (decay 0.9999 averages over ~10k steps).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                       for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (0-based)."""
        decay = self.decay_at(step)
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.mul_(decay).add_(v.detach().float(), alpha=1.0 - decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)

    def copy_model(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` carrying the EMA weights."""
        ema_model = copy.deepcopy(model)
        ema_model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
        return ema_model
