"""``cpu`` backend: the fused C selective scan (mambadiff/kernels/csrc/selective_scan.c) as an
autograd function. The library is built and loaded by ``mambadiff.kernels``.

Glossary: b batch, d channels (inner width), l length, n state size, g d-group (backward task split).

Autograd: the forward stores its inputs and, when a gradient will be needed and l > 128, the state at
the start of every 128-step chunk (1/128 of the states); the backward recomputes the states per
block of 16 channels, chunk by chunk from those checkpoints, so its scratch is O(n) per channel and
O(chunk) per thread, never (b, l, d, n).
"""
from __future__ import annotations

import ctypes

import torch
from torch.autograd.function import once_differentiable

from ... import kernels
from ...kernels import ptr, threads_for


def _strides(*tensors) -> ctypes.Array:
    """(b, d, l) element strides of each tensor, flattened, for the kernel (zeros for None)."""
    vals = []
    for t in tensors:
        vals.extend(t.stride() if t is not None else (0, 0, 0))
    return (ctypes.c_int64 * len(vals))(*vals)


def _time_major(t: torch.Tensor) -> bool:
    """A (b, d, l) tensor whose channels are adjacent (a transposed (b, l, d) one)."""
    return t.stride(1) == 1 and t.stride(2) != 1


def _kernel_layout(t: torch.Tensor | None) -> torch.Tensor | None:
    """The kernel reads channel-major (b, d, l) and time-major (b, l, d)-backed tensors in place;
    anything else is made contiguous."""
    if t is None or t.stride(2) == 1 or t.stride(1) == 1:
        return t
    return t.contiguous()


def _empty_like_layout(t: torch.Tensor) -> torch.Tensor:
    """Uninitialised (b, d, l) tensor with t's layout (time-major or channel-major), so gradients
    come back in the layout their consumers use."""
    b, d, l = t.shape
    if _time_major(t):
        return t.new_empty(b, l, d).transpose(1, 2)  # (b, d, l) view of (b, l, d)
    return t.new_empty(b, d, l)


LANES = 16  # SS_W in the C file: channels per SIMD block
CHUNK = 128  # SS_T in the C file: time steps per chunk


# Below this much work per thread (b * d * l * n state updates, ~0.1 ms) extra threads cost more in
# wake-ups and barriers than they save, especially on a busy machine.
MIN_WORK_PER_THREAD = 1 << 18


def _num_threads(b: int, d: int, l: int, n: int) -> int:
    return threads_for(b * d * l * n, MIN_WORK_PER_THREAD)


