"""``triton`` backend: the selective scan as two Triton GPU kernels (forward, backward).

Glossary: b batch, d channels (inner width), l length, n state size, bd channels per program
(BLOCK_D), bn n padded to a power of two (BLOCK_N), k checkpoint chunk length (CHUNK),
g number of chunks (ceil(l / k)), nb channel blocks per batch row (ceil(d / bd)).

Both kernels run one program per (batch row, block of bd channels); a program walks the sequence
step by step and keeps its (bd, bn) state in registers, so no (b, l, d, n) tensor is ever written.

Forward, per step t (float32 whatever the input dtype):

    dt   = softplus(delta_t + delta_bias)         torch's softplus: x itself above 20
    h    = exp(dt A) * h + (dt u_t) B_t           (bd, bn)
    y_t  = (<h, C_t> + D u_t) * silu(z_t)

When a gradient will be needed it also stores the state at the start of every chunk of k steps,
ckpt (b, g, d, n) float32: g / l of the states, 1/k of what the (b, l, d, n) history would take.

Backward, chunk by chunk from the last: the chunk's states are recomputed from its checkpoint into
a small per-program scratch (k, bd, bn), then read back in reverse order while the adjoint
dh (bd, bn) of the state runs backwards:

    g    = dy_t * silu(z_t)                      gradient of the pre-gate output
    dh  += g C_t                                 dh is now dL/dh_t
    dC_t = sum_d g h_t           dB_t = sum_d dh (dt u_t)
    du_t = dt <dh, B_t> + D g    ddt  = <dh, B_t u_t + A exp(dt A) h_{t-1}>
    dA  += dh dt exp(dt A) h_{t-1}
    dh   = dh * exp(dt A)                        dL/dh_{t-1}

dB, dC are summed over the channel blocks of a batch row and dA, dD, d(delta_bias) over the batch
from per-program partials in PyTorch afterwards: no atomics, so results are deterministic.

Inputs u, delta, z (and the output gradient) are read in place through their strides; the Mamba
block passes transposed (b, l, d)-backed views, for which a step's bd channels are adjacent in
memory (one coalesced load). y and the sequence gradients are written time-major when delta or u
is, so that common case stays coalesced on the way out too.

dtypes: float16 / bfloat16 / float32 inputs are computed in float32 and y is returned in u's dtype;
float64 is handed to the ``torch`` backend (GPUs run float64 slowly, and it is only used for tests).
This module imports triton at import time: ``selective_scan`` imports it only when asked for this
backend on CUDA tensors, so CPU-only installs never need triton.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

CHUNK = 32  # k: steps per checkpoint; the backward scratch is (k, bd, bn) per program
# torch.nn.functional.softplus's default threshold (a jit function may only read constexpr globals)
SOFTPLUS_THRESHOLD = tl.constexpr(20.0)


# --------------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _softplus(x):
    # log1p(exp(x)) as log(p) * w / (p - 1) with p = 1 + w (Kahan): keeps tiny exp(x) accurate
    # where the naive log(1 + w) rounds to 0; the identity above the threshold matches torch
    w = tl.exp(x)
    p = 1.0 + w
    sp = tl.where(p == 1.0, w, tl.log(p) * (w / (p - 1.0)))
    return tl.where(x > SOFTPLUS_THRESHOLD, x, sp)


@triton.jit
def _scan_fwd_kernel(
    u_ptr, dl_ptr, z_ptr, y_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, h0_ptr, last_ptr, ckpt_ptr,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l, sy_b, sy_d, sy_l,
    sB_b, sB_n, sB_l, sC_b, sC_n, sC_l,
    DIM, L, N, NCHUNK,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK_LEN: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, SAVE_CKPT: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)  # int64: batch offsets can pass 2^31 elements
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (bd,)
    offs_n = tl.arange(0, BLOCK_N)  # (bn,)
    mask_d = offs_d < DIM
    mask_dn = mask_d[:, None] & (offs_n < N)[None, :]  # (bd, bn)
    dn = offs_d[:, None] * N + offs_n[None, :]  # (bd, bn) offsets in a contiguous (d, n)

    # padded lanes read A = 0, B = C = 0, u = 0: their state stays 0 and nothing is stored
    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0)  # (bd, bn) float32
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0)  # (bd,)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)  # (bd,)
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * DIM * N + dn, mask=mask_dn, other=0.0)  # (bd, bn)
    else:
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # (bd, bn)

    u_p = u_ptr + pid_b * su_b + offs_d * su_d  # (bd,) pointers at t = 0
    dl_p = dl_ptr + pid_b * sdl_b + offs_d * sdl_d  # (bd,)
    y_p = y_ptr + pid_b * sy_b + offs_d * sy_d  # (bd,)
    B_p = B_ptr + pid_b * sB_b + offs_n * sB_n  # (bn,)
    C_p = C_ptr + pid_b * sC_b + offs_n * sC_n  # (bn,)
    mask_n = offs_n < N
    if HAS_Z:
        z_p = z_ptr + pid_b * sz_b + offs_d * sz_d  # (bd,)

    # The loop is latency-bound (one dependent chain of steps), so step t + 1's inputs are loaded
    # while step t computes: the loads carry over the loop instead of stalling each iteration.
    u_n = tl.load(u_p, mask=mask_d, other=0.0)
    dl_n = tl.load(dl_p, mask=mask_d, other=0.0)
    B_n = tl.load(B_p, mask=mask_n, other=0.0)
    C_n = tl.load(C_p, mask=mask_n, other=0.0)
    if HAS_Z:
        z_n = tl.load(z_p, mask=mask_d, other=0.0)
    for t in range(L):
        if SAVE_CKPT:  # noqa: SIM102  a constexpr branch, compiled out when False
            if t % CHUNK_LEN == 0:  # state before the chunk's first step
                tl.store(ckpt_ptr + (pid_b * NCHUNK + t // CHUNK_LEN) * DIM * N + dn, h,
                         mask=mask_dn)
        u = u_n.to(tl.float32)  # (bd,)
        x = dl_n.to(tl.float32)  # (bd,)
        Bt = B_n.to(tl.float32)  # (bn,)
        Ct = C_n.to(tl.float32)  # (bn,)
        if HAS_Z:
            zt = z_n.to(tl.float32)  # (bd,)
        nxt = t + 1
        more = nxt < L
        u_n = tl.load(u_p + nxt * su_l, mask=mask_d & more, other=0.0)
        dl_n = tl.load(dl_p + nxt * sdl_l, mask=mask_d & more, other=0.0)
        B_n = tl.load(B_p + nxt * sB_l, mask=mask_n & more, other=0.0)
        C_n = tl.load(C_p + nxt * sC_l, mask=mask_n & more, other=0.0)
        if HAS_Z:
            z_n = tl.load(z_p + nxt * sz_l, mask=mask_d & more, other=0.0)

        if HAS_BIAS:
            x = x + bias
        if SOFTPLUS:
            dt = _softplus(x)  # (bd,)
        else:
            dt = x
        h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]  # (bd, bn)
        y = tl.sum(h * Ct[None, :], axis=1)  # (bd,)
        if HAS_D:
            y = y + Dv * u
        if HAS_Z:
            y = y * (zt * tl.sigmoid(zt))
        tl.store(y_p + t * sy_l, y.to(y_ptr.dtype.element_ty), mask=mask_d)

    tl.store(last_ptr + pid_b * DIM * N + dn, h, mask=mask_dn)  # (b, d, n) float32


@triton.jit
def _scan_bwd_kernel(
    u_ptr, dl_ptr, z_ptr, dy_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, ckpt_ptr, dlast_ptr,
    du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, scratch_ptr,
    su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l, sdy_b, sdy_d, sdy_l,
    sdu_b, sdu_d, sdu_l, sddl_b, sddl_d, sddl_l, sdz_b, sdz_d, sdz_l,
    sB_b, sB_n, sB_l, sC_b, sC_n, sC_l,
    DIM, L, N, NCHUNK, NBLK,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK_LEN: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, WANT_DH0: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (bd,)
    offs_n = tl.arange(0, BLOCK_N)  # (bn,)
    mask_d = offs_d < DIM
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]  # (bd, bn)
    dn = offs_d[:, None] * N + offs_n[None, :]  # (bd, bn) offsets in a contiguous (d, n)

    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0)  # (bd, bn)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0)  # (bd,)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)  # (bd,)
    if HAS_DLAST:
        dh = tl.load(dlast_ptr + pid_b * DIM * N + dn, mask=mask_dn, other=0.0)  # (bd, bn)
    else:
        dh = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # (bd, bn)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # (bd, bn)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)  # (bd,)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)  # (bd,)

    u_p = u_ptr + pid_b * su_b + offs_d * su_d  # (bd,) pointers at t = 0
    dl_p = dl_ptr + pid_b * sdl_b + offs_d * sdl_d
    dy_p = dy_ptr + pid_b * sdy_b + offs_d * sdy_d
    du_p = du_ptr + pid_b * sdu_b + offs_d * sdu_d
    ddl_p = ddl_ptr + pid_b * sddl_b + offs_d * sddl_d
    if HAS_Z:
        z_p = z_ptr + pid_b * sz_b + offs_d * sz_d
        dz_p = dz_ptr + pid_b * sdz_b + offs_d * sdz_d
    B_p = B_ptr + pid_b * sB_b + offs_n * sB_n  # (bn,)
    C_p = C_ptr + pid_b * sC_b + offs_n * sC_n  # (bn,)
    # this program's partial dB / dC rows: (b, nb, l, n) float32, row t at + t * N
    dBC_off = ((pid_b * NBLK + pid_d) * L) * N + offs_n  # (bn,)
    # this program's scratch: CHUNK_LEN contiguous (bd, bn) tiles
    local = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + offs_n[None, :]  # (bd, bn)
    scr = scratch_ptr + (pid_b * NBLK + pid_d) * CHUNK_LEN * BLOCK_D * BLOCK_N + local  # (bd, bn)

    for cc in range(NCHUNK):
        c = NCHUNK - 1 - cc
        t0 = c * CHUNK_LEN
        steps = tl.minimum(L - t0, CHUNK_LEN)
        h = tl.load(ckpt_ptr + (pid_b * NCHUNK + c) * DIM * N + dn, mask=mask_dn, other=0.0)
        # the previous chunk's reverse pass must have read the scratch before it is rewritten;
        # every thread reads back what it wrote itself (same layout), but the barrier does not
        # depend on the compiler choosing the same layout for both loops
        tl.debug_barrier()

        # 1. recompute the chunk forward, keeping h_{t-1} (the state before step t) per step
        for j in range(steps):
            t = t0 + j
            tl.store(scr + j * BLOCK_D * BLOCK_N, h)
            u = tl.load(u_p + t * su_l, mask=mask_d, other=0.0).to(tl.float32)  # (bd,)
            x = tl.load(dl_p + t * sdl_l, mask=mask_d, other=0.0).to(tl.float32)  # (bd,)
            Bt = tl.load(B_p + t * sB_l, mask=mask_n, other=0.0).to(tl.float32)  # (bn,)
            if HAS_BIAS:
                x = x + bias
            if SOFTPLUS:
                dt = _softplus(x)
            else:
                dt = x
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]  # (bd, bn)
        tl.debug_barrier()

        # 2. walk the chunk backwards
        for jj in range(steps):
            j = steps - 1 - jj
            t = t0 + j
            h_prev = tl.load(scr + j * BLOCK_D * BLOCK_N)  # (bd, bn) h_{t-1}
            u = tl.load(u_p + t * su_l, mask=mask_d, other=0.0).to(tl.float32)  # (bd,)
            x = tl.load(dl_p + t * sdl_l, mask=mask_d, other=0.0).to(tl.float32)  # (bd,)
            dy = tl.load(dy_p + t * sdy_l, mask=mask_d, other=0.0).to(tl.float32)  # (bd,)
            Bt = tl.load(B_p + t * sB_l, mask=mask_n, other=0.0).to(tl.float32)  # (bn,)
            Ct = tl.load(C_p + t * sC_l, mask=mask_n, other=0.0).to(tl.float32)  # (bn,)
            if HAS_BIAS:
                x = x + bias
            if SOFTPLUS:
                dt = _softplus(x)
            else:
                dt = x
            dA_t = tl.exp(dt[:, None] * A)  # (bd, bn)
            dtu = dt * u  # (bd,)
            h = dA_t * h_prev + dtu[:, None] * Bt[None, :]  # (bd, bn) h_t

            if HAS_Z:
                zt = tl.load(z_p + t * sz_l, mask=mask_d, other=0.0).to(tl.float32)  # (bd,)
                sig = tl.sigmoid(zt)
                y = tl.sum(h * Ct[None, :], axis=1)  # (bd,) pre-gate output, recomputed
                if HAS_D:
                    y = y + Dv * u
                # d silu(z) / dz = sigmoid(z) (1 + z (1 - sigmoid(z)))
                dz = dy * y * sig * (1.0 + zt * (1.0 - sig))
                tl.store(dz_p + t * sdz_l, dz.to(dz_ptr.dtype.element_ty), mask=mask_d)
                g = dy * (zt * sig)  # (bd,)
            else:
                g = dy

            dh += g[:, None] * Ct[None, :]  # (bd, bn) dL/dh_t
            tl.store(dC_ptr + dBC_off + t * N, tl.sum(g[:, None] * h, axis=0), mask=mask_n)
            tl.store(dB_ptr + dBC_off + t * N, tl.sum(dh * dtu[:, None], axis=0), mask=mask_n)
            du = dt * tl.sum(dh * Bt[None, :], axis=1)  # (bd,)
            if HAS_D:
                du += Dv * g
                dD_acc += g * u
            decay_h = dA_t * h_prev  # (bd, bn)
            ddt = tl.sum(dh * (u[:, None] * Bt[None, :] + A * decay_h), axis=1)  # (bd,)
            dA_acc += dh * (dt[:, None] * decay_h)
            dh = dh * dA_t  # (bd, bn) dL/dh_{t-1}

            if SOFTPLUS:
                # torch's softplus backward: 1 above the threshold, sigmoid(x) below
                ddt = tl.where(x > SOFTPLUS_THRESHOLD, ddt, ddt * tl.sigmoid(x))
            dbias_acc += ddt
            tl.store(du_p + t * sdu_l, du.to(du_ptr.dtype.element_ty), mask=mask_d)
            tl.store(ddl_p + t * sddl_l, ddt.to(ddl_ptr.dtype.element_ty), mask=mask_d)

    # per-batch-row partials, summed over b by the caller
    tl.store(dA_ptr + pid_b * DIM * N + dn, dA_acc, mask=mask_dn)  # (b, d, n)
    if HAS_D:
        tl.store(dD_ptr + pid_b * DIM + offs_d, dD_acc, mask=mask_d)  # (b, d)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * DIM + offs_d, dbias_acc, mask=mask_d)  # (b, d)
    if WANT_DH0:
        tl.store(dh0_ptr + pid_b * DIM * N + dn, dh, mask=mask_dn)  # (b, d, n)


# --------------------------------------------------------------------------------------------------
# launch helpers


def _blocks(n: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, num_warps): about 512 state elements per program, 4 per thread."""
    block_n = max(4, triton.next_power_of_2(n))
    block_d = min(64, max(16, 512 // block_n))
    num_warps = max(1, min(8, block_d * block_n // 128))
    return block_d, block_n, num_warps


def _time_major(t: torch.Tensor | None) -> bool:
    """A (b, d, l) tensor whose channels are adjacent (a transposed (b, l, d) one)."""
    return t is not None and t.stride(1) == 1 and t.stride(2) != 1


def _empty_seq(like: torch.Tensor, time_major: bool, dtype=None) -> torch.Tensor:
    """Uninitialised (b, d, l) tensor, time-major ((b, l, d) storage) or channel-major."""
    b, d, l = like.shape
    dtype = like.dtype if dtype is None else dtype
    if time_major:
        return torch.empty(b, l, d, dtype=dtype, device=like.device).transpose(1, 2)
    return torch.empty(b, d, l, dtype=dtype, device=like.device)


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.float32).contiguous()


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, bias, h0, softplus):
        # u, delta, z, B, C: one dtype, any strides; A, D, bias, h0: that dtype or float32
        b, d, l = u.shape
        n = A.shape[1]
        block_d, block_n, num_warps = _blocks(n)
        nchunk = triton.cdiv(l, CHUNK)
        save = any(ctx.needs_input_grad)
        A32, D32, bias32, h032 = _f32(A), _f32(D), _f32(bias), _f32(h0)  # (d, n), (d,), (d,), (b, d, n)

        y = _empty_seq(u, _time_major(delta) or _time_major(u))  # (b, d, l) in u's dtype
        last = torch.empty(b, d, n, dtype=torch.float32, device=u.device)  # (b, d, n)
        # the chunk checkpoints only when a backward will read them
        ckpt = (torch.empty(b, nchunk, d, n, dtype=torch.float32, device=u.device) if save
                else last)  # (b, g, d, n)
        dummy = u  # stands in for absent optional tensors; the kernel never reads it
        zz = z if z is not None else dummy
        grid = (b, triton.cdiv(d, block_d))
        _scan_fwd_kernel[grid](
            u, delta, zz, y, B, C, A32,
            D32 if D32 is not None else A32, bias32 if bias32 is not None else A32,
            h032 if h032 is not None else A32, last, ckpt,
            *u.stride(), *delta.stride(), *zz.stride(), *y.stride(), *B.stride(), *C.stride(),
            d, l, n, nchunk,
            BLOCK_D=block_d, BLOCK_N=block_n, CHUNK_LEN=CHUNK,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None,
            HAS_H0=h0 is not None, SOFTPLUS=bool(softplus), SAVE_CKPT=save,
            num_warps=num_warps,
        )
        if save:
            ctx.save_for_backward(u, delta, A32, B, C, D32, z, bias32, ckpt)
            ctx.softplus = bool(softplus)
            ctx.param_dtypes = (A.dtype, None if D is None else D.dtype,
                                None if bias is None else bias.dtype,
                                None if h0 is None else h0.dtype)
        ctx.set_materialize_grads(False)
        return y, last.to(u.dtype)

    @staticmethod
    @once_differentiable  # the backward is a kernel launch: no double backward
    def backward(ctx, dy, dlast):
        u, delta, A32, B, C, D32, z, bias32, ckpt = ctx.saved_tensors
        A_dtype, D_dtype, bias_dtype, h0_dtype = ctx.param_dtypes
        b, d, l = u.shape
        n = A32.shape[1]
        block_d, block_n, num_warps = _blocks(n)
        nchunk = ckpt.shape[1]
        nblk = triton.cdiv(d, block_d)
        dev = u.device
        if dy is None:
            dy = torch.zeros_like(u)
        dlast32 = _f32(dlast)  # (b, d, n)

        du = _empty_seq(u, _time_major(u))  # (b, d, l) gradients keep their input's layout
        ddelta = _empty_seq(delta, _time_major(delta))
        dz = _empty_seq(z, _time_major(z)) if z is not None else None
        dB_part = torch.empty(b, nblk, l, n, dtype=torch.float32, device=dev)  # (b, nb, l, n)
        dC_part = torch.empty(b, nblk, l, n, dtype=torch.float32, device=dev)  # (b, nb, l, n)
        dA_part = torch.empty(b, d, n, dtype=torch.float32, device=dev)  # (b, d, n)
        dD_part = torch.empty(b, d, dtype=torch.float32, device=dev) if D32 is not None else None
        dbias_part = (torch.empty(b, d, dtype=torch.float32, device=dev)
                      if bias32 is not None else None)  # (b, d)
        want_dh0 = h0_dtype is not None and ctx.needs_input_grad[8]
        dh0 = torch.empty(b, d, n, dtype=torch.float32, device=dev) if want_dh0 else None
        scratch = torch.empty(b * nblk * CHUNK * block_d * block_n, dtype=torch.float32,
                              device=dev)  # (b, nb, k, bd, bn) flat

        zz, dzz = (z, dz) if z is not None else (u, du)  # stand-ins, never touched
        grid = (b, nblk)
        _scan_bwd_kernel[grid](
            u, delta, zz, dy, B, C, A32,
            D32 if D32 is not None else A32, bias32 if bias32 is not None else A32,
            ckpt, dlast32 if dlast32 is not None else A32,
            du, ddelta, dzz, dB_part, dC_part, dA_part,
            dD_part if dD_part is not None else dA_part,
            dbias_part if dbias_part is not None else dA_part,
            dh0 if dh0 is not None else dA_part, scratch,
            *u.stride(), *delta.stride(), *zz.stride(), *dy.stride(),
            *du.stride(), *ddelta.stride(), *dzz.stride(), *B.stride(), *C.stride(),
            d, l, n, nchunk, nblk,
            BLOCK_D=block_d, BLOCK_N=block_n, CHUNK_LEN=CHUNK,
            HAS_D=D32 is not None, HAS_Z=z is not None, HAS_BIAS=bias32 is not None,
            SOFTPLUS=ctx.softplus, HAS_DLAST=dlast32 is not None, WANT_DH0=want_dh0,
            num_warps=num_warps,
        )
        dB = dB_part.sum(1).transpose(1, 2).to(B.dtype)  # (b, n, l)
        dC = dC_part.sum(1).transpose(1, 2).to(C.dtype)  # (b, n, l)
        return (du, ddelta, dA_part.sum(0).to(A_dtype), dB, dC,
                None if dD_part is None else dD_part.sum(0).to(D_dtype), dz,
                None if dbias_part is None else dbias_part.sum(0).to(bias_dtype),
                None if dh0 is None else dh0.to(h0_dtype), None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                          initial_state=None, return_last_state=False):
    """Selective scan with Triton kernels; inputs already validated by ``selective_scan`` and on a
    CUDA device. float16 / bfloat16 / float32 are computed in float32 and y is returned in u's
    dtype (the last state too); float64 goes to the ``torch`` backend."""
    if u.dtype == torch.float64:
        from .torch_scan import selective_scan_torch

        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    initial_state, return_last_state)
    y, last = _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                         bool(delta_softplus))
    return (y, last) if return_last_state else y
