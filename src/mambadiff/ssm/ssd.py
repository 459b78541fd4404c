"""SSD (state space duality, Mamba-2): the recurrence with one scalar decay per head, three ways.

Glossary: b batch, l length, h heads, p head dim, n state size, c number of chunks, q chunk length.

Recurrence per head (state (p, n); B, C shared by all heads, ngroups = 1):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        x_t (p,), B_t, C_t (n,)
    y_t = h_t C_t + D * x_t

- ``ssd_reference``: the plain sequential loop, the oracle the others are tested against.
- ``ssd_chunked``: the chunked matmul algorithm of the paper (any device; the GPU path). Inside a
  chunk of q tokens the output is a masked attention-like matmul (C B^T weighted by a decay matrix
  built with a stable segment sum in log space); across chunks only the (h, p, n) states are passed.
- ``ssd_scan_cpu``: the fused C kernel (ssd_scan.c of ``mambadiff.kernels``). Because the
  decay is one scalar per (token, head), a state update costs two multiply-adds and the output one,
  with no exp per state element (S6 needs one). Forward and a recomputing backward; the forward keeps
  only the state at every chunk start. float32 / float64 (half precision is computed in float32).

``ssd(..., algorithm=)`` picks one: ``auto`` is the C kernel for CPU tensors when it builds, else
``chunked``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .checks import at_least_f32, check_positive_int
from .. import kernels

__all__ = ["SSD_ALGORITHMS", "resolve_algorithm", "ssd", "ssd_chunked", "ssd_reference", "ssd_scan_cpu",
           "ssd_scan_cpu_packed", "segsum"]

SSD_ALGORITHMS = ("auto", "chunked", "cpu", "reference")

# Scratch of a backward task: (q + 2) states of n * p values; about 128 kB keeps it in L2.
SCRATCH_ELEMENTS = 1 << 15
# Below this many state updates per thread, extra threads cost more than they save.
MIN_WORK_PER_THREAD = 1 << 18


# --------------------------------------------------------------------------- checks


def _check_ssd_inputs(x, dt, A, B, C, D, initial_state) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must have shape (b, l, h, p), got {tuple(x.shape)}")
    b, l, h, p = x.shape
    if tuple(dt.shape) != (b, l, h):
        raise ValueError(f"dt must have shape (b, l, h)=({b}, {l}, {h}), got {tuple(dt.shape)}")
    if tuple(A.shape) != (h,):
        raise ValueError(f"A must have shape (h,)=({h},), got {tuple(A.shape)}")
    if B.ndim != 3 or tuple(B.shape[:2]) != (b, l):
        raise ValueError(f"B must have shape (b, l, n) with (b, l)=({b}, {l}), "
                         f"got {tuple(B.shape)}")
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f"C must have the shape of B {tuple(B.shape)}, got {tuple(C.shape)}")
    if D is not None and tuple(D.shape) != (h,):
        raise ValueError(f"D must have shape (h,)=({h},), got {tuple(D.shape)}")
    n = B.shape[-1]
    if initial_state is not None and tuple(initial_state.shape) != (b, h, p, n):
        raise ValueError(f"initial_state must have shape (b, h, p, n)=({b}, {h}, {p}, {n}), "
                         f"got {tuple(initial_state.shape)}")


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Segment sums of log-decays: a (..., t) -> S (..., t, t) with

        S[..., i, j] = a[j+1] + ... + a[i]   for i >= j  (0 on the diagonal)
        S[..., i, j] = -inf                  for i <  j  (exp gives the causal zero)

    Computed as a cumulative sum of masked copies rather than as cumsum[i] - cumsum[j], which
    would subtract two large numbers and lose all precision for long, strongly decaying spans.
    """
    t = a.shape[-1]
    strictly_lower = torch.ones(t, t, dtype=torch.bool, device=a.device).tril(-1)  # (t, t)
    rep = a.unsqueeze(-1).expand(*a.shape, t)  # (..., t, t)  rep[..., k, j] = a[k]
    rep = rep.masked_fill(~strictly_lower, 0.0)  # keep a[k] only for k > j
    s = rep.cumsum(dim=-2)  # (..., t, t)  s[..., i, j] = sum_{j < k <= i} a[k]
    lower = torch.ones(t, t, dtype=torch.bool, device=a.device).tril(0)  # (t, t)
    return s.masked_fill(~lower, -math.inf)  # (..., t, t)


