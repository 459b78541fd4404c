"""Backbone registry: a stack of sequence-mixing blocks chosen by name.

Glossary: b batch, l length, d model width.

Every backbone maps ``x (b, l, d)`` and a right-padded ``mask (b, l)`` (True at real tokens) to
``(b, l, d)``, and padding never changes the outputs at real positions.

    mamba, mamba2, s4d,  pre-norm residual blocks x + mixer(RMSNorm(x)) (no MLP, as in Mamba), final norm;
    s4, h3               each mixer built from the config section of its kind (``backbone.mamba2.headdim``,
                         ``backbone.s4.l_max``, ...: ``mambadiff.models.layer_options``);
                         bidirectional=True wraps each mixer in ``Bidirectional`` (two directions,
                         separate parameters, outputs summed). Two options, as mamba_ssm's
                         ``d_intermediate`` and ``attn_layer_idx``: ``mlp_dim > 0`` adds a gated MLP
                         block x + MLP(RMSNorm(x)) after each mixer; ``attn_layers`` makes those layers
                         Transformer layers (self-attention + FFN), a hybrid in the manner of Jamba and
                         Mamba-2-Hybrid (no position encoding: the SSM layers carry order);
                         ``norm_eps`` sets the RMSNorms' eps (default: the dtype's machine epsilon)
    transformer          pre-norm ``nn.TransformerEncoderLayer`` stack with learned positions and a
                         key-padding mask (the DiffuSeq baseline; BERT-base is 12 x 768, 12 heads, ff 3072)
    lstm                 stacked (bi)LSTM over packed sequences
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mambadiff.ssm.norm import RMSNorm

from .attention import POS_ENCODINGS, RotaryEncoder, encoder_layer, sinusoidal_positions
from .layer_options import (LAYER_KINDS, H3Options, Mamba2Options, MambaOptions, S4DOptions, S4Options,
                            move_flat_options)

BACKBONES: dict[str, Callable[["BackboneConfig"], nn.Module]] = {}


def register_backbone(name: str):
    def deco(fn):
        BACKBONES[name] = fn
        return fn
    return deco


@dataclass
class BackboneConfig:
    """A backbone: its name, the stack's shape, and the options of each layer kind.

    The stack named ``name`` reads its own section (``mamba``, ``mamba2``, ``s4d``, ``s4``, ``h3``:
    every field of the layer's config except d_model, see ``mambadiff.models.layer_options``); the
    other sections are kept, unused, so that switching ``name`` (parameter matching, benchmarks)
    switches to that kind's options.
    """

    name: str = "mamba"          # mamba | mamba2 | s4d | s4 | h3 | transformer | lstm
    d_model: int = 128
    n_layers: int = 6
    bidirectional: bool = False  # the diffusion denoiser and classifiers set this True
    dropout: float = 0.0
    # state-space stacks
    mlp_dim: int = 0             # gated MLP width after each mixer (0: none, as in Mamba)
    attn_layers: list[int] = field(default_factory=list)  # layer indices that are
    #                              Transformer layers (n_heads, ff_dim) instead of SSM mixers (a hybrid)
    norm_eps: float | None = None  # eps of the stack's RMSNorms (None: the dtype's machine epsilon,
    #                              torch.nn.RMSNorm's default); Hugging Face Mamba checkpoints use 1e-5
    # transformer (and the attention layers of a hybrid: n_heads, ff_dim)
    n_heads: int = 4
    ff_dim: int = 0              # 0: 4 * d_model
    # transformer: learned (DiffuSeq: N(0, 1) rows added before the denoiser's input LayerNorm) |
    # sinusoidal (no parameters) | rotary (in every attention layer, MDLM's DiT) | none. State-space
    # stacks carry order themselves; with rotary, a hybrid's attention layers rotate too
    pos_encoding: str = "learned"
    max_len: int = 512           # longest sequence of the transformer's learned positions
    # the layers of each state-space kind (S4's kernel length is s4.l_max)
    mamba: MambaOptions = field(default_factory=MambaOptions)
    mamba2: Mamba2Options = field(default_factory=Mamba2Options)
    s4d: S4DOptions = field(default_factory=S4DOptions)
    s4: S4Options = field(default_factory=S4Options)
    h3: H3Options = field(default_factory=H3Options)

    @classmethod
    def upgrade_saved(cls, data: dict) -> dict:
        """A saved config of the flat layout (``d_state``, ``headdim``, ``h3_head_dim``, ... beside
        ``name``; S4's kernel length in ``max_len``) in the sectioned one (``config.upgrade_saved``)."""
        return move_flat_options(data)

    @property
    def layer_options(self):
        """The options section of ``name``'s layers; None for the transformer and the LSTM."""
        return getattr(self, self.name) if self.name in LAYER_KINDS else None

    def layer_config(self):
        """The config of each of the stack's layers (e.g. a ``Mamba2Config``): the backbone's d_model and
        its section's options. ValueError (naming the section) for a bad option or a non-SSM backbone."""
        if self.name not in LAYER_KINDS:
            raise ValueError(f"backbone {self.name!r} has no state-space layers (one of {sorted(LAYER_KINDS)})")
        try:
            return LAYER_KINDS[self.name].build_config(self.d_model, self.layer_options)
        except (TypeError, ValueError) as e:
            raise ValueError(f"backbone.{self.name}: {e}") from None

    def with_layer(self, **options) -> "BackboneConfig":
        """A copy whose ``name`` section has ``options`` set, e.g. ``cfg.with_layer(d_state=8)``."""
        section = self.layer_options
        if section is None:
            raise ValueError(f"backbone {self.name!r} has no layer options (one of {sorted(LAYER_KINDS)})")
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(section)})
        if unknown:
            raise ValueError(f"backbone.{self.name} has no option(s) {unknown}; its options: "
                             f"{[f.name for f in dataclasses.fields(section)]}")
        return dataclasses.replace(self, **{self.name: dataclasses.replace(section, **options)})

    def cover_length(self, length: int) -> "BackboneConfig":
        """A copy whose length-bound settings cover sequences of ``length`` tokens: the transformer's
        learned positions (``max_len``) and S4's kernel (``s4.l_max``); any other backbone as it is."""
        if self.name == "transformer" and self.pos_encoding == "learned" and self.max_len < length:
            return dataclasses.replace(self, max_len=length)
        if self.name == "s4" and self.s4.l_max < length:
            return self.with_layer(l_max=length)
        return self

    def validate(self) -> None:
        if self.name not in BACKBONES:
            raise ValueError(f"backbone.name must be one of {sorted(BACKBONES)}, got {self.name!r}")
        if self.d_model <= 0 or self.n_layers <= 0:
            raise ValueError("backbone.d_model and backbone.n_layers must be > 0")
        if self.name == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"backbone.d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"backbone.pos_encoding must be {'|'.join(POS_ENCODINGS)}, got {self.pos_encoding!r}")
        if self.name in LAYER_KINDS:
            self.layer_config()  # the layer config checks its options
        if self.name == "lstm" and self.bidirectional and self.d_model % 2:
            raise ValueError("a bidirectional LSTM backbone needs an even d_model")
        if self.mlp_dim < 0:
            raise ValueError(f"backbone.mlp_dim must be >= 0, got {self.mlp_dim}")
        if self.norm_eps is not None and not self.norm_eps > 0:
            raise ValueError(f"backbone.norm_eps must be > 0 or null, got {self.norm_eps}")
        if (self.mlp_dim or self.attn_layers or self.norm_eps is not None) and self.name not in SSM_BACKBONES:
            raise ValueError(f"backbone.mlp_dim, attn_layers and norm_eps apply to {sorted(SSM_BACKBONES)} "
                             f"stacks, not {self.name!r}")
        if self.attn_layers:
            bad = [i for i in self.attn_layers if not 0 <= i < self.n_layers]
            if bad or len(set(self.attn_layers)) != len(self.attn_layers):
                raise ValueError(f"backbone.attn_layers must be distinct layer indices in [0, n_layers="
                                 f"{self.n_layers}), got {list(self.attn_layers)}")
            if self.d_model % self.n_heads:
                raise ValueError(f"backbone.d_model={self.d_model} must be divisible by n_heads={self.n_heads}")


