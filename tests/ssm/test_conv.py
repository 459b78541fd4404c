"""Fused causal conv1d + SiLU (``mambadiff.ssm.conv``) against the plain PyTorch path.

Glossary: b batch, l length, e channels, k kernel width.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mambadiff.ssm.conv import causal_conv1d_silu, causal_conv1d_silu_torch
from mambadiff import kernels as cpu_kernels

pytestmark = pytest.mark.skipif(not cpu_kernels.is_available(),
                                reason=f"C kernel unavailable: {cpu_kernels.unavailable_reason()}")

TOL = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-4, "atol": 1e-5}}
# weight and bias gradients are sums over b * l terms that cancel (summation order differs)
SUM_TOL = {torch.float64: {"rtol": 1e-10, "atol": 1e-11}, torch.float32: {"rtol": 1e-4, "atol": 1e-4}}


def _inputs(b, l, e, k, dtype, seed, with_bias, strided):
    g = torch.Generator().manual_seed(seed)
    # strided: x is the first half of a (b, l, 2e) tensor, as the Mamba block's in_proj output was
    base = torch.randn(b, l, 2 * e if strided else e, generator=g, dtype=torch.float64)
    weight = torch.randn(e, k, generator=g, dtype=torch.float64) * 0.7
    bias = torch.randn(e, generator=g, dtype=torch.float64) if with_bias else None
    return base.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def _run(fn, base, weight, bias, e):
    base = base.clone().requires_grad_(True)
    weight = weight.clone().requires_grad_(True)
    leaves = [base, weight]
    if bias is not None:
        bias = bias.clone().requires_grad_(True)
        leaves.append(bias)
    y = fn(base[..., :e], weight, bias)  # (b, l, e)
    gy = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)  # (b, l, e)
    grads = torch.autograd.grad(y, leaves, gy)
    return y, grads


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 3), l=st.integers(1, 70), e=st.integers(1, 40), k=st.integers(1, 5),
       dtype=st.sampled_from([torch.float64, torch.float32]), with_bias=st.booleans(),
       strided=st.booleans(), reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_cpu_kernel_matches_torch(b, l, e, k, dtype, with_bias, strided, reverse, seed):
    """reverse=True: the kernel's anti-causal conv; the oracle flips, convolves, flips."""
    base, weight, bias = _inputs(b, l, e, k, dtype, seed, with_bias, strided)
    y, grads = _run(lambda x, w, bb: causal_conv1d_silu(x, w, bb, backend="cpu", reverse=reverse),
                    base, weight, bias, e)
    oracle = ((lambda x, w, bb: causal_conv1d_silu_torch(x.flip(1), w, bb).flip(1)) if reverse
              else causal_conv1d_silu_torch)
    y_ref, grads_ref = _run(oracle, base, weight, bias, e)
    assert y.dtype == dtype and y.shape == (b, l, e)
    torch.testing.assert_close(y, y_ref, **TOL[dtype])
    for name, got, want in zip(("x", "weight", "bias"), grads, grads_ref):
        tol = TOL[dtype] if name == "x" else SUM_TOL[dtype]
        torch.testing.assert_close(got, want, **tol, msg=lambda m, n=name: f"grad {n}: {m}")
    if strided:  # the other half of the (b, l, 2e) input got no gradient
        assert torch.count_nonzero(grads[0][..., e:]) == 0


@pytest.mark.parametrize("reverse", [False, True])
def test_long_sequence_many_tasks_float32(reverse):
    """Several time chunks per row (the backward's chunk seams) and more channels than one chunk."""
    base, weight, bias = _inputs(3, 1100, 96, 4, torch.float32, 0, True, True)
    y, grads = _run(lambda x, w, bb: causal_conv1d_silu(x, w, bb, backend="cpu", reverse=reverse),
                    base, weight, bias, 96)
    y_ref, grads_ref = _run(lambda x, w, bb: causal_conv1d_silu(x, w, bb, backend="torch", reverse=reverse),
                            base, weight, bias, 96)
    torch.testing.assert_close(y, y_ref, **TOL[torch.float32])
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("k", [1, 2, 4, 5])
def test_chunk_seams_float64(monkeypatch, k, reverse):
    """Time chunks of 3 steps (shorter than the kernel width): every backward task recomputes the
    neighbouring steps of other tasks (the following ones causal, the preceding ones anti-causal)."""
    import mambadiff.ssm.conv as conv
    monkeypatch.setattr(conv, "SCRATCH_ELEMENTS", 3 * 6)  # e = 6 channels -> chunks of 3 steps
    base, weight, bias = _inputs(2, 17, 6, k, torch.float64, 5, True, True)
    y, grads = _run(lambda x, w, bb: causal_conv1d_silu(x, w, bb, backend="cpu", reverse=reverse),
                    base, weight, bias, 6)
    oracle = ((lambda x, w, bb: causal_conv1d_silu_torch(x.flip(1), w, bb).flip(1)) if reverse
              else causal_conv1d_silu_torch)
    y_ref, grads_ref = _run(oracle, base, weight, bias, 6)
    torch.testing.assert_close(y, y_ref, **TOL[torch.float64])
    for name, got, want in zip(("x", "weight", "bias"), grads, grads_ref):
        torch.testing.assert_close(got, want, **SUM_TOL[torch.float64], msg=lambda m, n=name: f"grad {n}: {m}")


