"""Causal depthwise conv1d followed by SiLU: the Mamba block's short convolution.

Glossary: b batch, l length, e channels (the block's inner width), k kernel width.

    y[b, t, c] = silu(bias[c] + sum_j weight[c, j] x[b, t - (k - 1) + j, c])     (x = 0 before t = 0)

Everything is time-major, (b, l, e): that is how in_proj produces x (a column slice of its (b, l, 2e)
output) and how x_proj and the selective scan consume y, so this layout needs no transposing copies.

Backends:
- ``cpu``: the fused C kernel (causal_conv1d.c of ``mambadiff.kernels``, the library that also holds
  the ``cpu`` selective scan): one pass over x forward, one recomputing pass backward, reading x in place through its
  strides. float32 / float64 (half precision is computed in float32).
- ``torch``: ``F.conv1d`` on the transposed input, then SiLU; any device and dtype. It is also the
  reference that the kernel is tested against.
- ``auto``: ``cpu`` for CPU tensors when the kernel builds, else ``torch``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .. import kernels

__all__ = ["CONV_BACKENDS", "CONV_BACKEND_FOR_SCAN", "causal_conv1d_silu", "causal_conv1d_silu_torch"]

CONV_BACKENDS = ("auto", "cpu", "torch")

# Conv backend per selective-scan backend: the reference and torch scans pair with the plain PyTorch
# conv, so those paths stay free of compiled code.
CONV_BACKEND_FOR_SCAN = {"reference": "torch", "torch": "torch", "cpu": "cpu"}

# About this many (step, channel) elements per task, in equal time chunks: the AVX-512 kernel walks
# each block of 16 channels down the task's steps, and with ~32 kB per tensor the rows of x, gy and
# gx it shares with the next block are still in L1 (measured at e = 144 .. 576: half the chunk
# costs ~5% more, twice it 5-15%; unequal chunks, e.g. 56 + 8 steps, cost 30%). The generic loops'
# scratch, (chunk + k - 1) rows of e values, stays about as small.
SCRATCH_ELEMENTS = 1 << 13
# Below this many multiply-adds per thread, extra threads cost more than they save.
MIN_WORK_PER_THREAD = 1 << 16


def causal_conv1d_silu_torch(x: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (b, l, e), weight (e, k), bias (e,) | None -> (b, l, e). Plain PyTorch."""
    l, k = x.shape[1], weight.shape[1]
    pre = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=k - 1,
                   groups=weight.shape[0])  # (b, e, l + k - 1)
    return F.silu(pre[..., :l]).transpose(1, 2)  # (b, l, e) causal: drop the right overhang


def _chunk(b: int, l: int, e: int, threads: int) -> int:
    """Steps per task: l split into equal chunks of about SCRATCH_ELEMENTS / e steps, and into at
    least ceil(threads / b) chunks so that every thread gets a task."""
    nch = min(l, max(-(-l * e // SCRATCH_ELEMENTS), -(-threads // b), 1))
    return -(-l // nch)


class _CausalConv1dSiluCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_t, bias, reverse):
        # x (b, l, e) unit channel stride; weight_t (k, e) contiguous; bias (e,) contiguous | None;
        # reverse: the anti-causal conv
        b, l, e = x.shape
        k = weight_t.shape[0]
        y = x.new_empty(b, l, e)  # (b, l, e)
        threads = kernels.threads_for(b * l * e * k, MIN_WORK_PER_THREAD)
        chunk = _chunk(b, l, e, threads)
        # reverse -> the kernel's anti flag: it still walks memory in ascending time
        kernels.function("cc_fwd", x.dtype)(
            x.data_ptr(), weight_t.data_ptr(), kernels.ptr(bias),
            y.data_ptr(), kernels.batch_time_strides(x, y), b, l, e, k, chunk, int(reverse),
            threads)
        ctx.save_for_backward(x, weight_t, bias)
        ctx.reverse = reverse
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, weight_t, bias = ctx.saved_tensors
        b, l, e = x.shape
        k = weight_t.shape[0]
        gy = kernels.unit_last_stride(gy)  # (b, l, e)
        threads = kernels.threads_for(2 * b * l * e * k, MIN_WORK_PER_THREAD)
        chunk = _chunk(b, l, e, threads)
        ntasks = b * (-(-l // chunk))
        gx = x.new_empty(b, l, e)  # (b, l, e)
        gw_part = x.new_empty(ntasks, k, e)  # (tasks, k, e) summed below
        gb_part = x.new_empty(ntasks, e) if bias is not None else None  # (tasks, e)
        rc = kernels.function("cc_bwd", x.dtype)(
            x.data_ptr(), weight_t.data_ptr(), kernels.ptr(bias),
            gy.data_ptr(), gx.data_ptr(), gw_part.data_ptr(),
            kernels.ptr(gb_part), kernels.batch_time_strides(x, gy, gx), b, l, e, k, chunk,
            int(ctx.reverse), threads)
        if rc != 0:
            raise MemoryError("causal_conv1d cpu kernel: scratch allocation failed")
        return gx, gw_part.sum(0), None if gb_part is None else gb_part.sum(0), None


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                       backend: str = "auto", reverse: bool = False) -> torch.Tensor:
    """silu(causal depthwise conv1d(x)). x (b, l, e) time-major (any strides), weight (e, k),
    bias (e,) | None -> y (b, l, e) in x's dtype.

    reverse=True runs the conv over the time-flipped sequence and flips the result back (an
    anti-causal conv: step t reads steps t .. t+k-1): ``causal(x.flip(1)).flip(1)``, which the CPU
    kernel computes in place, without the flipped copies."""
    if backend not in CONV_BACKENDS:
        raise ValueError(f"backend must be one of {CONV_BACKENDS}, got {backend!r}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (b, l, e), got {tuple(x.shape)}")
    e = x.shape[2]
    if weight.ndim != 2 or weight.shape[0] != e:
        raise ValueError(f"weight must have shape (e, k) = ({e}, k), got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (e,):
        raise ValueError(f"bias must have shape (e,) = ({e},), got {tuple(bias.shape)}")
    on_cpu = x.device.type == "cpu"
    if backend == "auto":
        backend = "cpu" if on_cpu and kernels.is_available() else "torch"
    if backend == "torch":
        if reverse:
            return causal_conv1d_silu_torch(x.flip(1), weight, bias).flip(1)
        return causal_conv1d_silu_torch(x, weight, bias)
    if not on_cpu:
        raise ValueError(f"backend 'cpu' needs CPU tensors, got x on {x.device}")
    if not kernels.is_available():
        raise RuntimeError(f"causal_conv1d backend 'cpu' is unavailable: "
                           f"{kernels.unavailable_reason()}")
    dtype = x.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32  # compute dtype
    y = _CausalConv1dSiluCPU.apply(
        kernels.unit_last_stride(x.to(ct)), weight.to(ct).t().contiguous(),
        None if bias is None else bias.to(ct).contiguous(), bool(reverse))
    return y.to(dtype)
