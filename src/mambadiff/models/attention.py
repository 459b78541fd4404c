"""Where the Transformer backbone gets its positions: absolute tables added to the input, or rotary
embeddings inside every attention layer (RoFormer; MDLM's DiT).

Glossary: b batch, l length, d model width, h heads, p head dim (d / h), f feed-forward width.

Absolute positions (``learned``, ``sinusoidal``) are added to the input at the content's scale:
learned rows start as N(0, 1), as DiffuSeq's ``nn.Embedding`` does, and the denoiser adds them before
its input LayerNorm (DiffuSeq's order). Rotary positions rotate each head's queries and keys by
angles proportional to the position, so attention scores depend on the offset between positions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

POS_ENCODINGS = ("learned", "sinusoidal", "rotary", "none")


def sinusoidal_positions(l: int, d: int, device=None) -> torch.Tensor:
    """Fixed sine/cosine position table (l, d), entries in [-1, 1]."""
    pos = torch.arange(l, device=device, dtype=torch.float32)[:, None]  # (l, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)  # (d/2,)
    table = torch.zeros(l, d, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return table


def rotate(x: torch.Tensor, base: float = 10000.0, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Rotary position embedding of ``x (b, h, l, p)`` (p even): the two halves of each head's vector
    turn by the angle ``position * base^(-2i/p)`` of their pair i. ``positions`` (l,) or (b, l) (default
    0 .. l-1): each row's own positions, as a decoder's next token needs."""
    l, p = x.shape[-2], x.shape[-1]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # angles at least in float32
    freq = base ** (-torch.arange(0, p // 2, device=x.device, dtype=dtype) * 2 / p)  # (p/2,)
    if positions is None:
        positions = torch.arange(l, device=x.device)  # (l,)
    angle = positions.to(dtype)[..., None] * freq  # (l, p/2) or (b, l, p/2)
    if angle.ndim == 3:
        angle = angle[:, None]  # (b, 1, l, p/2) shared by the heads
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)  # (.., l, p/2) each
    x1, x2 = x[..., : p // 2], x[..., p // 2:]  # (b, h, l, p/2) each
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)  # (b, h, l, p)


class RotaryEncoderLayer(nn.Module):
    """A pre-norm Transformer layer with rotary self-attention; called as ``nn.TransformerEncoderLayer``
    is (``src_mask``, ``src_key_padding_mask`` True at padding, ``is_causal``)."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"rotary attention needs an even head dim: d_model={d_model}, n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.in_proj = nn.Linear(d_model, 3 * d_model)  # d -> (q, k, v)
        self.out_proj = nn.Linear(d_model, d_model)
        self.linear1, self.linear2 = nn.Linear(d_model, ff_dim), nn.Linear(ff_dim, d_model)
        self.drop = nn.Dropout(dropout)

    def attention(self, x: torch.Tensor, pad: torch.Tensor | None, causal: bool) -> torch.Tensor:
        b, l, d = x.shape
        q, k, v = self.in_proj(x).view(b, l, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)  # (b, h, l, p)
        q, k = rotate(q), rotate(k)
        allowed = None
        if pad is not None:
            allowed = ~pad[:, None, None, :]  # (b, 1, 1, l) True where a key may be attended to
            if causal:
                allowed = allowed & torch.ones(l, l, dtype=torch.bool, device=x.device).tril()  # (b, 1, l, l)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0,
                                             is_causal=causal and allowed is None)  # (b, h, l, p)
        return self.out_proj(out.transpose(1, 2).reshape(b, l, d))  # (b, l, d)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = src + self.drop(self.attention(self.norm1(src), src_key_padding_mask, is_causal))  # (b, l, d)
        h = self.linear2(self.drop(F.gelu(self.linear1(self.norm2(x)))))  # (b, l, d)
        return x + self.drop(h)


class RotaryEncoder(nn.Module):
    """``n_layers`` rotary layers, called as ``nn.TransformerEncoder`` is."""

    def __init__(self, make_layer, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(make_layer() for _ in range(n_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, src_key_padding_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)  # (b, l, d)
        return x


def encoder_layer(d_model: int, n_heads: int, ff_dim: int, dropout: float, rotary: bool) -> nn.Module:
    """One pre-norm Transformer layer (GELU feed-forward): rotary, or torch's own with no positions."""
    if rotary:
        return RotaryEncoderLayer(d_model, n_heads, ff_dim, dropout)
    return nn.TransformerEncoderLayer(d_model, n_heads, ff_dim, dropout=dropout, activation="gelu",
                                      batch_first=True, norm_first=True)
