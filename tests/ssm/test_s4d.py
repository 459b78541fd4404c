"""S4D: Vandermonde kernel + FFT convolution vs the complex recurrence, inits, stability.

Glossary: b batch, l length, d model width, e inner width, n state size, m = n/2 modes.
"""
from __future__ import annotations

import math

import pytest
import torch

from mambadiff.ssm import S4D, S4DConfig, S4DState, param_groups
from mambadiff.ssm.lti import fft_causal_conv
from mambadiff.ssm.s4d import s4d_init_imag


def make(d_model=6, dtype=torch.float64, **kw) -> S4D:
    kw.setdefault("d_state", 8)
    return S4D(S4DConfig(d_model=d_model, **kw)).to(dtype)


def run_steps(layer, x):
    state = layer.allocate_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, 1), state


def test_output_shape():
    for glu in (True, False):
        layer = make(dtype=torch.float32, glu=glu, expand=2)
        y = layer(torch.randn(3, 12, 6))
        assert y.shape == (3, 12, 6) and y.dtype == torch.float32


def test_fft_conv_matches_direct_convolution():
    u = torch.randn(2, 3, 17, dtype=torch.float64)  # (b, e, l)
    K = torch.randn(3, 17, dtype=torch.float64)  # (e, l)
    direct = torch.zeros_like(u)
    for t in range(17):
        for j in range(t + 1):
            direct[..., t] += K[:, j] * u[..., t - j]
    torch.testing.assert_close(fft_causal_conv(u, K), direct, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("init", ["lin", "inv", "legs"])
def test_kernel_is_the_impulse_response_of_the_recurrence(init):
    layer = make(init=init)
    l = 20
    K = layer.kernel(l)  # (e, l)
    _, dA, dB, C = layer._discrete(torch.float64)  # (e, m)
    h = torch.zeros_like(dA)  # (e, m)
    impulse = []
    for t in range(l):
        h = dA * h + dB * (1.0 if t == 0 else 0.0)  # (e, m)
        impulse.append(2 * (C * h).sum(-1).real)  # (e,)
    torch.testing.assert_close(K, torch.stack(impulse, -1), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("init", ["lin", "inv", "legs"])
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_step_reproduces_fft_forward(init, dtype, atol):
    layer = make(init=init, dtype=dtype)
    x = torch.randn(2, 33, 6, dtype=dtype)
    y_seq, state = run_steps(layer, x)
    torch.testing.assert_close(y_seq, layer(x), atol=atol, rtol=atol)
    assert isinstance(state, S4DState) and state.ssm_state.shape == (2, 6, 4)
    assert state.ssm_state.is_complex()


def test_time_invariance():
    # With no biases, a zero prefix of s tokens just delays the output by s.
    layer = make(bias=False)
    x = torch.randn(1, 15, 6, dtype=torch.float64)
    delayed = torch.cat([torch.zeros(1, 4, 6, dtype=torch.float64), x], 1)
    y, y_delayed = layer(x), layer(delayed)
    torch.testing.assert_close(y_delayed[:, 4:], y, atol=1e-12, rtol=1e-12)
    assert y_delayed[:, :4].abs().max() < 1e-12


@pytest.mark.parametrize("n", [2, 8, 64])
def test_legs_init_is_the_diagonal_of_the_legs_normal_part(n):
    # independent of mambadiff.ssm.hippo: S = A_legs + P P^T with P_k = sqrt(k + 1/2)
    k = torch.arange(n, dtype=torch.float64)
    A = -torch.tril(torch.sqrt((2 * k[:, None] + 1) * (2 * k[None, :] + 1)), -1) - torch.diag(k + 1)
    P = torch.sqrt(k + 0.5)
    eig = torch.linalg.eigvals(A + P[:, None] * P[None, :])  # (n,) normal: well conditioned
    torch.testing.assert_close(eig.real, torch.full((n,), -0.5, dtype=torch.float64), rtol=0, atol=1e-10)
    positive = eig.imag[eig.imag > 0].sort().values  # (n/2,)
    torch.testing.assert_close(s4d_init_imag("legs", n), positive, rtol=1e-12, atol=1e-10)


def test_init_properties():
    n = 16
    k = torch.arange(n // 2, dtype=torch.float64)
    torch.testing.assert_close(s4d_init_imag("lin", n), math.pi * k)
    torch.testing.assert_close(s4d_init_imag("inv", n), (n / math.pi) * (n / (2 * k + 1) - 1))
    for init in ("lin", "inv", "legs"):
        layer = S4D(S4DConfig(d_model=256, d_state=n, init=init))
        assert layer.A_imag.shape == (256, n // 2)
        torch.testing.assert_close(layer.A_imag.detach(),
                                   s4d_init_imag(init, n).float().expand(256, n // 2))
        torch.testing.assert_close(-layer.log_A_real.detach().exp(), torch.full((256, 8), -0.5))
        dt = layer.log_dt.detach().double().exp()
        assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 1e-1 * (1 + 1e-6)
        assert abs(dt.log().mean().item() - 0.5 * (math.log(1e-3) + math.log(1e-1))) < 0.4
        assert layer.C.shape == (256, n // 2, 2)
    with pytest.raises(ValueError, match="init"):
        S4DConfig(d_model=4, init="legt")
    with pytest.raises(ValueError, match="d_state must be even"):
        S4DConfig(d_model=4, d_state=7)


def test_param_groups_and_lr_hint():
    layer = make(dtype=torch.float32)
    for p in (layer.log_dt, layer.log_A_real, layer.A_imag):
        assert p._no_weight_decay is True and p._lr_scale == 0.1
    groups = param_groups(layer, weight_decay=0.1, lr=1e-3)
    kernel = [g for g in groups if g["lr_scale"] == 0.1]
    assert len(kernel) == 1
    assert set(kernel[0]["param_names"]) == {"log_dt", "log_A_real", "A_imag"}
    assert kernel[0]["weight_decay"] == 0.0 and kernel[0]["lr"] == pytest.approx(1e-4)
    decay = {n for g in groups if g["weight_decay"] == 0.1 for n in g["param_names"]}
    assert decay == {"in_proj.weight", "C", "out_proj.weight"}
    torch.optim.AdamW(groups, lr=1e-3)


def test_gradients_flow_to_every_parameter():
    layer = make()
    x = torch.randn(2, 10, 6, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_mask_zeroes_padding_and_keeps_real_positions():
    layer = make()
    x = torch.randn(2, 12, 6, dtype=torch.float64)
    mask = torch.arange(12).expand(2, 12) < torch.tensor([[12], [5]])
    garbage = torch.where(mask.unsqueeze(-1), x, 1e3 * torch.randn_like(x))
    y = layer(garbage, mask)
    assert torch.equal(y[1, 5:], torch.zeros(7, 6, dtype=torch.float64))
    torch.testing.assert_close(y[1, :5], layer(x[1:, :5])[0], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("init", ["lin", "inv", "legs"])
def test_long_sequence_large_dt_is_finite(init):
    layer = make(dtype=torch.float32, init=init, d_state=16)
    with torch.no_grad():
        layer.log_dt.fill_(math.log(10.0))
    x = (100.0 * torch.randn(2, 4096, 6)).requires_grad_(True)
    y = layer(x)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_bad_input():
    layer = make(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"x must have shape \(b, l, d_model=6\)"):
        layer(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"x must have shape"):
        layer(torch.randn(5, 6))
    with pytest.raises(ValueError, match=r"mask must have shape \(b, l\)=\(2, 5\)"):
        layer(torch.randn(2, 5, 6), torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="state.ssm_state must have shape"):
        layer.step(torch.randn(3, 6), layer.allocate_state(2))