SSM_BACKBONES = tuple(LAYER_KINDS)  # mamba, mamba2, s4d, s4, h3


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


class GatedMLP(nn.Module):
    """Gated feed-forward block (SwiGLU): x (.., d) -> fc2(fc1_u(x) * silu(fc1_g(x))) (.., d), hidden width m."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, 2 * hidden, bias=False)  # d -> (u, g)
        self.fc2 = nn.Linear(hidden, d_model, bias=False)  # m -> d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, g = self.fc1(x).chunk(2, dim=-1)  # (.., m), (.., m)
        return self.fc2(u * F.silu(g))  # (.., d)


class ResidualStack(nn.Module):
    """x + mixer(norm(x)) for each layer (then x + mlp(mlp_norm(x)) when mlp_dim > 0), then a final
    norm; padded positions are zeroed between layers.

    Layers listed in ``attn_layers`` are whole pre-norm Transformer layers built by ``make_attention``
    (their own residuals, norms and FFN); their ``norms`` entry is the identity and they get no MLP.
    """

    def __init__(self, d_model: int, make_mixer: Callable[[], nn.Module], n_layers: int, dropout: float,
                 mlp_dim: int = 0, make_attention: Callable[[], nn.Module] | None = None,
                 attn_layers: tuple[int, ...] | list[int] = (), causal: bool = False,
                 norm_eps: float | None = None):
        super().__init__()
        self.d_model = d_model
        self.attn_layers = frozenset(attn_layers)
        if self.attn_layers and make_attention is None:
            raise ValueError("attn_layers needs make_attention")
        self.causal = causal
        # norm_eps=None: torch.nn.RMSNorm's default (finfo eps), fused on CPU; checkpoints trained
        # elsewhere (Hugging Face Mamba: 1e-5) need their own eps for the same outputs
        self.norms = nn.ModuleList(nn.Identity() if i in self.attn_layers else RMSNorm(d_model, eps=norm_eps)
                                   for i in range(n_layers))
        self.mixers = nn.ModuleList(make_attention() if i in self.attn_layers else make_mixer()
                                    for i in range(n_layers))
        if mlp_dim > 0:
            ssm = [i not in self.attn_layers for i in range(n_layers)]
            self.mlp_norms = nn.ModuleList(RMSNorm(d_model, eps=norm_eps) if s else nn.Identity() for s in ssm)
            self.mlps = nn.ModuleList(GatedMLP(d_model, mlp_dim) if s else nn.Identity() for s in ssm)
        else:
            self.mlp_norms = self.mlps = None
        self.drop = nn.Dropout(dropout)
        self.final_norm = RMSNorm(d_model, eps=norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check(x, mask, self.d_model)  # (b, l)
        # No padding: drop the mask, so neither this loop nor the mixers spend a masking multiply
        # (a full pass over (b, l, d) each, twice with the backward).
        mask = None if bool(mask.all()) else mask
        keep = None if mask is None else mask[..., None].to(x.dtype)  # (b, l, 1)
        if keep is not None:
            x = x * keep
        if self.attn_layers:  # built once for all attention layers
            attn_mask = _causal_mask(x.shape[1], x.device) if self.causal else None  # (l, l)
            pad_mask = None if mask is None else ~mask  # (b, l) True at padding
        for i, (norm, mixer) in enumerate(zip(self.norms, self.mixers)):
            if i in self.attn_layers:
                x = mixer(x, src_mask=attn_mask, is_causal=self.causal, src_key_padding_mask=pad_mask)  # (b, l, d)
                if keep is not None:
                    x = x * keep
                continue
            h = self.drop(mixer(norm(x), mask=mask))  # (b, l, d)
            x = x + (h if keep is None else h * keep)  # (b, l, d)
            if self.mlps is not None:
                h = self.drop(self.mlps[i](self.mlp_norms[i](x)))  # (b, l, d)
                x = x + (h if keep is None else h * keep)  # (b, l, d)
        return self.final_norm(x)


def _causal_mask(l: int, device) -> torch.Tensor:
    """(l, l) bool attention mask, True above the diagonal: position i does not attend to j > i."""
    return torch.ones(l, l, dtype=torch.bool, device=device).triu(1)


def _transformer_layer(cfg: BackboneConfig) -> nn.Module:
    """One pre-norm Transformer encoder layer, as the transformer backbone and the hybrids stack them."""
    return encoder_layer(cfg.d_model, cfg.n_heads, cfg.ff_dim or 4 * cfg.d_model, cfg.dropout,
                         rotary=cfg.pos_encoding == "rotary")


def _ssm_stack(cfg: BackboneConfig, make_layer: Callable[[], nn.Module]) -> nn.Module:
    if cfg.bidirectional:
        from mambadiff.ssm.bidirectional import Bidirectional
        make = lambda: Bidirectional(make_layer)  # noqa: E731
    else:
        make = make_layer
    return ResidualStack(cfg.d_model, make, cfg.n_layers, cfg.dropout, mlp_dim=cfg.mlp_dim,
                         make_attention=lambda: _transformer_layer(cfg), attn_layers=cfg.attn_layers,
                         causal=not cfg.bidirectional, norm_eps=cfg.norm_eps)


def _ssm_backbone(cfg: BackboneConfig) -> nn.Module:
    """The residual stack of ``cfg.name``'s layers, each built from ``cfg.layer_config()``."""
    layer_cfg = cfg.layer_config()
    layer = LAYER_KINDS[cfg.name].layer
    return _ssm_stack(cfg, lambda: layer(layer_cfg))


