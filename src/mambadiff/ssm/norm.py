"""RMSNorm, optionally gated (the Mamba-2 output norm).

Glossary: b batch, l length, e normalised width (any leading dims are allowed), r rows (the leading
dims flattened).

    RMSNorm(x)      = x / sqrt(mean(x^2) + eps) * weight
    RMSNorm(x, z)   = RMSNorm(x * silu(z))          (gate first, then normalise: Mamba-2's order)

Backends: on CPU, float32 / float64 tensors go through the fused C kernel (rms_norm.c of
``mambadiff.kernels``): one pass forward, one recomputing pass backward, instead of the half dozen
elementwise passes (and as many saved tensors) of the PyTorch expression, which is the fallback on
every other device and dtype and the reference the kernel is tested against.
"""
from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .. import kernels

__all__ = ["RMSNorm", "rms_norm", "rms_norm_torch"]

NORM_BACKENDS = ("auto", "cpu", "torch")
# Below this many elements per thread, extra threads cost more than they save.
MIN_WORK_PER_THREAD = 1 << 15


def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor, z: torch.Tensor | None, eps: float) -> torch.Tensor:
    """The plain PyTorch expression. Half-precision inputs are normalised in float32."""
    in_dtype = x.dtype
    low_precision = in_dtype in (torch.float16, torch.bfloat16)
    h = x.float() if low_precision else x  # (..., e)
    if z is not None:
        h = h * F.silu(z.float() if low_precision else z)  # (..., e)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)  # (..., e)
    return (h * weight.to(h.dtype)).to(in_dtype)  # (..., e)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(..., e) as a (r, e) view with unit channel stride (a copy only when no view exists)."""
    return kernels.unit_last_stride(t.reshape(-1, t.shape[-1]))  # (r, e)


class _RMSNormCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, z, eps):
        # x, z (r, e) unit channel stride; weight (e,) contiguous
        rows, e = x.shape
        y = x.new_empty(rows, e)  # (r, e)
        rstd = x.new_empty(rows)  # (r,)
        strides = (ctypes.c_int64 * 3)(x.stride(0), 0 if z is None else z.stride(0), y.stride(0))
        kernels.function("rn_fwd", x.dtype)(
            x.data_ptr(), kernels.ptr(z), weight.data_ptr(), y.data_ptr(),
            rstd.data_ptr(), strides, rows, e, eps, kernels.threads_for(rows * e, MIN_WORK_PER_THREAD))
        ctx.save_for_backward(x, weight, z, rstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, weight, z, rstd = ctx.saved_tensors
        rows, e = x.shape
        gy = kernels.unit_last_stride(gy)  # (r, e)
        threads = kernels.threads_for(2 * rows * e, MIN_WORK_PER_THREAD)
        ntasks = max(1, min(rows, threads))
        gx = x.new_empty(rows, e)  # (r, e)
        gz = x.new_empty(rows, e) if z is not None else None  # (r, e)
        gw_part = x.new_empty(ntasks, e)  # (tasks, e) summed below
        strides = (ctypes.c_int64 * 5)(x.stride(0), 0 if z is None else z.stride(0), gy.stride(0),
                                       gx.stride(0), 0 if gz is None else gz.stride(0))
        rc = kernels.function("rn_bwd", x.dtype)(
            x.data_ptr(), kernels.ptr(z), weight.data_ptr(), rstd.data_ptr(),
            gy.data_ptr(), gx.data_ptr(), kernels.ptr(gz), gw_part.data_ptr(),
            strides, rows, e, ntasks, threads)
        if rc != 0:
            raise MemoryError("rms_norm cpu kernel: scratch allocation failed")
        return gx, gw_part.sum(0), gz, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, z: torch.Tensor | None = None,
             eps: float = 1e-5, backend: str = "auto") -> torch.Tensor:
    """RMSNorm(x [* silu(z)]) * weight over the last axis. x, z (..., e), weight (e,) -> (..., e)
    in x's dtype."""
    if backend not in NORM_BACKENDS:
        raise ValueError(f"backend must be one of {NORM_BACKENDS}, got {backend!r}")
    use_cpu = (backend == "cpu" or (
        backend == "auto" and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        and weight.dtype == x.dtype and (z is None or z.dtype == x.dtype)
        and kernels.is_available()))
    if not use_cpu:
        return rms_norm_torch(x, weight, z, eps)
    if x.device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got x on {x.device}")
    if not kernels.is_available():
        raise RuntimeError(f"rms_norm backend 'cpu' is unavailable: {kernels.unavailable_reason()}")
    shape, dtype = x.shape, x.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32  # compute dtype
    y = _RMSNormCPU.apply(_rows(x.to(ct)), weight.to(ct).contiguous(),
                          None if z is None else _rows(z.to(ct)), float(eps))  # (r, e)
    return y.reshape(shape).to(dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, with an optional SiLU gate.

    Shape contract: ``x`` (..., e) and optional ``z`` (..., e) -> (..., e), same dtype as ``x``.
    Half-precision inputs are normalised in float32 (the mean of squares overflows in fp16).
    ``eps=None`` means ``torch.finfo(x.dtype).eps``, as in ``torch.nn.RMSNorm`` (whose parameters
    and state-dict keys this module shares).
    """

    def __init__(self, dim: int, eps: float | None = 1e-5, backend: str = "auto"):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if backend not in NORM_BACKENDS:
            raise ValueError(f"backend must be one of {NORM_BACKENDS}, got {backend!r}")
        self.dim = dim
        self.eps = eps
        self.backend = backend
        self.weight = nn.Parameter(torch.ones(dim))  # (e,)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., e={self.dim}), got {tuple(x.shape)}")
        if z is not None and z.shape != x.shape:
            raise ValueError(f"z must have the shape of x {tuple(x.shape)}, got {tuple(z.shape)}")
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        return rms_norm(x, self.weight, z, eps, self.backend)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, backend={self.backend!r}"
