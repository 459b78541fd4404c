"""Reference selective scan: a plain sequential loop, the oracle every backend is checked against.

Glossary: b batch, d channels (inner width), l length, n state size.

    dt_l   = softplus(delta_l + delta_bias)            (or delta_l + delta_bias)
    h_l    = exp(dt_l * A) * h_{l-1} + dt_l * B_l * u_l
    y_l    = <C_l, h_l> + D * u_l
    out_l  = y_l * silu(z_l)                            (when z is given)

Works in whatever dtype it is given (use float64 for tight parity tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(
    u: torch.Tensor,  # (b, d, l)
    delta: torch.Tensor,  # (b, d, l)
    A: torch.Tensor,  # (d, n)
    B: torch.Tensor,  # (b, n, l)
    C: torch.Tensor,  # (b, n, l)
    D: torch.Tensor | None = None,  # (d,)
    z: torch.Tensor | None = None,  # (b, d, l)
    delta_bias: torch.Tensor | None = None,  # (d,)
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,  # (b, d, n)
    return_last_state: bool = False,
):
    b, d, l = u.shape
    n = A.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]  # (b, d, l)
    if delta_softplus:
        delta = F.softplus(delta)  # (b, d, l)
    h = u.new_zeros(b, d, n) if initial_state is None else initial_state.to(u.dtype)  # (b, d, n)
    ys = []
    for t in range(l):
        dt = delta[:, :, t, None]  # (b, d, 1)
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]  # (b, d, n)
        ys.append((h * C[:, None, :, t]).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=-1)  # (b, d, l)
    if D is not None:
        y = y + D[None, :, None] * u  # (b, d, l)
    if z is not None:
        y = y * F.silu(z)  # (b, d, l)
    return (y, h) if return_last_state else y
