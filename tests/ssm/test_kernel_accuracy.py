"""float32 accuracy of every CPU kernel and backend over the ranges training reaches, against float64.

Glossary: b batch, l length, d channels (S6), n state size, h heads, p head dim (SSD), e width,
k conv width, r rows (RMSNorm).

Draws: step sizes dt in bands up to ~5 (0.07-1, 0.9-3.6, log-uniform 1e-3-5, and 4-6 where with
|A| up to 16 a step's decay exp(dt A) reaches exp(-96), below float32's normal range), |A| up to 16
(A = -exp(A_log), the trained parameter), sequences of l = 4096 steps (many checkpoint chunks);
every other size tiny so each case runs in well under a second. Each float32 output and gradient is
compared with the float64 result of the PyTorch form (chunked SSD, the ``torch`` selective scan,
the PyTorch conv and norm expressions: independent of the C kernels, and for the PyTorch backends
themselves a measure of their float32 rounding) at mamba_ssm's float32 tolerances taken relative
to the tensor's scale: |got - ref| <= 2e-3 max|ref| + 6e-4 |ref| elementwise.

The SSD cases guard the C backward's dA / ddt recursion (csrc/ssd_scan.c): computed with the step's
own input term inside two O(1) sums that cancel, its float32 rounding made the A_log gradient wrong
by 1-3% at dt 0.9-3.6 and by orders of magnitude once the decays underflow.
"""
from __future__ import annotations

import math

import pytest
import torch

from mambadiff import kernels
from mambadiff.ssm.conv import causal_conv1d_silu, causal_conv1d_silu_torch
from mambadiff.ssm.norm import rms_norm, rms_norm_torch
from mambadiff.ssm.scan import selective_scan
from mambadiff.ssm.ssd import ssd

needs_kernels = pytest.mark.skipif(not kernels.is_available(),
                                   reason=f"C kernels unavailable: {kernels.unavailable_reason()}")
RTOL, ATOL = 6e-4, 2e-3  # mamba_ssm's float32 tolerances; ATOL is relative to max|ref| here
L = 4096
DT_BANDS = {  # (low, high, log-uniform)
    "moderate": (0.07, 1.0, False),
    "large": (0.9, 3.6, False),
    "wide": (1e-3, 5.0, True),  # log-uniform
    "underflow": (4.0, 6.0, False),  # with |A| = 16, exp(dt A) down to exp(-96)
}


def draw_dt(shape, band, g):
    lo, hi, log = DT_BANDS[band]
    r = torch.rand(*shape, generator=g, dtype=torch.float64)
    return torch.exp(math.log(lo) + r * (math.log(hi) - math.log(lo))) if log else lo + r * (hi - lo)


def draw_a_log(shape, g):
    """A_log with |A| = exp(A_log) in [0.5, 16]."""
    return math.log(0.5) + torch.rand(*shape, generator=g, dtype=torch.float64) * math.log(32)


def run(fn, leaves, gout, dtype):
    """fn(*leaves) in ``dtype`` with the gradients of <fn(...), gout>; all returned in float64."""
    leaves = [t.to(dtype).requires_grad_() for t in leaves]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, gout.to(dtype))
    return [out.detach().double(), *(g.double() for g in grads)]


def assert_scaled_close(names, got, ref):
    for name, a, r in zip(names, got, ref):
        assert torch.isfinite(a).all(), f"{name}: non-finite values"
        scale = r.abs().max().item()
        assert scale > 0, f"{name}: the reference is all zero; the case tests nothing"
        err = (a - r).abs()
        bound = ATOL * scale + RTOL * r.abs()
        worst = (err - bound).argmax()
        assert (err <= bound).all(), (
            f"{name}: max|err| / max|ref| = {err.max().item() / scale:.2e} (bound {ATOL:.0e} + "
            f"{RTOL:.0e} |ref|); worst at flat index {worst.item()}: got {a.flatten()[worst].item():.6e}, "
            f"ref {r.flatten()[worst].item():.6e}")


# ---- SSD: ssd(algorithm="cpu") and "chunked" against float64 chunked


def ssd_case(band, p, seed, b=2, h=2, n=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, h, p, generator=g, dtype=torch.float64)  # (b, l, h, p)
    dt = draw_dt((b, L, h), band, g)  # (b, l, h)
    a_log = draw_a_log((h,), g)  # (h,)
    B = torch.randn(b, L, n, generator=g, dtype=torch.float64)  # (b, l, n)
    C = torch.randn(b, L, n, generator=g, dtype=torch.float64)  # (b, l, n)
    D = torch.randn(h, generator=g, dtype=torch.float64)  # (h,)
    gy = torch.randn(b, L, h, p, generator=g, dtype=torch.float64)  # (b, l, h, p)
    return [x, dt, a_log, B, C, D], gy


def ssd_of(algorithm):
    return lambda x, dt, a_log, B, C, D: ssd(x, dt, -torch.exp(a_log), B, C, D, algorithm=algorithm)


