"""Sequence classifier: token embedding -> backbone -> masked mean pooling -> linear head.

Glossary: b batch, l length, d model width, c classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .backbones import BackboneConfig, build_backbone, count_parameters


@dataclass
class ClassifierConfig:
    vocab_size: int = 0
    num_classes: int = 2
    dropout: float = 0.1
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(n_layers=2))

    def validate(self) -> None:
        if self.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (> 0)")
        if self.num_classes < 2:
            raise ValueError("model.num_classes must be >= 2")
        self.backbone.validate()


class SequenceClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.backbone.d_model
        self.embedding = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.backbone = build_backbone(cfg.backbone)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(d, cfg.num_classes)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (b, l), got {tuple(input_ids.shape)}")
        if mask is None:
            mask = torch.ones_like(input_ids, dtype=torch.bool)
        h = self.backbone(self.embedding(input_ids), mask)  # (b, l, d)
        m = mask[..., None].to(h.dtype)  # (b, l, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (b, d) masked mean
        return self.head(self.drop(pooled))  # (b, c)

    def parameter_report(self) -> dict[str, int]:
        return {"embedding": count_parameters(self.embedding), "backbone": count_parameters(self.backbone),
                "total": count_parameters(self)}
