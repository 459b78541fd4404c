"""A causal backbone run for generation: the prompt through the parallel path once, then one token at
a time from each layer's recurrent state (the generation cache, ``DecodeCache``).

Glossary: b batch, l length, d model width, s KV cache slots.

How each layer kind hands its prompt over to ``step`` (``prefill_backbone``):

    mamba, mamba2     the selective scan / SSD kernel returns its last state (dt zeroed at padding,
                      so a row's state stops at its own last token) and the conv keeps the last k-1
                      inputs: ``Mamba.prefill``, ``Mamba2.prefill``
    s4d, s4, h3       time-invariant: the state after a row's prompt is its right-aligned inputs, in
                      chunks, times a small table of powers of dA (``ConvolutionalSSM.prefill``,
                      ``H3.prefill``), one matrix product beside the FFT convolution
    attention layers  (transformer, a hybrid's attn_layers) the prompt's keys and values fill a KV
                      cache (``mambadiff.models.kv_cache``)
    lstm              the packed sequence's last (h, c) per row

``step_backbone`` then costs O(1) time and memory per token in every state-space and LSTM layer (the
states keep their shapes); an attention layer attends to its row's cached positions. Rows are
right-padded with their own lengths; a row's padding never reaches its state, so every row decodes
exactly as it would alone.

``reorder_cache`` picks (and repeats) rows of a cache by an index: beam search
(``mambadiff.models.beam_search``) grows each prompt's row into its beams that way, and after each step
hands every beam the state of the beam it continues.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mambadiff.ssm.prefill import check_lengths, lengths_mask

from .attention import sinusoidal_positions
from .backbones import LSTMBackbone, ResidualStack, TransformerBackbone
from .kv_cache import attention_prefill, attention_step

__all__ = ["DecodeCache", "prefill_backbone", "step_backbone", "reorder_cache"]


@dataclass
class DecodeCache:
    """The generation cache: each layer's state (a mixer's state dataclass, a ``KVCache``, or the
    LSTM's (h, c)) and the number of tokens each row has consumed (the next token's position)."""

    layers: list[Any] = field(default_factory=list)
    positions: torch.Tensor | None = None  # (b,) long
    capacity: int = 0  # KV cache slots: the longest prompt plus the tokens that may follow
    batch_dim: int = 0  # the batch dim of every tensor in ``layers``: 1 for the LSTM's (layers, b, d) h and c


def prefill_backbone(backbone: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None = None,
                     capacity: int | None = None) -> tuple[torch.Tensor, DecodeCache]:
    """The backbone over right-padded ``x (b, l, d)`` (its parallel path) and the cache after each row's
    ``lengths[i]`` tokens. ``capacity`` (default l): the positions the KV caches hold."""
    b, l, _ = x.shape
    lengths = check_lengths(lengths, b, l, x.device)  # (b,)
    capacity = l if capacity is None else capacity
    if capacity < l:
        raise ValueError(f"capacity must be >= the prompt length {l}, got {capacity}")
    if isinstance(backbone, ResidualStack):
        if not backbone.causal:
            raise ValueError("a bidirectional backbone cannot generate: build it with bidirectional=False")
        h, layers = _prefill_stack(backbone, x, lengths, capacity)
    elif isinstance(backbone, TransformerBackbone):
        if not backbone.causal:
            raise ValueError("a bidirectional backbone cannot generate: build it with bidirectional=False")
        h = backbone.add_positions(x)  # (b, l, d)
        layers = []
        for layer in backbone.encoder.layers:
            h, kv = attention_prefill(layer, h, lengths, capacity)  # (b, l, d)
            layers.append(kv)
        h = backbone.final_norm(h)  # (b, l, d)
    elif isinstance(backbone, LSTMBackbone):
        h, layers = _prefill_lstm(backbone, x, lengths)
    else:
        raise ValueError(f"cannot decode with a {type(backbone).__name__} backbone")
    batch_dim = 1 if isinstance(backbone, LSTMBackbone) else 0  # torch's LSTM keeps (h, c) as (layers, b, d)
    return h, DecodeCache(layers=layers, positions=lengths.clone(), capacity=capacity, batch_dim=batch_dim)


def step_backbone(backbone: nn.Module, x_t: torch.Tensor, cache: DecodeCache) -> torch.Tensor:
    """One token per row, ``x_t (b, d)``: the backbone's output (b, d); the cache moves on by one."""
    positions = cache.positions  # (b,)
    if isinstance(backbone, ResidualStack):
        h = _step_stack(backbone, x_t, cache)  # (b, d)
    elif isinstance(backbone, TransformerBackbone):
        h = x_t + _position_rows(backbone, positions).to(x_t.dtype)  # (b, d)
        for layer, kv in zip(backbone.encoder.layers, cache.layers):
            h = attention_step(layer, h, kv, positions)  # (b, d)
        h = backbone.final_norm(h)  # (b, d)
    elif isinstance(backbone, LSTMBackbone):
        out, cache.layers = backbone.lstm(x_t.unsqueeze(1), tuple(cache.layers))  # (b, 1, d)
        cache.layers = list(cache.layers)
        h = out[:, 0]  # (b, d)
    else:
        raise ValueError(f"cannot decode with a {type(backbone).__name__} backbone")
    cache.positions = positions + 1
    return h


