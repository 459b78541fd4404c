"""What the mixers share to hand the state at the end of a parallel pass to ``step``: the lengths of
right-padded rows checked and turned into a mask, and the inputs of each row's last steps.

Glossary: b batch, l length, w window width; ``...`` any channel sizes between batch and time.

Every mixer's ``prefill(x (b, l, d), lengths (b,)) -> (y (b, l, d), state)`` runs its parallel path
over right-padded rows and returns the recurrent state each row has after its own ``lengths[i]``
tokens, so that ``step`` continues row i exactly where its prompt ended.

The time-invariant mixers (S4D, S4, H3) sum their inputs weighted by powers of dA, sum_t dA^(n-1-t) u_t:
``state_chunks`` right-aligns each row on c K steps and cuts step s = i K + k into (i, k), so that
dA^(n-1-s) = dA^(K (c-1-i)) dA^(K-1-k): one (c, state) table of powers, shared by all k and rows,
meets the inputs in one matrix product, and K more powers weigh its K results.
"""
from __future__ import annotations

import torch

__all__ = ["check_lengths", "lengths_mask", "has_padding", "trailing_window", "chunk_shape", "state_chunks"]

# Chunks of a time-invariant state sum (``state_chunks``): the powers of dA it needs are c for the steps
# of a chunk and K = l / c for the chunks, about 2 sqrt(l) at the lengths prompts have, instead of l.
STATE_CHUNK = 64


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


def has_padding(lengths: torch.Tensor, l: int) -> bool:
    """Whether any row is shorter than l: full rows (a single prompt) skip every mask product."""
    return bool((lengths < l).any())


def trailing_window(u: torch.Tensor, lengths: torch.Tensor, width: int, dim: int = -1) -> torch.Tensor:
    """The last ``width`` steps of each row along the time axis ``dim``: u (b, ..., l, ...), lengths (b,)
    -> (b, ..., width, ...), oldest first, step ``lengths[i] - width + j`` of row i at j (zeros before the
    row's start).

    width = k - 1 gives a causal conv's state; width >= l right-aligns whole rows. Only the window is
    gathered: padding all of u first to make room for the steps before the start would copy u."""
    dim = dim % u.ndim
    shape = [u.shape[0]] + [1] * (u.ndim - 1)
    shape[dim] = width  # (b, 1.., w, 1..)
    index = lengths[:, None] - width + torch.arange(width, device=u.device)  # (b, w) steps, < 0: before the start
    before = (index < 0).view(shape)  # (b, 1.., w, 1..)
    index = index.clamp(min=0).view(shape).expand(*u.shape[:dim], width, *u.shape[dim + 1:])  # (b, .., w, ..)
    return u.gather(dim, index).masked_fill(before, 0)  # (b, .., w, ..)


def chunk_shape(l: int) -> tuple[int, int]:
    """(c, K) for a state sum over l steps: c K >= l steps, both powers of two (S4's squarings of dA then
    land on dA^K and its chunk sums pair up evenly), c at most STATE_CHUNK."""
    total = 1 << max(0, (l - 1).bit_length())  # the power of two >= l
    c = min(STATE_CHUNK, total)
    return c, total // c


def state_chunks(u: torch.Tensor, lengths: torch.Tensor, c: int, K: int) -> torch.Tensor:
    """u (b, e, l, j) (j values per channel and step) -> (b, e, c, K, j): each row right-aligned on c K
    steps, its last input (step ``lengths[i] - 1``) last, zeros before its first; step i K + k at (i, k).
    Cut that way (i strides by K steps), the (K, j) values of each i are one contiguous block of a
    time-major row, so a product over i reads u as it lies. A view of u when every row is full and
    l = c K, else one gathered copy."""
    l = u.shape[2]
    if c * K != l or has_padding(lengths, l):
        u = trailing_window(u, lengths, c * K, dim=2)  # (b, e, c K, j)
    return u.unflatten(2, (c, K))  # (b, e, c, K, j)