def ssd_chunked(
    x: torch.Tensor,  # (b, l, h, p)
    dt: torch.Tensor,  # (b, l, h) already positive (after softplus)
    A: torch.Tensor,  # (h,) negative
    B: torch.Tensor,  # (b, l, n)
    C: torch.Tensor,  # (b, l, n)
    chunk_size: int = 64,
    D: torch.Tensor | None = None,  # (h,)
    initial_state: torch.Tensor | None = None,  # (b, h, p, n)
    return_final_state: bool = False,
):
    """SSD by the chunked matmul algorithm. Returns y (b, l, h, p) [, final state (b, h, p, n)].

    l need not be a multiple of ``chunk_size``: the tail is padded with dt = 0 and x = 0, which
    neither decays nor feeds the state, so the final state is unaffected. Half-precision inputs
    are computed in float32 and y is returned in x's dtype.
    """
    _check_ssd_inputs(x, dt, A, B, C, D, initial_state)
    check_positive_int("chunk_size", chunk_size)
    out_dtype = x.dtype
    x, dt, A, B, C = (at_least_f32(t) for t in (x, dt, A, B, C))
    b, l, h, p = x.shape
    n = B.shape[-1]
    q = chunk_size
    pad = (-l) % q
    x_in = x
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))  # (b, l', h, p)
        dt = F.pad(dt, (0, 0, 0, pad))  # (b, l', h)
        B = F.pad(B, (0, 0, 0, pad))  # (b, l', n)
        C = F.pad(C, (0, 0, 0, pad))  # (b, l', n)
    c = (l + pad) // q

    X = (x * dt.unsqueeze(-1)).reshape(b, c, q, h, p)  # (b, c, q, h, p) input scaled by dt
    a = (dt * A).reshape(b, c, q, h).permute(0, 3, 1, 2)  # (b, h, c, q) log-decay per token
    Bc = B.reshape(b, c, q, n)  # (b, c, q, n)
    Cc = C.reshape(b, c, q, n)  # (b, c, q, n)

    # 1) intra-chunk: y_i = sum_{j<=i} (C_i . B_j) exp(a_{j+1} + ... + a_i) X_j
    L = torch.exp(segsum(a))  # (b, h, c, q, q)
    scores = Cc @ Bc.transpose(-1, -2)  # (b, c, q, q)  [i, j] = C_i . B_j
    M = scores.unsqueeze(1) * L  # (b, h, c, q, q)
    y_diag = torch.einsum("bhcij,bcjhp->bcihp", M, X)  # (b, c, q, h, p)

    # 2) state contributed by each chunk on its own, at the chunk's end
    decay_to_end = L[..., -1, :]  # (b, h, c, q)  exp(a_{j+1} + ... + a_{q-1})
    Xw = X * decay_to_end.permute(0, 2, 3, 1).unsqueeze(-1)  # (b, c, q, h, p)
    chunk_states = torch.einsum("bcjhp,bcjn->bchpn", Xw, Bc)  # (b, c, h, p, n)

    # 3) inter-chunk: pass states along chunks, S_{z} = sum_{c' < z} decay(c'..z) * states_{c'}
    if initial_state is None:
        initial_state = x.new_zeros(b, h, p, n)  # (b, h, p, n)
    all_states = torch.cat([at_least_f32(initial_state).to(x.dtype).unsqueeze(1),
                            chunk_states], dim=1)  # (b, c+1, h, p, n)
    chunk_decay = F.pad(a.sum(-1), (1, 0))  # (b, h, c+1)  total log-decay of each chunk
    decay_chunk = torch.exp(segsum(chunk_decay))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, all_states)  # (b, c+1, h, p, n)
    prev_states = states[:, :-1]  # (b, c, h, p, n) state entering each chunk
    final_state = states[:, -1]  # (b, h, p, n)

    # 4) contribution of the entering state to each position: C_i . (decay(0..i) * S)
    decay_from_start = torch.exp(a.cumsum(-1)).permute(0, 2, 3, 1)  # (b, c, q, h)
    y_off = torch.einsum("bcin,bchpn->bcihp", Cc, prev_states)  # (b, c, q, h, p)
    y_off = y_off * decay_from_start.unsqueeze(-1)  # (b, c, q, h, p)

    y = (y_diag + y_off).reshape(b, c * q, h, p)[:, :l]  # (b, l, h, p)
    if D is not None:
        y = y + x_in * at_least_f32(D)[:, None]  # (b, l, h, p)
    y = y.to(out_dtype)
    return (y, final_state) if return_final_state else y