def reorder_cache(cache: DecodeCache, index: torch.Tensor) -> DecodeCache:
    """A new cache whose row j is row ``index[j]`` of ``cache``; ``index (b',)`` may repeat and drop rows
    (b' != b is fine). Every tensor of every layer's state is indexed along ``cache.batch_dim``, through
    dataclasses, tuples, lists and dicts of any depth; other values (ints, None) are kept. The tensors
    are copies, never views: a step writes KV caches in place, and two beams sharing one row's storage
    would overwrite each other. ``cache`` itself is left as it was."""
    b = cache.positions.shape[0]
    index = torch.as_tensor(index, dtype=torch.long, device=cache.positions.device)  # (b',)
    if index.ndim != 1 or (index.numel() and not 0 <= int(index.min()) <= int(index.max()) < b):
        raise ValueError(f"index must be a (b',) tensor of rows in [0, {b}), got {index.tolist()}")
    return DecodeCache(layers=_take_rows(cache.layers, index, cache.batch_dim),
                       positions=cache.positions.index_select(0, index),  # (b',)
                       capacity=cache.capacity, batch_dim=cache.batch_dim)


def _take_rows(state: Any, index: torch.Tensor, dim: int) -> Any:
    """``state`` with every tensor in it indexed by ``index`` along ``dim`` (see ``reorder_cache``)."""
    if isinstance(state, torch.Tensor):
        return state.index_select(dim, index.to(state.device))  # a copy, (.., b', ..)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        # fields with init=False are left to __post_init__ (none of the states have any)
        return dataclasses.replace(state, **{f.name: _take_rows(getattr(state, f.name), index, dim)
                                             for f in dataclasses.fields(state) if f.init})
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # a namedtuple takes its fields by position
        return type(state)(*(_take_rows(s, index, dim) for s in state))
    if isinstance(state, (list, tuple)):
        return type(state)(_take_rows(s, index, dim) for s in state)
    if isinstance(state, dict):
        return {key: _take_rows(s, index, dim) for key, s in state.items()}
    return state


def _prefill_stack(stack: ResidualStack, x: torch.Tensor, lengths: torch.Tensor, capacity: int):
    """ResidualStack.forward over the prompt, each mixer's prefill keeping its state."""
    keep = lengths_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (b, l, 1)
    x = x * keep  # (b, l, d)
    states = []
    for i, (norm, mixer) in enumerate(zip(stack.norms, stack.mixers)):
        if i in stack.attn_layers:
            x, kv = attention_prefill(mixer, x, lengths, capacity)  # (b, l, d)
            x = x * keep
            states.append(kv)
            continue
        if not hasattr(mixer, "prefill"):
            raise ValueError(f"layer {i} ({type(mixer).__name__}) cannot decode (no prefill / step)")
        h, state = mixer.prefill(norm(x), lengths)  # (b, l, d)
        x = x + h * keep  # (b, l, d)
        if stack.mlps is not None:
            x = x + stack.mlps[i](stack.mlp_norms[i](x)) * keep  # (b, l, d)
        states.append(state)
    return stack.final_norm(x), states


def _step_stack(stack: ResidualStack, x: torch.Tensor, cache: DecodeCache) -> torch.Tensor:
    for i, (norm, mixer) in enumerate(zip(stack.norms, stack.mixers)):
        if i in stack.attn_layers:
            x = attention_step(mixer, x, cache.layers[i], cache.positions)  # (b, d)
            continue
        h, cache.layers[i] = mixer.step(norm(x), cache.layers[i])  # (b, d)
        x = x + h  # (b, d)
        if stack.mlps is not None:
            x = x + stack.mlps[i](stack.mlp_norms[i](x))  # (b, d)
    return stack.final_norm(x)  # (b, d)


def _position_rows(backbone: TransformerBackbone, positions: torch.Tensor) -> torch.Tensor:
    """The absolute position rows (b, d) the backbone adds at ``positions (b,)`` (zeros for rotary, none)."""
    last = int(positions.max())
    if backbone.pos is not None:
        if last >= backbone.max_len:
            raise ValueError(f"position {last} exceeds the transformer's max_len {backbone.max_len}")
        return backbone.pos[positions]  # (b, d)
    if backbone.pos_encoding == "sinusoidal":
        return sinusoidal_positions(last + 1, backbone.d_model, positions.device)[positions]  # (b, d)
    return torch.zeros((), device=positions.device)


def _prefill_lstm(backbone: LSTMBackbone, x: torch.Tensor, lengths: torch.Tensor):
    """The packed LSTM over the prompt; its (h, c) per row are those after the row's last token."""
    if backbone.lstm.bidirectional:
        raise ValueError("a bidirectional LSTM cannot generate: build it with bidirectional=False")
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, (h_n, c_n) = backbone.lstm(packed)  # (layers, b, d) each, per row at its length
    h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (b, l, d)
    return h, [h_n, c_n]
