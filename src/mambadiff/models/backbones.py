"""Backbone registry: a stack of sequence-mixing blocks chosen by name.

Glossary: b batch, l length, d model width.

Every backbone maps ``x (b, l, d)`` and a right-padded ``mask (b, l)`` (True at real tokens) to
``(b, l, d)``, and padding never changes the outputs at real positions.

    mamba, mamba2, s4d   pre-norm residual blocks x + mixer(RMSNorm(x)) (no MLP, as in Mamba), final norm;
                         bidirectional=True wraps each mixer in ``Bidirectional`` (two directions,
                         separate parameters, outputs summed)
    transformer          pre-norm ``nn.TransformerEncoderLayer`` stack with learned positions and a
                         key-padding mask (the DiffuSeq baseline; BERT-base is 12 x 768, 12 heads, ff 3072)
    lstm                 stacked (bi)LSTM over packed sequences
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from mambadiff.ssm.norm import RMSNorm

BACKBONES: dict[str, Callable[["BackboneConfig"], nn.Module]] = {}


def register_backbone(name: str):
    def deco(fn):
        BACKBONES[name] = fn
        return fn
    return deco


@dataclass
class BackboneConfig:
    name: str = "mamba"          # mamba | mamba2 | s4d | transformer | lstm
    d_model: int = 128
    n_layers: int = 6
    bidirectional: bool = False  # the diffusion denoiser and classifiers set this True
    dropout: float = 0.0
    # state-space layers
    d_state: int = 16            # Mamba-1 N (paper default 16); Mamba-2 and S4D read it too
    d_conv: int = 4
    expand: int = 2
    headdim: int = 32            # Mamba-2 head dim p
    chunk_size: int = 64         # Mamba-2 SSD chunk
    s4d_init: str = "lin"        # lin | inv
    scan_backend: str = "auto"   # selective-scan backend for Mamba-1
    # transformer
    n_heads: int = 4
    ff_dim: int = 0              # 0: 4 * d_model
    pos_encoding: str = "learned"  # learned (DiffuSeq) | sinusoidal (no parameters)
    max_len: int = 512           # longest sequence for learned positions (transformer only)

    def validate(self) -> None:
        if self.name not in BACKBONES:
            raise ValueError(f"backbone.name must be one of {sorted(BACKBONES)}, got {self.name!r}")
        if self.d_model <= 0 or self.n_layers <= 0:
            raise ValueError("backbone.d_model and backbone.n_layers must be > 0")
        if self.name == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"backbone.d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.pos_encoding not in ("learned", "sinusoidal"):
            raise ValueError(f"backbone.pos_encoding must be learned|sinusoidal, got {self.pos_encoding!r}")
        if self.name == "lstm" and self.bidirectional and self.d_model % 2:
            raise ValueError("a bidirectional LSTM backbone needs an even d_model")


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    cfg.validate()
    return BACKBONES[cfg.name](cfg)


def _check(x: torch.Tensor, mask: torch.Tensor | None, d_model: int) -> torch.Tensor:
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"x must have shape (b, l, {d_model}), got {tuple(x.shape)}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must have shape (b, l) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    return mask.bool()


class ResidualStack(nn.Module):
    """x + mixer(norm(x)) for each layer, then a final norm; padded positions are zeroed between layers."""

    def __init__(self, d_model: int, make_mixer: Callable[[], nn.Module], n_layers: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        # eps=None: torch.nn.RMSNorm's default (finfo eps), fused on CPU
        self.norms = nn.ModuleList(RMSNorm(d_model, eps=None) for _ in range(n_layers))
        self.mixers = nn.ModuleList(make_mixer() for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)
        self.final_norm = RMSNorm(d_model, eps=None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check(x, mask, self.d_model)  # (b, l)
        # No padding: drop the mask, so neither this loop nor the mixers spend a masking multiply
        # (a full pass over (b, l, d) each, twice with the backward).
        mask = None if bool(mask.all()) else mask
        keep = None if mask is None else mask[..., None].to(x.dtype)  # (b, l, 1)
        if keep is not None:
            x = x * keep
        for norm, mixer in zip(self.norms, self.mixers):
            h = self.drop(mixer(norm(x), mask=mask))  # (b, l, d)
            x = x + (h if keep is None else h * keep)  # (b, l, d)
        return self.final_norm(x)


def _ssm_stack(cfg: BackboneConfig, make_layer: Callable[[], nn.Module]) -> nn.Module:
    if cfg.bidirectional:
        from mambadiff.ssm.bidirectional import Bidirectional
        make = lambda: Bidirectional(make_layer)  # noqa: E731
    else:
        make = make_layer
    return ResidualStack(cfg.d_model, make, cfg.n_layers, cfg.dropout)


@register_backbone("mamba")
def _mamba(cfg: BackboneConfig) -> nn.Module:
    from mambadiff.ssm.mamba import Mamba, MambaConfig
    layer_cfg = MambaConfig(d_model=cfg.d_model, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                            scan_backend=cfg.scan_backend)
    return _ssm_stack(cfg, lambda: Mamba(layer_cfg))


@register_backbone("mamba2")
def _mamba2(cfg: BackboneConfig) -> nn.Module:
    from mambadiff.ssm.mamba2 import Mamba2, Mamba2Config
    layer_cfg = Mamba2Config(d_model=cfg.d_model, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                             headdim=cfg.headdim, chunk_size=cfg.chunk_size)
    return _ssm_stack(cfg, lambda: Mamba2(layer_cfg))


@register_backbone("s4d")
def _s4d(cfg: BackboneConfig) -> nn.Module:
    from mambadiff.ssm.s4d import S4D, S4DConfig
    layer_cfg = S4DConfig(d_model=cfg.d_model, d_state=cfg.d_state, init=cfg.s4d_init)
    return _ssm_stack(cfg, lambda: S4D(layer_cfg))


def sinusoidal_positions(l: int, d: int, device=None) -> torch.Tensor:
    """Fixed sine/cosine position table (l, d)."""
    pos = torch.arange(l, device=device, dtype=torch.float32)[:, None]  # (l, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)  # (d/2,)
    table = torch.zeros(l, d, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return table


class TransformerBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.d_model = cfg.d_model
        self.max_len = cfg.max_len
        if cfg.pos_encoding == "learned":
            self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * 0.02)  # (max_len, d)
        else:
            self.pos = None
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.ff_dim or 4 * cfg.d_model,
                                           dropout=cfg.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.causal = not cfg.bidirectional

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check(x, mask, self.d_model)  # (b, l)
        l = x.shape[1]
        if self.pos is not None:
            if l > self.max_len:
                raise ValueError(f"sequence length {l} exceeds the transformer's max_len {self.max_len}")
            x = x + self.pos[:l]  # (b, l, d)
        else:
            x = x + sinusoidal_positions(l, self.d_model, x.device).to(x.dtype)  # (b, l, d)
        attn_mask = torch.ones(l, l, dtype=torch.bool, device=x.device).triu(1) if self.causal else None  # (l, l)
        pad_mask = None if bool(mask.all()) else ~mask  # (b, l) True at padding; None keeps the fast path
        h = self.encoder(x, mask=attn_mask, src_key_padding_mask=pad_mask, is_causal=self.causal)  # (b, l, d)
        return self.final_norm(h)


@register_backbone("transformer")
def _transformer(cfg: BackboneConfig) -> nn.Module:
    return TransformerBackbone(cfg)


class LSTMBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.d_model = cfg.d_model
        hidden = cfg.d_model // 2 if cfg.bidirectional else cfg.d_model
        self.lstm = nn.LSTM(cfg.d_model, hidden, cfg.n_layers, batch_first=True,
                            bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check(x, mask, self.d_model)  # (b, l)
        lengths = mask.sum(1).clamp(min=1).cpu()  # (b,)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (b, l, d)
        return h


@register_backbone("lstm")
def _lstm(cfg: BackboneConfig) -> nn.Module:
    return LSTMBackbone(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
