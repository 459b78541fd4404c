"""Bidirectional wrapper for any causal sequence mixer of ``mambadiff.ssm``.

Glossary: b batch, l length, d model width.

    out = forward_layer(x, mask) + reverse(backward_layer(reverse(x), mask))

``reverse`` flips each sequence within its own length: for row b with len_b real tokens,
position i < len_b maps to len_b - 1 - i and padding positions stay where they are (at the
end). The reversed batch is therefore still right-padded with the same mask, so the causal
inner layers never see padding before a real token, in either direction.

Without padding, a layer whose ``forward`` takes ``reverse=True`` (Mamba2, S4D, S4, H3) computes
``reverse(layer(reverse(x)))`` itself: Mamba-2's CPU kernels compute the reversed direction in place
(the SSD walks time backwards through negative strides, the conv runs anti-causally), the
time-invariant mixers run their convolutions anti-causally, so neither the input nor the output is
copied flipped.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from .checks import validate_sequence

__all__ = ["Bidirectional", "reverse_index", "reverse_padded"]


def reverse_index(mask: torch.Tensor | None, length: int, batch_size: int,
                  device: torch.device) -> torch.Tensor:
    """Gather indices (b, l) that reverse each row within its length (an involution).

    mask (b, l) bool right-padded, or None (every row has the full length).
    """
    pos = torch.arange(length, device=device).expand(batch_size, length)  # (b, l)
    if mask is None:
        return pos.flip(-1)  # (b, l)
    lengths = mask.sum(dim=1, keepdim=True)  # (b, 1)
    return torch.where(pos < lengths, lengths - 1 - pos, pos)  # (b, l)


def reverse_padded(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (b, l, d) gathered along l by ``index`` (b, l) -> (b, l, d)."""
    return x.gather(1, index.unsqueeze(-1).expand_as(x))  # (b, l, d)


class Bidirectional(nn.Module):
    """Run a mixer forward and a second, independent mixer over the reversed sequence.

    ``make_layer`` is called twice; no projections are shared; outputs are summed.
    Works with any layer exposing ``forward(x, mask=None)`` and ``d_model`` (Mamba, Mamba2,
    S4D). With a right-padded ``mask`` each row is reversed within its own length, so padding
    (whatever its content or length) does not change outputs at real positions; padded
    outputs are zero.

    Shape contract: forward(x (b, l, d_model), mask (b, l) bool | None) -> (b, l, d_model).
    Bidirectional models are not streaming: ``step`` and ``allocate_state`` raise
    NotImplementedError.
    """

    def __init__(self, make_layer: Callable[[], nn.Module]):
        super().__init__()
        if not callable(make_layer):
            raise ValueError(f"make_layer must be a zero-argument callable returning a layer, "
                             f"got {type(make_layer).__name__}")
        self.forward_layer = make_layer()
        self.backward_layer = make_layer()
        for name, layer in (("forward", self.forward_layer), ("backward", self.backward_layer)):
            if not isinstance(layer, nn.Module):
                raise ValueError(f"make_layer must return an nn.Module, got "
                                 f"{type(layer).__name__} for the {name} direction")
        if self.forward_layer is self.backward_layer:
            raise ValueError("make_layer returned the same module twice; it must build a new "
                             "layer on every call (the two directions share nothing)")
        fwd_ids = {id(p) for p in self.forward_layer.parameters()}
        if any(id(p) in fwd_ids for p in self.backward_layer.parameters()):
            raise ValueError("make_layer returned layers that share parameters; the two "
                             "directions must have separate parameters")
        d_fwd = getattr(self.forward_layer, "d_model", None)
        d_bwd = getattr(self.backward_layer, "d_model", None)
        if d_fwd is None or d_fwd != d_bwd:
            raise ValueError(f"layers from make_layer must expose the same int d_model, "
                             f"got {d_fwd!r} and {d_bwd!r}")
        self.d_model = d_fwd
        # layers whose forward takes reverse=True (Mamba2, S4D, S4, H3) run the full-length backward direction
        # without flipped copies of their input and output
        self._reverse_in_place = "reverse" in inspect.signature(self.backward_layer.forward).parameters

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        validate_sequence(self, x, mask, self.d_model)
        b, l, _ = x.shape
        y_fwd = self.forward_layer(x, mask)  # (b, l, d)
        if mask is None:  # every row has the full length
            if self._reverse_in_place:  # the layer walks time backwards itself: no flipped copies
                return y_fwd + self.backward_layer(x, None, reverse=True)  # (b, l, d)
            y_bwd = self.backward_layer(x.flip(1), None)  # (b, l, d) reversed order; a flip beats a gather
            return y_fwd + y_bwd.flip(1)  # (b, l, d)
        index = reverse_index(mask, l, b, x.device)  # (b, l)
        y_bwd = self.backward_layer(reverse_padded(x, index), mask)  # (b, l, d) reversed order
        out = y_fwd + reverse_padded(y_bwd, index)  # (b, l, d) back in the original order
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)  # (b, l, d)
        return out

    def allocate_state(self, *args, **kwargs):
        raise NotImplementedError("Bidirectional layers are not streaming: the backward "
                                  "direction needs the whole sequence, so there is no "
                                  "recurrent state; use forward() on full sequences")

    def step(self, *args, **kwargs):
        raise NotImplementedError("Bidirectional layers are not streaming: the backward "
                                  "direction needs the whole sequence, so step() is undefined; "
                                  "use forward() on full sequences")
