"""Fused CPU SSD kernel (csrc/ssd_scan.c) against the sequential oracle: outputs and gradients.

Glossary: b batch, l length, h heads, p head dim, n state size.
Tolerances: float64 1e-10 (same arithmetic, different order); float32 rtol 6e-4 / atol 2e-3 as for
the selective-scan backends.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mambadiff.ssm import Mamba2, Mamba2Config
from mambadiff import kernels as cpu_kernels
from mambadiff.ssm.ssd import ssd, ssd_reference, ssd_scan_cpu, ssd_scan_cpu_packed

pytestmark = pytest.mark.skipif(not cpu_kernels.is_available(),
                                reason="the C kernels could not be built here")

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=2e-3, rtol=6e-4)}


def inputs(b, l, h, p, n, dtype, dt_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, dtype=dtype, generator=g)  # (b, l, h, p)
    dt = dt_scale * F.softplus(torch.randn(b, l, h, dtype=dtype, generator=g))  # (b, l, h)
    A = -torch.rand(h, dtype=dtype, generator=g) * 4 - 0.1  # (h,)
    B = torch.randn(b, l, n, dtype=dtype, generator=g)  # (b, l, n)
    C = torch.randn(b, l, n, dtype=dtype, generator=g)  # (b, l, n)
    D = torch.randn(h, dtype=dtype, generator=g)  # (h,)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D)]


def check_parity(args, dtype, with_D=True):
    if not with_D:
        args = args[:5] + [None]
    grads_of = [t for t in args if t is not None]
    y_ref = ssd_reference(*args)  # (b, l, h, p)
    gy = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad(y_ref, grads_of, gy)
    y = ssd_scan_cpu(*args)
    g = torch.autograd.grad(y, grads_of, gy)
    torch.testing.assert_close(y, y_ref, **TOL[dtype])
    for name, a, r in zip("x dt A B C D".split(), g, g_ref):
        scale = max(1.0, r.abs().max().item())  # A's gradient sums over b, l, p: compare relatively
        torch.testing.assert_close(a / scale, r / scale, **TOL[dtype], msg=f"grad {name}")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 3), l=st.integers(1, 150), h=st.integers(1, 4),
       p=st.sampled_from([1, 3, 16, 32, 40, 64]), n=st.integers(1, 20),
       dtype=st.sampled_from([torch.float64, torch.float32]), with_D=st.booleans(),
       seed=st.integers(0, 2**16))
def test_cpu_kernel_matches_reference(b, l, h, p, n, dtype, with_D, seed):
    check_parity(inputs(b, l, h, p, n, dtype, seed=seed), dtype, with_D)


@pytest.mark.parametrize("l", [63, 64, 65, 200])  # around and across the checkpoint interval
def test_chunk_seams(l):
    check_parity(inputs(2, l, 2, 32, 16, torch.float64), torch.float64)


def test_reads_strided_views_in_place():
    # the Mamba-2 block hands over column slices of one (b, l, e + 2n) tensor
    b, l, h, p, n = 2, 70, 2, 8, 5
    xbc = torch.randn(b, l, h * p + 2 * n, dtype=torch.float64, requires_grad=True)
    x, B, C = torch.split(xbc, [h * p, n, n], dim=-1)
    dt = F.softplus(torch.randn(b, l, h, dtype=torch.float64))
    A, D = -torch.rand(h, dtype=torch.float64) - 0.5, torch.randn(h, dtype=torch.float64)
    y = ssd_scan_cpu(x.unflatten(-1, (h, p)), dt, A, B, C, D)
    y_ref = ssd_reference(x.unflatten(-1, (h, p)), dt, A, B, C, D)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    (g,) = torch.autograd.grad(y.sum(), xbc)
    (g_ref,) = torch.autograd.grad(y_ref.sum(), xbc)
    torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("p, n", [(16, 16), (32, 16), (32, 20), (64, 32), (48, 35), (32, 5), (80, 16)])
@pytest.mark.parametrize("reverse", [False, True])
def test_float32_vector_paths(p, n, reverse):
    """The backward's vector paths by shape: 16-row blocks of the state (n = 16, 32), blocks plus
    single-row tails (n = 20, 35) and tails only (n = 5), with p a multiple of 16 (AVX-512 where the
    CPU has it, else AVX2; p = 80 spans two channel groups of the AVX-512 adjoint) or of 8 only;
    float32 against the float64 oracle, across a chunk seam."""
    b, l, h = 3, 70, 3
    g = torch.Generator().manual_seed(p * 100 + n)
    xbc = torch.randn(b, l, h * p + 2 * n, dtype=torch.float64, generator=g)  # (b, l, hp + 2n)
    dt = F.softplus(torch.randn(b, l, h, dtype=torch.float64, generator=g) - 1)  # (b, l, h)
    A = -torch.rand(h, dtype=torch.float64, generator=g) * 4 - 0.1  # (h,)
    D = torch.randn(h, dtype=torch.float64, generator=g)  # (h,)
    gy = torch.randn(b, l, h * p, dtype=torch.float64, generator=g)  # (b, l, hp)
    results = []
    for dtype in (torch.float64, torch.float32):
        leaves = [t.to(dtype).requires_grad_() for t in (xbc, dt, A, D)]
        y = ssd_scan_cpu_packed(*leaves, n, reverse=reverse)  # (b, l, hp)
        results.append((y, *torch.autograd.grad(y, leaves, gy.to(dtype))))
    x, B, C = torch.split(xbc.flip(1) if reverse else xbc, [h * p, n, n], dim=-1)
    dt_ref = dt.flip(1) if reverse else dt
    y_ref = ssd_reference(x.unflatten(-1, (h, p)), dt_ref, A, B, C, D).flatten(2)  # (b, l, hp)
    torch.testing.assert_close(results[0][0], y_ref.flip(1) if reverse else y_ref, **TOL[torch.float64])
    for name, a, r in zip(("y", "xbc", "dt", "A", "D"), results[1], results[0]):
        scale = max(1.0, r.abs().max().item())
        torch.testing.assert_close(a.double() / scale, r / scale, **TOL[torch.float32], msg=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("p, n", [(16, 16), (32, 5), (3, 7)])
def test_final_state_with_unequal_lengths(p, n, dtype):
    """return_final_state (Mamba2.prefill): the state after the last step, (b, h, p, n) as Mamba2State
    keeps it; with dt zeroed past each row's length, as prefill pads, it is the state at the row's own
    last step. Against the oracle's state over each row alone; y is the same as without the state, and
    its gradients still flow (the state takes none)."""
    b, l, h = 3, 70, 3
    lengths = torch.tensor([70, 33, 1])
    g = torch.Generator().manual_seed(p * 100 + n)
    xbc = torch.randn(b, l, h * p + 2 * n, dtype=torch.float64, generator=g)  # (b, l, hp + 2n)
    keep = (torch.arange(l) < lengths[:, None]).unsqueeze(-1)  # (b, l, 1)
    dt = F.softplus(torch.randn(b, l, h, dtype=torch.float64, generator=g) - 1) * keep  # (b, l, h)
    A = -torch.rand(h, dtype=torch.float64, generator=g) * 4 - 0.1  # (h,)
    D = torch.randn(h, dtype=torch.float64, generator=g)  # (h,)
    leaves = [t.to(dtype).requires_grad_() for t in (xbc, dt, A, D)]
    y, last = ssd_scan_cpu_packed(*leaves, n, return_final_state=True)  # (b, l, hp), (b, h, p, n)
    assert last.shape == (b, h, p, n) and last.dtype == dtype and not last.requires_grad
    torch.testing.assert_close(y, ssd_scan_cpu_packed(*leaves, n), rtol=0, atol=0)
    assert all(gr is not None for gr in torch.autograd.grad(y.sum(), leaves))
    x, B, C = torch.split(xbc, [h * p, n, n], dim=-1)
    for i, li in enumerate(lengths.tolist()):
        rows = (slice(i, i + 1), slice(0, li))
        _, ref = ssd_reference(x[rows].unflatten(-1, (h, p)), dt[rows], A, B[rows], C[rows], D,
                               return_final_state=True)  # (1, h, p, n)
        torch.testing.assert_close(last[i].double(), ref[0], **TOL[dtype], msg=f"row {i}")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 3), l=st.sampled_from([1, 2, 17, 63, 64, 65, 130]), h=st.integers(1, 3),
       p=st.sampled_from([1, 8, 32]), n=st.integers(1, 17), dtype=st.sampled_from([torch.float64, torch.float32]),
       with_D=st.booleans(), seed=st.integers(0, 2**16))
def test_reverse_is_the_flipped_recurrence(b, l, h, p, n, dtype, with_D, seed):
    """reverse=True walks each sequence from its last step (negative time strides, no copies): equal to
    the oracle on the time-flipped inputs, flipped back; outputs and all gradients, packed layout."""
    g = torch.Generator().manual_seed(seed)
    xbc = torch.randn(b, l, h * p + 2 * n, dtype=dtype, generator=g).requires_grad_()  # (b, l, hp + 2n)
    dt = F.softplus(torch.randn(b, l, h, dtype=dtype, generator=g)).requires_grad_()  # (b, l, h)
    A = (-torch.rand(h, dtype=dtype, generator=g) * 4 - 0.1).requires_grad_()  # (h,)
    D = torch.randn(h, dtype=dtype, generator=g).requires_grad_() if with_D else None  # (h,)
    leaves = [t for t in (xbc, dt, A, D) if t is not None]
    y = ssd_scan_cpu_packed(xbc, dt, A, D, n, reverse=True)  # (b, l, hp)
    gy = torch.randn(y.shape, dtype=dtype, generator=g)
    grads = torch.autograd.grad(y, leaves, gy)
    x, B, C = torch.split(xbc.flip(1), [h * p, n, n], dim=-1)
    y_ref = ssd_reference(x.unflatten(-1, (h, p)), dt.flip(1), A, B, C, D).flatten(2).flip(1)  # (b, l, hp)
    grads_ref = torch.autograd.grad(y_ref, leaves, gy)
    torch.testing.assert_close(y, y_ref, **TOL[dtype])
    for name, a, r in zip(("xbc", "dt", "A", "D"), grads, grads_ref):
        scale = max(1.0, r.abs().max().item())
        torch.testing.assert_close(a / scale, r / scale, **TOL[dtype], msg=f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dt_scale", [0.01, 5.0])
def test_weak_and_strong_decays(dt_scale, dtype):
    """The backward gets the decay's gradient <dL/dS_t, a_t S_(t-1)> as <dL/dS_t, S_t> minus the input
    term (it never reads S_(t-1)); that difference must stay accurate when a_t is nearly 1 and when it
    is nearly 0 (dt_scale 5: dt A down to about -60, a_t below 1e-20)."""
    check_parity(inputs(2, 70, 3, 32, 16, dtype, dt_scale=dt_scale, seed=3), dtype)


def test_long_sequence_large_dt_is_finite():
    args = inputs(1, 4096, 2, 16, 8, torch.float32, dt_scale=50.0)
    y = ssd_scan_cpu(*args)
    assert torch.isfinite(y).all()
    grads = torch.autograd.grad(y.square().mean(), args)
    assert all(torch.isfinite(g).all() for g in grads)


def test_half_precision_is_computed_in_float32():
    args = [t.detach() for t in inputs(2, 33, 2, 8, 4, torch.float32)]
    y = ssd_scan_cpu(*[t.bfloat16() for t in args])
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ssd_reference(*args), atol=0.1, rtol=0.05)


def test_dispatch_and_bad_input():
    args = [t.detach() for t in inputs(2, 9, 2, 4, 3, torch.float64)]
    torch.testing.assert_close(ssd(*args, algorithm="auto"), ssd(*args, algorithm="chunked", chunk_size=4),
                               atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        ssd(*args, algorithm="fast")
    with pytest.raises(ValueError, match=r"dt must have shape \(b, l, h\)"):
        ssd(args[0], args[1][:, :, :1], *args[2:])


@pytest.mark.parametrize("algorithm", ["cpu", "chunked", "scan"])
def test_mamba2_block_algorithms_agree(algorithm):
    ref = Mamba2(Mamba2Config(d_model=16, d_state=6, headdim=8, chunk_size=8, algorithm="reference")).double()
    other = Mamba2(Mamba2Config(d_model=16, d_state=6, headdim=8, chunk_size=8, algorithm=algorithm,
                                scan_backend="cpu")).double()
    other.load_state_dict(ref.state_dict())
    x = torch.randn(2, 45, 16, dtype=torch.float64, requires_grad=True)
    y_ref = ref(x)
    y = other(x)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    gy = torch.randn_like(y)
    g_ref = torch.autograd.grad(y_ref, [x, *ref.parameters()], gy)
    g = torch.autograd.grad(y, [x, *other.parameters()], gy)
    for a, r in zip(g, g_ref):
        torch.testing.assert_close(a, r, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("p", [16, 8, 3])  # the AVX-512, AVX2 and generic backward steps
def test_two_threads_match_one(p, monkeypatch):
    """Same kernel, 1 vs 2 threads: y and every per-(row, head) gradient are bit-identical (each head
    is one task's, computed in the same order); dB, dC sum per-group partials whose split follows
    the thread count, so they may differ in the last bits."""
    import mambadiff.ssm.ssd as ssd_module
    monkeypatch.setattr(ssd_module, "MIN_WORK_PER_THREAD", 1)  # two threads even on tiny inputs
    args = inputs(2, 150, 4, p, 16, torch.float32, seed=p)
    gy = torch.randn(2, 150, 4, p)
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = ssd_scan_cpu(*args)
            results.append([y.detach(), *torch.autograd.grad(y, args, gy)])
    finally:
        torch.set_num_threads(old)
    (y1, gx1, gdt1, gA1, gB1, gC1, gD1), (y2, gx2, gdt2, gA2, gB2, gC2, gD2) = results
    for name, a, b in [("y", y2, y1), ("grad x", gx2, gx1), ("grad dt", gdt2, gdt1), ("grad A", gA2, gA1),
                       ("grad D", gD2, gD1)]:
        assert torch.equal(a, b), name
    for name, a, b in [("grad B", gB2, gB1), ("grad C", gC2, gC1)]:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