for _name in SSM_BACKBONES:
    register_backbone(_name)(_ssm_backbone)


class TransformerBackbone(nn.Module):
    """Pre-norm Transformer layers, then a final LayerNorm. ``add_positions`` puts the absolute
    positions on an input (learned N(0, 1) rows, or the sinusoidal table; identity for rotary and
    none), ``encode`` runs the layers; ``forward`` is both. The denoiser calls them apart, so that its
    input LayerNorm sees content and positions summed, as DiffuSeq's does."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.d_model = cfg.d_model
        self.max_len = cfg.max_len
        self.pos_encoding = cfg.pos_encoding
        if cfg.pos_encoding == "learned":
            self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model))  # (max_len, d) unit scale, as the content
        else:
            self.pos = None
        if cfg.pos_encoding == "rotary":
            self.encoder = RotaryEncoder(lambda: _transformer_layer(cfg), cfg.n_layers)
        else:
            self.encoder = nn.TransformerEncoder(_transformer_layer(cfg), cfg.n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.causal = not cfg.bidirectional

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        """``x (b, l, d)`` plus the absolute positions (unchanged for rotary and none)."""
        l = x.shape[1]
        if self.pos is not None:
            if l > self.max_len:
                raise ValueError(f"sequence length {l} exceeds the transformer's max_len {self.max_len}")
            return x + self.pos[:l]  # (b, l, d)
        if self.pos_encoding == "sinusoidal":
            return x + sinusoidal_positions(l, self.d_model, x.device).to(x.dtype)  # (b, l, d)
        return x

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The layers and the final norm over ``x (b, l, d)`` (positions already added)."""
        mask = _check(x, mask, self.d_model)  # (b, l)
        l = x.shape[1]
        attn_mask = _causal_mask(l, x.device) if self.causal else None  # (l, l)
        pad_mask = None if bool(mask.all()) else ~mask  # (b, l) True at padding; None keeps the fast path
        h = self.encoder(x, mask=attn_mask, src_key_padding_mask=pad_mask, is_causal=self.causal)  # (b, l, d)
        return self.final_norm(h)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(self.add_positions(x), mask)


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