def _num_groups(b: int, d: int, threads: int) -> int:
    """d-groups for the backward: enough (b, g) tasks to keep every thread busy (>= 4 per thread)
    while keeping the (g, b, l, n) partial buffers for dB, dC few (each group sums its channels'
    contributions in-kernel)."""
    blocks = -(-d // LANES)  # ceil(d / LANES)
    want = -(-4 * threads // b)  # ceil(4 * threads / b)
    return max(1, min(blocks, want))


class _SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, Bt, Ct, D, z, bias, h0, softplus, return_last_state):
        # all inputs: same dtype (float32 / float64), on CPU; u, delta, z channel- or time-major
        # (see _kernel_layout), the others contiguous; Bt, Ct are (b, l, n)
        b, d, l = u.shape
        n = A.shape[1]
        threads = _num_threads(b, d, l, n)
        out = _empty_like_layout(delta)  # (b, d, l) laid out like delta (Mamba: time-major)
        hlast = u.new_empty(b, d, n) if return_last_state else None  # (b, d, n)
        nchunks = -(-l // CHUNK)
        # chunk-start states for the backward (it skips its own state pass): 1/CHUNK of the states
        ckpt = (u.new_empty(b, -(-d // LANES), nchunks, n, LANES)
                if nchunks > 1 and any(ctx.needs_input_grad) else None)  # (b, d/w, chunks, n, w)
        # (no gradient needed: backward never runs; one chunk: the backward starts from h0)
        rc = kernels.function("ss_fwd", u.dtype)(
            ptr(u), ptr(delta), ptr(A), ptr(Bt), ptr(Ct), ptr(D), ptr(z), ptr(bias),
            ptr(h0), ptr(out), ptr(hlast), ptr(ckpt), _strides(u, delta, z, out), b, d, l, n,
            int(softplus), threads)
        if rc != 0:
            raise MemoryError("selective_scan cpu kernel: scratch allocation failed")
        ctx.save_for_backward(u, delta, A, Bt, Ct, D, z, bias, h0, ckpt)
        ctx.softplus = softplus
        ctx.set_materialize_grads(False)
        return (out, hlast) if return_last_state else out

    @staticmethod
    @once_differentiable  # the backward is a kernel call: no double backward
    def backward(ctx, gout, ghlast=None):
        u, delta, A, Bt, Ct, D, z, bias, h0, ckpt = ctx.saved_tensors
        b, d, l = u.shape
        n = A.shape[1]
        gout = torch.zeros_like(u) if gout is None else _kernel_layout(gout)  # (b, d, l)
        if ghlast is not None:
            ghlast = ghlast.to(u.dtype).contiguous()  # (b, d, n)
        threads = _num_threads(b, d, l, n)
        g = _num_groups(b, d, threads)
        gu = _empty_like_layout(u)  # (b, d, l)
        gdelta = _empty_like_layout(delta)  # (b, d, l)
        gA_part = u.new_empty(b, d, n)  # (b, d, n) summed over b below
        gB_part = u.new_zeros(g, b, l, n)  # (g, b, l, n) summed over g below
        gC_part = u.new_zeros(g, b, l, n)  # (g, b, l, n)
        gD_part = u.new_empty(b, d) if D is not None else None  # (b, d)
        gbias_part = u.new_empty(b, d) if bias is not None else None  # (b, d)
        gz = _empty_like_layout(z) if z is not None else None  # (b, d, l)
        gh0 = u.new_empty(b, d, n) if (h0 is not None and ctx.needs_input_grad[8]) else None
        rc = kernels.function("ss_bwd", u.dtype)(
            ptr(u), ptr(delta), ptr(A), ptr(Bt), ptr(Ct), ptr(D), ptr(z), ptr(bias),
            ptr(h0), ptr(gout), ptr(ghlast), ptr(gu), ptr(gdelta), ptr(gA_part),
            ptr(gB_part), ptr(gC_part), ptr(gD_part), ptr(gz), ptr(gbias_part), ptr(gh0),
            ptr(ckpt), _strides(u, delta, z, gout, gu, gdelta, gz), b, d, l, n, g, int(ctx.softplus),
            threads)
        if rc == -2:
            raise RuntimeError("selective_scan cpu kernel: backward without the forward's checkpoints")
        if rc != 0:
            raise MemoryError("selective_scan cpu kernel: scratch allocation failed")
        gB = gB_part[0] if g == 1 else gB_part.sum(0)  # (b, l, n)
        gC = gC_part[0] if g == 1 else gC_part.sum(0)  # (b, l, n)
        return (gu, gdelta, gA_part.sum(0), gB, gC,
                None if gD_part is None else gD_part.sum(0),
                gz, None if gbias_part is None else gbias_part.sum(0), gh0, None, None)


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                       initial_state=None, return_last_state=False):
    """Fused CPU selective scan; inputs already validated by ``selective_scan``.

    Computes in float32 (float16 / bfloat16 inputs are upcast) or float64; returns y in u's dtype.
    """
    if not kernels.is_available():
        raise RuntimeError(f"selective_scan backend 'cpu' is unavailable: {kernels.unavailable_reason()}")
    dtype = u.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32  # compute dtype

    def prep(t):
        return None if t is None else t.to(ct).contiguous()

    def prep_seq(t):  # (b, d, l) inputs keep a kernel-readable layout: no transposing copies
        return None if t is None else _kernel_layout(t.to(ct))

    Bt = B.to(ct).transpose(1, 2).contiguous()  # (b, l, n)
    Ct = C.to(ct).transpose(1, 2).contiguous()  # (b, l, n)
    res = _SelectiveScanCPU.apply(prep_seq(u), prep_seq(delta), prep(A), Bt, Ct, prep(D),
                                  prep_seq(z), prep(delta_bias), prep(initial_state),
                                  bool(delta_softplus), bool(return_last_state))
    if return_last_state:
        y, h = res
        return y.to(dtype), h.to(dtype)
    return res.to(dtype)
