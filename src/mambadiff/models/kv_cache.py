"""The backbones' Transformer layers decoding token by token with a key-value cache.

Glossary: b batch, l length, d model width, h heads, p head dim (d / h), s cache slots (its capacity).

Both kinds of pre-norm layer the backbones stack (torch's ``nn.TransformerEncoderLayer`` with
``norm_first``, and ``RotaryEncoderLayer``) run here from their own weights, as their forward does:

    x = x + out_proj(attention(norm1(x)));   x = x + linear2(gelu(linear1(norm2(x))))

``attention_prefill`` runs a right-padded prompt in parallel (causal, padding never attended) and keeps
its keys and values in slots 0 .. l-1 of a ``KVCache``; ``attention_step`` writes row i's new key and
value at slot ``positions[i]`` (overwriting the row's padding) and attends to slots <= positions[i].
Rotary layers rotate queries and keys at each row's own positions; the cache holds rotated keys.
A step costs O(positions) per row: attention, unlike the state-space layers, is not constant time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import RotaryEncoderLayer, rotate

__all__ = ["KVCache", "AttentionWeights", "attention_weights", "attention_prefill", "attention_step"]


@dataclass
class KVCache:
    """Keys and values of one attention layer: (b, h, s, p) each, slot j holding position j."""

    keys: torch.Tensor  # (b, h, s, p)
    values: torch.Tensor  # (b, h, s, p)

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]


@dataclass
class AttentionWeights:
    """What a pre-norm layer's decoding reads from it, whichever class it is."""

    in_weight: torch.Tensor  # (3d, d) rows q, k, v
    in_bias: torch.Tensor | None  # (3d,)
    out_proj: nn.Module  # d -> d
    n_heads: int
    rotary: bool
    norm1: nn.Module
    norm2: nn.Module
    feed_forward: Callable[[torch.Tensor], torch.Tensor]  # (.., d) -> (.., d)


def attention_weights(layer: nn.Module) -> AttentionWeights:
    """The weights of a backbone's Transformer layer; ValueError for a layer that is not pre-norm."""
    if isinstance(layer, RotaryEncoderLayer):
        return AttentionWeights(layer.in_proj.weight, layer.in_proj.bias, layer.out_proj, layer.n_heads, True,
                                layer.norm1, layer.norm2, lambda x: layer.linear2(F.gelu(layer.linear1(x))))
    if isinstance(layer, nn.TransformerEncoderLayer) and layer.norm_first:
        attn = layer.self_attn
        return AttentionWeights(attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, attn.num_heads, False,
                                layer.norm1, layer.norm2, lambda x: layer.linear2(layer.activation(layer.linear1(x))))
    raise ValueError(f"cannot decode with a {type(layer).__name__} (a pre-norm Transformer layer is needed)")


def attention_prefill(layer: nn.Module, x: torch.Tensor, lengths: torch.Tensor,
                      capacity: int) -> tuple[torch.Tensor, KVCache]:
    """The layer over right-padded ``x (b, l, d)`` (row i real for its first ``lengths[i]`` tokens),
    causal; returns its output (b, l, d) and a cache of ``capacity`` >= l slots holding the keys and
    values of positions 0 .. l-1."""
    w = attention_weights(layer)
    b, l, d = x.shape
    if capacity < l:
        raise ValueError(f"capacity must be >= the prompt length {l}, got {capacity}")
    h, p = w.n_heads, d // w.n_heads
    q, k, v = F.linear(w.norm1(x), w.in_weight, w.in_bias).view(b, l, 3, h, p).permute(2, 0, 3, 1, 4)  # (b, h, l, p)
    if w.rotary:
        q, k = rotate(q), rotate(k)  # (b, h, l, p)
    real = torch.arange(l, device=x.device) < lengths[:, None]  # (b, l) keys that are real tokens
    allowed = torch.ones(l, l, dtype=torch.bool, device=x.device).tril() & real[:, None, None, :]  # (b, 1, l, l)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (b, h, l, p)
    x = x + w.out_proj(out.transpose(1, 2).reshape(b, l, d))  # (b, l, d)
    x = x + w.feed_forward(w.norm2(x))  # (b, l, d)
    keys = k.new_zeros(b, h, capacity, p)  # (b, h, s, p)
    values = v.new_zeros(b, h, capacity, p)  # (b, h, s, p)
    keys[:, :, :l], values[:, :, :l] = k, v
    return x, KVCache(keys, values)


def attention_step(layer: nn.Module, x_t: torch.Tensor, cache: KVCache, positions: torch.Tensor) -> torch.Tensor:
    """One token per row, ``x_t (b, d)`` at ``positions (b,)``: its key and value go into the cache
    (in place) and it attends to the row's slots 0 .. positions[i]. Returns (b, d)."""
    w = attention_weights(layer)
    b, d = x_t.shape
    h, p = w.n_heads, d // w.n_heads
    span = int(positions.max()) + 1
    if span > cache.capacity:
        raise ValueError(f"the KV cache holds {cache.capacity} positions; position {span - 1} does not fit "
                         f"(give prefill a larger capacity)")
    q, k, v = F.linear(w.norm1(x_t), w.in_weight, w.in_bias).view(b, 3, h, 1, p).unbind(1)  # (b, h, 1, p)
    if w.rotary:
        q, k = rotate(q, positions=positions[:, None]), rotate(k, positions=positions[:, None])  # (b, h, 1, p)
    rows = torch.arange(b, device=x_t.device)  # (b,)
    cache.keys[rows, :, positions] = k[:, :, 0]  # (b, h, p) into slot positions[i]
    cache.values[rows, :, positions] = v[:, :, 0]  # (b, h, p)
    allowed = torch.arange(span, device=x_t.device) <= positions[:, None]  # (b, span)
    out = F.scaled_dot_product_attention(q, cache.keys[:, :, :span], cache.values[:, :, :span],
                                         attn_mask=allowed[:, None, None, :])  # (b, h, 1, p)
    x = x_t + w.out_proj(out.reshape(b, d))  # (b, d)
    return x + w.feed_forward(w.norm2(x))  # (b, d)