@pytest.mark.parametrize("band", list(DT_BANDS))
@pytest.mark.parametrize("p", [16, 8, 3], ids=["p16-avx512", "p8-avx2", "p3-generic"])
@pytest.mark.parametrize("algorithm", [pytest.param("cpu", marks=needs_kernels), "chunked"])
def test_ssd_float32_matches_float64(algorithm, p, band):
    leaves, gy = ssd_case(band, p, seed=p)
    ref = run(ssd_of("chunked"), leaves, gy, torch.float64)
    got = run(ssd_of(algorithm), leaves, gy, torch.float32)
    assert_scaled_close(["y", "grad x", "grad dt", "grad A_log", "grad B", "grad C", "grad D"], got, ref)


# ---- S6 selective scan: backends cpu and torch against float64 torch


def s6_case(band, seed, b=1, d=20, n=8):
    g = torch.Generator().manual_seed(seed)
    dt = draw_dt((b, d, L), band, g)  # (b, d, l) the step after softplus
    bias = 0.1 * torch.randn(d, generator=g, dtype=torch.float64)  # (d,)
    delta = dt + torch.log(-torch.expm1(-dt)) - bias[:, None]  # softplus^-1(dt) - bias: (b, d, l)
    leaves = [
        torch.randn(b, d, L, generator=g, dtype=torch.float64),  # u (b, d, l)
        delta,
        draw_a_log((d, n), g),  # A_log (d, n)
        torch.randn(b, n, L, generator=g, dtype=torch.float64),  # B (b, n, l)
        torch.randn(b, n, L, generator=g, dtype=torch.float64),  # C (b, n, l)
        torch.randn(d, generator=g, dtype=torch.float64),  # D (d,)
        torch.randn(b, d, L, generator=g, dtype=torch.float64),  # z (b, d, l)
        bias,
    ]
    return leaves, torch.randn(b, d, L, generator=g, dtype=torch.float64)  # gy (b, d, l)


def s6_of(backend):
    return lambda u, delta, a_log, B, C, D, z, bias: selective_scan(
        u, delta, -torch.exp(a_log), B, C, D, z, bias, delta_softplus=True, backend=backend)


@pytest.mark.parametrize("band", list(DT_BANDS))
@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_kernels), "torch"])
def test_selective_scan_float32_matches_float64(backend, band):
    leaves, gy = s6_case(band, seed=1)
    ref = run(s6_of("torch"), leaves, gy, torch.float64)
    got = run(s6_of(backend), leaves, gy, torch.float32)
    assert_scaled_close(["y", "grad u", "grad delta", "grad A_log", "grad B", "grad C", "grad D",
                         "grad z", "grad delta_bias"], got, ref)


# ---- causal conv1d + SiLU and (gated) RMSNorm against float64 PyTorch


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_kernels), "torch"])
def test_causal_conv_float32_matches_float64(backend, reverse):
    g = torch.Generator().manual_seed(2)
    b, e, k = 2, 20, 4
    leaves = [3 * torch.randn(b, L, e, generator=g, dtype=torch.float64),  # x (b, l, e)
              torch.randn(e, k, generator=g, dtype=torch.float64) / math.sqrt(k),  # weight (e, k)
              torch.randn(e, generator=g, dtype=torch.float64)]  # bias (e,)
    gy = torch.randn(b, L, e, generator=g, dtype=torch.float64)  # (b, l, e)

    def torch_conv(x, w, bias):
        return (causal_conv1d_silu_torch(x.flip(1), w, bias).flip(1) if reverse
                else causal_conv1d_silu_torch(x, w, bias))

    ref = run(torch_conv, leaves, gy, torch.float64)
    got = run(lambda x, w, bias: causal_conv1d_silu(x, w, bias, backend=backend, reverse=reverse),
              leaves, gy, torch.float32)
    assert_scaled_close(["y", "grad x", "grad weight", "grad bias"], got, ref)


@pytest.mark.parametrize("x_scale", [1e-2, 1.0, 1e2])
@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_kernels), "torch"])
def test_rms_norm_float32_matches_float64(backend, x_scale):
    g = torch.Generator().manual_seed(3)
    b, e = 2, 48
    leaves = [x_scale * torch.randn(b, L, e, generator=g, dtype=torch.float64),  # x (b, l, e)
              1 + 0.1 * torch.randn(e, generator=g, dtype=torch.float64),  # weight (e,)
              3 * torch.randn(b, L, e, generator=g, dtype=torch.float64)]  # gate z (b, l, e)
    gy = torch.randn(b, L, e, generator=g, dtype=torch.float64)  # (b, l, e)
    ref = run(lambda x, w, z: rms_norm_torch(x, w, z, 1e-5), leaves, gy, torch.float64)
    got = run(lambda x, w, z: rms_norm(x, w, z, 1e-5, backend=backend), leaves, gy, torch.float32)
    assert_scaled_close(["y", "grad x", "grad weight", "grad z"], got, ref)