def ssd_reference(
    x: torch.Tensor,  # (b, l, h, p)
    dt: torch.Tensor,  # (b, l, h)
    A: torch.Tensor,  # (h,)
    B: torch.Tensor,  # (b, l, n)
    C: torch.Tensor,  # (b, l, n)
    D: torch.Tensor | None = None,  # (h,)
    initial_state: torch.Tensor | None = None,  # (b, h, p, n)
    return_final_state: bool = False,
):
    """SSD as a plain sequential loop (the oracle). Returns y (b, l, h, p) [, state (b, h, p, n)]."""
    _check_ssd_inputs(x, dt, A, B, C, D, initial_state)
    b, l, h, p = x.shape
    n = B.shape[-1]
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state  # (b, h, p, n)
    ys = []
    for t in range(l):
        dA = torch.exp(dt[:, t] * A)  # (b, h)
        dBx = (dt[:, t, :, None] * x[:, t]).unsqueeze(-1) * B[:, t, None, None, :]  # (b, h, p, n)
        state = dA[..., None, None] * state + dBx  # (b, h, p, n)
        ys.append((state * C[:, t, None, None, :]).sum(-1))  # (b, h, p)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)  # (b, l, h, p)
    if D is not None:
        y = y + x * D[:, None]  # (b, l, h, p)
    return (y, state) if return_final_state else y




# --------------------------------------------------------------------------- fused CPU kernel


