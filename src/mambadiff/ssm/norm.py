"""RMSNorm, optionally gated (the Mamba-2 output norm).

Glossary: b batch, l length, e normalised width (any leading dims are allowed).

    RMSNorm(x)      = x / sqrt(mean(x^2) + eps) * weight
    RMSNorm(x, z)   = RMSNorm(x * silu(z))          (gate first, then normalise: Mamba-2's order)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, with an optional SiLU gate.

    Shape contract: ``x`` (..., e) and optional ``z`` (..., e) -> (..., e), same dtype as ``x``.
    Half-precision inputs are normalised in float32 (the mean of squares overflows in fp16).
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # (e,)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., e={self.dim}), got {tuple(x.shape)}")
        if z is not None and z.shape != x.shape:
            raise ValueError(f"z must have the shape of x {tuple(x.shape)}, got {tuple(z.shape)}")
        in_dtype = x.dtype
        low_precision = in_dtype in (torch.float16, torch.bfloat16)
        h = x.float() if low_precision else x  # (..., e)
        if z is not None:
            h = h * F.silu(z.float() if low_precision else z)  # (..., e)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., e)
        return (h * self.weight.to(h.dtype)).to(in_dtype)  # (..., e)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
