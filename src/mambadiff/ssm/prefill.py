"""What the mixers share to hand the state at the end of a parallel pass to ``step``: the lengths of
right-padded rows checked and turned into a mask, and the inputs of each row's last steps.

Glossary: b batch, l length, w window width; ``...`` any channel sizes between batch and time.

Every mixer's ``prefill(x (b, l, d), lengths (b,)) -> (y (b, l, d), state)`` runs its parallel path
over right-padded rows and returns the recurrent state each row has after its own ``lengths[i]``
tokens, so that ``step`` continues row i exactly where its prompt ended.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_lengths", "lengths_mask", "trailing_window"]


def check_lengths(lengths: torch.Tensor | None, b: int, l: int, device=None) -> torch.Tensor:
    """``lengths`` as a (b,) long tensor on ``device`` (None: every row has l tokens); ValueError
    unless each is in [1, l]."""
    if lengths is None:
        return torch.full((b,), l, dtype=torch.long, device=device)
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.shape != (b,) or lengths.dtype.is_floating_point or lengths.dtype.is_complex:
        raise ValueError(f"lengths must be an integer tensor of shape (b,) = ({b},), "
                         f"got {lengths.dtype} {tuple(lengths.shape)}")
    lengths = lengths.to(device=device, dtype=torch.long)  # (b,)
    if b and (int(lengths.min()) < 1 or int(lengths.max()) > l):
        raise ValueError(f"lengths must lie in [1, l={l}], got {lengths.tolist()}")
    return lengths


def lengths_mask(lengths: torch.Tensor, l: int) -> torch.Tensor:
    """(b, l) bool, True at each row's first ``lengths[i]`` positions (right padding)."""
    return torch.arange(l, device=lengths.device) < lengths[:, None]  # (b, l)


def trailing_window(u: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """The last ``width`` steps of each row: u (b, ..., l), lengths (b,) -> (b, ..., width), oldest
    first, step ``lengths[i] - width + j`` of row i at j (zeros before the row's start).

    width = k - 1 gives a causal conv's state; width = l right-aligns every row, so that a
    time-invariant state is one product with a table of powers shared by the batch."""
    b = u.shape[0]
    padded = F.pad(u, (width, 0))  # (b, ..., width + l) step t at width + t
    index = lengths[:, None] + torch.arange(width, device=u.device)  # (b, w) in padded steps
    index = index.view(b, *([1] * (u.ndim - 2)), width).expand(*u.shape[:-1], width)  # (b, ..., w)
    return padded.gather(-1, index)  # (b, ..., w)