def _chunk_len(n: int, p: int) -> int:
    """Steps per chunk (checkpoint interval): the backward's scratch of (q + 2) (n, p) states stays
    about SCRATCH_ELEMENTS."""
    return max(8, min(64, SCRATCH_ELEMENTS // (n * p)))


def _num_groups(b: int, h: int, threads: int) -> int:
    """Head groups for the backward: enough (group, b) tasks for every thread (>= 4 per thread),
    few partial (g, b, l, n) buffers for dB and dC."""
    return max(1, min(h, -(-4 * threads // b)))


class _SSDScanCPU(torch.autograd.Function):
    """Takes x, B, C packed as one (b, l, h*p + 2n) tensor, the layout of the Mamba-2 block's conv
    output, and returns their gradient as one tensor too (no split / concatenation in autograd). With
    ``want_last`` it also returns the state after the kernel's last step, (b, h, p, n), which takes
    no gradient."""

    @staticmethod
    def forward(ctx, xbc, dt, A, D, n, reverse, want_last):
        # xbc (b, l, h*p + 2n), dt (b, l, h): unit last stride; A, D (h,) contiguous; n state size;
        # reverse: the recurrence runs from the last step to the first, reading and writing in place
        b, l, width = xbc.shape
        h = dt.shape[2]
        e = width - 2 * n
        p = e // h
        x, B, C = xbc[..., :e], xbc[..., e:e + n], xbc[..., e + n:]  # views
        q = _chunk_len(n, p)
        nchunks = -(-l // q)
        y = xbc.new_empty(b, l, e)  # (b, l, h*p)
        ckpt = (xbc.new_empty(b, h, nchunks, n, p) if nchunks > 1 and any(ctx.needs_input_grad)
                else None)  # (b, h, chunks, n, p) state entering every chunk, for the backward
        last = xbc.new_empty(b, h, p, n) if want_last else None  # (b, h, p, n) the step() layout
        o = lambda t: kernels.time_origin(t, reverse)  # noqa: E731
        rc = kernels.function("ssd_fwd", xbc.dtype)(
            o(x), o(dt), A.data_ptr(), o(B), o(C),
            kernels.ptr(D), o(y),
            kernels.ptr(ckpt), kernels.ptr(last), kernels.batch_time_strides(x, dt, B, C, y, reverse=reverse),
            b, l, h, p, n, q,
            kernels.threads_for(b * l * e * n, MIN_WORK_PER_THREAD))
        if rc != 0:
            raise MemoryError("ssd cpu kernel: scratch allocation failed")
        ctx.save_for_backward(xbc, dt, A, D, ckpt)
        ctx.n, ctx.reverse = n, reverse
        if last is None:
            return y
        ctx.mark_non_differentiable(last)
        return y, last

    @staticmethod
    @once_differentiable  # the backward is a kernel call: no double backward
    def backward(ctx, gy, _glast=None):
        xbc, dt, A, D, ckpt = ctx.saved_tensors
        b, l, width = xbc.shape
        h, n = dt.shape[2], ctx.n
        e = width - 2 * n
        p = e // h
        x, B, C = xbc[..., :e], xbc[..., e:e + n], xbc[..., e + n:]  # views
        q = _chunk_len(n, p)
        threads = kernels.threads_for(2 * b * l * e * n, MIN_WORK_PER_THREAD)
        g = _num_groups(b, h, threads)
        gy = kernels.unit_last_stride(gy)  # (b, l, h*p)
        gxbc = xbc.new_empty(b, l, width)  # (b, l, h*p + 2n)
        gx = gxbc[..., :e]  # (b, l, h*p) view: the kernel writes it in place
        gdt = xbc.new_empty(b, l, h)  # (b, l, h)
        gA_part = xbc.new_empty(b, h)  # (b, h) summed over b below
        gB_part = xbc.new_zeros(g, b, l, n)  # (g, b, l, n) summed over g below
        gC_part = xbc.new_zeros(g, b, l, n)  # (g, b, l, n)
        gD_part = xbc.new_empty(b, h) if D is not None else None  # (b, h)
        rev = ctx.reverse
        o = lambda t: kernels.time_origin(t, rev)  # noqa: E731
        rc = kernels.function("ssd_bwd", xbc.dtype)(
            o(x), o(dt), A.data_ptr(), o(B), o(C),
            kernels.ptr(D), o(gy),
            kernels.ptr(ckpt), o(gx), o(gdt),
            gA_part.data_ptr(), gB_part.data_ptr(), gC_part.data_ptr(),
            kernels.ptr(gD_part), kernels.batch_time_strides(x, dt, B, C, gy, gx, gdt, reverse=rev),
            b, l, h, p, n, q, g, threads)
        if rc == -2:
            raise RuntimeError("ssd cpu kernel: backward without the forward's checkpoints")
        if rc != 0:
            raise MemoryError("ssd cpu kernel: scratch allocation failed")
        # the partial dB, dC buffers are indexed by the kernel's step: reversed order when rev
        gB, gC = gB_part.sum(0), gC_part.sum(0)  # (b, l, n), (b, l, n)
        gxbc[..., e:e + n] = gB.flip(1) if rev else gB
        gxbc[..., e + n:] = gC.flip(1) if rev else gC
        return gxbc, gdt, gA_part.sum(0), None if gD_part is None else gD_part.sum(0), None, None, None


def ssd_scan_cpu_packed(xbc: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                        D: torch.Tensor | None, n: int, reverse: bool = False,
                        return_final_state: bool = False):
    """SSD by the fused C kernel on the packed layout: xbc (b, l, h*p + 2n) holds x, B, C side by
    side (the Mamba-2 block's conv output), dt (b, l, h), A, D (h,). Returns y (b, l, h*p) in xbc's
    dtype; the gradient of xbc comes back as one tensor.

    reverse=True runs the recurrence from each sequence's last step to its first: the SSD of the
    time-flipped inputs, flipped back, computed in place without the flipped copies.

    return_final_state=True: also the state after the last step (b, h, p, n) in the compute dtype
    (float32 / float64), the layout of ``Mamba2State.ssm_state``; no gradient flows through it."""
    if xbc.device.type != "cpu":
        raise ValueError(f"algorithm 'cpu' needs CPU tensors, got x on {xbc.device}")
    if not kernels.is_available():
        raise RuntimeError(f"ssd algorithm 'cpu' is unavailable: {kernels.unavailable_reason()}")
    b, l, width = xbc.shape
    h = dt.shape[-1]
    if tuple(dt.shape) != (b, l, h) or (width - 2 * n) <= 0 or (width - 2 * n) % h:
        raise ValueError(f"xbc (b, l, h*p + 2n) = {tuple(xbc.shape)} with n={n} does not fit "
                         f"dt (b, l, h) = {tuple(dt.shape)}")
    dtype = xbc.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32  # compute dtype
    out = _SSDScanCPU.apply(kernels.unit_last_stride(xbc.to(ct)), kernels.unit_last_stride(dt.to(ct)),
                            A.to(ct).contiguous(), None if D is None else D.to(ct).contiguous(),
                            int(n), bool(reverse), bool(return_final_state))  # y (b, l, h*p) [, (b, h, p, n)]
    if return_final_state:
        return out[0].to(dtype), out[1]
    return out.to(dtype)


def ssd_scan_cpu(
    x: torch.Tensor,  # (b, l, h, p)
    dt: torch.Tensor,  # (b, l, h) already positive
    A: torch.Tensor,  # (h,)
    B: torch.Tensor,  # (b, l, n)
    C: torch.Tensor,  # (b, l, n)
    D: torch.Tensor | None = None,  # (h,)
) -> torch.Tensor:
    """SSD by the fused C kernel. Returns y (b, l, h, p) in x's dtype. Packs x, B, C into one
    tensor first (one copy); the Mamba-2 block calls ``ssd_scan_cpu_packed`` on its own layout."""
    b, l, h, p = x.shape
    xbc = torch.cat([x.reshape(b, l, h * p), B.to(x.dtype), C.to(x.dtype)], dim=-1)  # (b, l, h*p + 2n)
    return ssd_scan_cpu_packed(xbc, dt, A, D, B.shape[-1]).unflatten(-1, (h, p))


def resolve_algorithm(algorithm: str, device: torch.device) -> str:
    """``auto`` -> ``cpu`` for CPU tensors when the kernel builds, else ``chunked``."""
    if algorithm not in SSD_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {SSD_ALGORITHMS}, got {algorithm!r}")
    if algorithm == "auto":
        return "cpu" if device.type == "cpu" and kernels.is_available() else "chunked"
    return algorithm


# --------------------------------------------------------------------------- dispatch


def ssd(
    x: torch.Tensor,  # (b, l, h, p)
    dt: torch.Tensor,  # (b, l, h) already positive
    A: torch.Tensor,  # (h,)
    B: torch.Tensor,  # (b, l, n)
    C: torch.Tensor,  # (b, l, n)
    D: torch.Tensor | None = None,  # (h,)
    algorithm: str = "auto",
    chunk_size: int = 64,
) -> torch.Tensor:
    """y (b, l, h, p) by the chosen algorithm (see the module docstring)."""
    algorithm = resolve_algorithm(algorithm, x.device)
    _check_ssd_inputs(x, dt, A, B, C, D, None)
    if algorithm == "cpu":
        return ssd_scan_cpu(x, dt, A, B, C, D)
    if algorithm == "reference":
        return ssd_reference(x, dt, A, B, C, D)
    return ssd_chunked(x, dt, A, B, C, chunk_size, D)
