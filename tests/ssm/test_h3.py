"""H3: FFT convolutions vs a direct-convolution reference, step vs parallel, padding, gradients,
bidirectional use, input checks.

Glossary: b batch, l length, d model width, h heads, p head dim, s shift taps.
"""
from __future__ import annotations

import pytest
import torch

from mambadiff.ssm import H3, H3Config, H3State
from mambadiff.ssm.bidirectional import Bidirectional


def make(d_model=8, dtype=torch.float64, **kw) -> H3:
    kw.setdefault("head_dim", 4)
    kw.setdefault("d_state", 6)
    kw.setdefault("shift_size", 3)
    return H3(H3Config(d_model=d_model, **kw)).to(dtype)


def direct_causal_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """y[..., t] = sum_{j<=t} K[..., j] u[..., t-j] by explicit loops (the FFT path's reference)."""
    out = torch.zeros(torch.broadcast_shapes(u.shape, K.shape), dtype=u.dtype)
    for t in range(u.shape[-1]):
        for j in range(t + 1):
            out[..., t] += K[..., j] * u[..., t - j]
    return out


def reference_forward(layer: H3, x: torch.Tensor) -> torch.Tensor:
    """The H3 block with both SSMs as direct convolutions and explicit head loops."""
    b, l, d = x.shape
    h, p = layer.config.n_heads, layer.config.head_dim
    shift, diag = layer.kernels(l)  # (d, l) each
    q, k, v = layer.in_proj(x).transpose(1, 2).chunk(3, dim=1)  # (b, d, l)
    k_shift = direct_causal_conv(k, shift)  # (b, d, l)
    o = torch.zeros(b, d, l, dtype=x.dtype)
    for head in range(h):
        for j in range(p):
            for i in range(p):
                ci, cj = head * p + i, head * p + j
                kv = k_shift[:, ci] * v[:, cj]  # (b, l)
                y = direct_causal_conv(kv, diag[ci]) + layer.D[ci] * kv  # (b, l)
                o[:, cj] += q[:, ci] * y
    return layer.out_proj(o.transpose(1, 2))


def test_shift_kernel_is_the_taps_and_diag_kernel_is_the_impulse_response():
    layer = make()
    shift, diag = layer.kernels(10)
    assert torch.equal(shift[:, :3], layer.shift_taps.detach()) and torch.equal(shift[:, 3:], torch.zeros(8, 7, dtype=torch.float64))
    _, dA, dB, C = layer._discrete(torch.float64)  # (d, m)
    s = torch.zeros_like(dA)
    for t in range(10):
        s = dA * s + dB * (1.0 if t == 0 else 0.0)
        torch.testing.assert_close(diag[:, t], 2 * (C * s).sum(-1).real, rtol=1e-12, atol=1e-12)
    assert layer.kernels(2)[0].shape == (8, 2)  # fewer steps than taps


def test_fft_forward_matches_direct_convolution():
    layer = make()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_step_reproduces_parallel(dtype, tol):
    layer = make(dtype=dtype, d_model=12, head_dim=3, shift_size=4)
    x = torch.randn(3, 17, 12, dtype=dtype)
    state = layer.allocate_state(3)
    ys = []
    with torch.no_grad():
        for t in range(17):
            y_t, state = layer.step(x[:, t], state)
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), layer(x), rtol=tol, atol=tol)
    assert isinstance(state, H3State)
    assert state.shift_state.shape == (3, 12, 4) and state.ssm_state.shape == (3, 4, 3, 3, 3)


def test_recalls_through_the_shift_and_the_products():
    # identity projections, the shift SSM a one-step delay and no skip term: the output is a
    # linear-attention read-out o_t = sum_{u<=t} sum_i q_t,i k_{u-1},i K_i[t-u] v_u with q = k = v = x
    layer = make(d_model=4, head_dim=4, bias=False)
    with torch.no_grad():
        layer.in_proj.weight.copy_(torch.eye(4, dtype=torch.float64).repeat(3, 1))
        layer.out_proj.weight.copy_(torch.eye(4, dtype=torch.float64))
        layer.shift_taps.zero_()
        layer.shift_taps[:, 1] = 1.0
        layer.D.zero_()
        x = torch.randn(1, 9, 4, dtype=torch.float64)
        out = layer(x)[0]  # (l, d)
        diag = layer.kernels(9)[1]  # (d, l)
    xs = x[0]  # (l, d)
    expect = torch.zeros(9, 4, dtype=torch.float64)
    for t in range(9):
        for u in range(1, t + 1):
            expect[t] += (xs[t] * xs[u - 1] * diag[:, t - u]).sum() * xs[u]
    torch.testing.assert_close(out, expect, rtol=1e-10, atol=1e-12)


def test_padding_never_changes_real_positions_and_causality():
    layer = make()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    mask = torch.arange(10)[None] < torch.tensor([10, 6])[:, None]  # (b, l)
    with torch.no_grad():
        y = layer(x, mask)
        noisy = layer(torch.where(mask[..., None], x, 3 * torch.randn_like(x)), mask)
        short = layer(x[1:, :6])
        later = x.clone()
        later[:, 7:] += 1
        diff = (layer(x) - layer(later)).abs().amax(dim=(0, 2))  # (l,)
    torch.testing.assert_close(y[mask], noisy[mask], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y[1, :6], short[0], rtol=1e-10, atol=1e-12)
    assert float(y[1, 6:].abs().max()) == 0.0
    assert float(diff[:7].max()) < 1e-12 and float(diff[7:].min()) > 1e-8


def test_gradients_reach_every_parameter():
    layer = make(dtype=torch.float32)
    layer(torch.randn(2, 12, 8)).pow(2).mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bidirectional():
    bi = Bidirectional(lambda: make())
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    mask = torch.arange(9)[None] < torch.tensor([9, 5])[:, None]
    y = bi(x, mask)
    with torch.no_grad():
        torch.testing.assert_close(bi(x), bi.forward_layer(x) + bi.backward_layer(x.flip(1)).flip(1),
                                   rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y[1, :5], bi(x[1:, :5])[0], rtol=1e-10, atol=1e-12)
    y.sum().backward()
    assert bi.backward_layer.shift_taps.grad is not None


def test_bad_input():
    with pytest.raises(ValueError, match="head_dim"):
        H3Config(d_model=10, head_dim=4)
    with pytest.raises(ValueError, match="d_state"):
        H3Config(d_model=8, d_state=5)
    with pytest.raises(ValueError, match="init"):
        H3Config(d_model=8, init="nope")
    layer = make()
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(1, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="shift_state"):
        layer.step(torch.randn(2, 8, dtype=torch.float64), layer.allocate_state(3))