def test_causal_future_does_not_leak():
    base, weight, bias = _inputs(2, 30, 8, 4, torch.float64, 1, True, False)
    y1 = causal_conv1d_silu(base, weight, bias, backend="cpu")
    changed = base.clone()
    changed[:, 20:] = 5.0  # only the future of step 19
    y2 = causal_conv1d_silu(changed, weight, bias, backend="cpu")
    # same kernel, same shapes, same values feeding these steps: bit-identical is the contract
    torch.testing.assert_close(y1[:, :20], y2[:, :20], rtol=0, atol=0)
    assert not torch.allclose(y1[:, 20:], y2[:, 20:])


def test_half_precision_is_computed_in_float32():
    base, weight, bias = _inputs(2, 16, 8, 4, torch.bfloat16, 2, True, False)
    y = causal_conv1d_silu(base, weight, bias, backend="cpu")
    assert y.dtype == torch.bfloat16
    ref = causal_conv1d_silu_torch(base.float(), weight.float(), bias.float())
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kwargs, match", [
    ({"backend": "cuda"}, "backend must be one of"),
    ({"weight": torch.zeros(5, 4)}, r"weight must have shape \(e, k\) = \(8, k\)"),
    ({"bias": torch.zeros(3)}, r"bias must have shape \(e,\) = \(8,\)"),
    ({"x": torch.zeros(8, 8)}, r"x must have shape \(b, l, e\)"),
])
def test_bad_input_raises_value_error(kwargs, match):
    args = {"x": torch.zeros(2, 4, 8), "weight": torch.zeros(8, 4), "bias": torch.zeros(8)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        causal_conv1d_silu(**args)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("e, chunk_elems", [(37, 3 * 37), (48, 5 * 48), (21, 64 * 21)])
def test_float32_blocks_tails_and_seams(monkeypatch, k, reverse, e, chunk_elems):
    """float32 (the AVX-512 path where the CPU has it, k <= 5; k = 7 takes the generic loops):
    channel counts with a partial block of 16 lanes (37, 21) and whole blocks (48), a strided x,
    time chunks of 3 and 5 steps (seams, neighbour steps and the step pairs of the interior loop
    with odd lengths) and one chunk per row (l = 23 steps, odd)."""
    import mambadiff.ssm.conv as conv
    monkeypatch.setattr(conv, "SCRATCH_ELEMENTS", chunk_elems)
    base, weight, bias = _inputs(3, 23, e, k, torch.float32, 7, True, True)
    y, grads = _run(lambda x, w, bb: causal_conv1d_silu(x, w, bb, backend="cpu", reverse=reverse),
                    base, weight, bias, e)
    oracle = ((lambda x, w, bb: causal_conv1d_silu_torch(x.flip(1), w, bb).flip(1)) if reverse
              else causal_conv1d_silu_torch)
    b64, w64, bias64 = base.double(), weight.double(), bias.double()
    y_ref, grads_ref = _run(oracle, b64, w64, bias64, e)
    torch.testing.assert_close(y, y_ref.float(), rtol=1e-5, atol=1e-6)
    for name, got, want in zip(("x", "weight", "bias"), grads, grads_ref):
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=2e-5,
                                   msg=lambda m, n=name: f"grad {n}: {m}")
    assert torch.count_nonzero(grads[0][..., e:]) == 0


@pytest.mark.parametrize("reverse", [False, True])
def test_two_threads_match_one(reverse):
    """Enough work for two threads (b l e k >= 2 * MIN_WORK_PER_THREAD): same results as one."""
    base, weight, bias = _inputs(8, 64, 136, 4, torch.float32, 3, True, True)
    fn = lambda x, w, bb: causal_conv1d_silu(x, w, bb, backend="cpu", reverse=reverse)  # noqa: E731
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, g1 = _run(fn, base, weight, bias, 136)
        torch.set_num_threads(2)
        y2, g2 = _run(fn, base, weight, bias, 136)
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(y2, y1, rtol=0, atol=0)
    torch.testing.assert_close(g2[0], g1[0], rtol=0, atol=0)
    for got, want in zip(g2[1:], g1[1:]):  # per-task partial sums: the task split can differ
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
