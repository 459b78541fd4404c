"""S4: the Cauchy + Woodbury kernel vs dense discretised matrix powers, step vs parallel, gradients,
bidirectional use, input checks.

Glossary: b batch, l length, d model width, e inner width, N state size, L = l_max.
"""
from __future__ import annotations

import pytest
import torch

from mambadiff.ssm import S4, S4Config, S4State
from mambadiff.ssm.bidirectional import Bidirectional
from mambadiff.ssm.hippo import hippo_legs, nplr
from mambadiff.ssm.s4 import dplr_legs_init


def make(d_model=4, dtype=torch.float64, **kw) -> S4:
    kw.setdefault("d_state", 8)
    kw.setdefault("l_max", 32)
    return S4(S4Config(d_model=d_model, **kw)).to(dtype)


def perturb(layer: S4, scale=0.3) -> S4:
    """Move every SSM parameter off its init, so the tests cover a general DPLR matrix."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in (layer.P, layer.B, layer.C, layer.lambda_im):
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        layer.log_dt.copy_(torch.linspace(-4, -0.5, layer.log_dt.numel(), dtype=layer.log_dt.dtype))
    return layer


def reference_kernel(layer: S4, length: int) -> torch.Tensor:
    """K[j] = Re(C dA^j dB) from a materialised dense A, explicit inverses and matrix powers."""
    dt, Lambda, P, B, C_tilde = layer.ssm_parameters(torch.float64)
    e, N = Lambda.shape
    out = torch.zeros(e, length, dtype=torch.float64)
    eye = torch.eye(N, dtype=torch.complex128)
    for c in range(e):
        A = torch.diag(Lambda[c]) - P[:, c].T @ P[:, c].conj()  # (N, N) diag - P P*
        if layer.config.discretization == "bilinear":
            inv = torch.linalg.inv(eye - dt[c] / 2 * A)
            dA, dB = inv @ (eye + dt[c] / 2 * A), inv @ (dt[c] * B[c])
        else:
            dA = torch.linalg.matrix_exp(dt[c] * A)
            dB = torch.linalg.inv(A) @ (dA - eye) @ B[c]
        C = C_tilde[c] @ torch.linalg.inv(eye - torch.linalg.matrix_power(dA, layer.config.l_max))  # (N,)
        x = dB
        for j in range(length):
            out[c, j] = (C @ x).real
            x = dA @ x
    return out


@pytest.mark.parametrize("discretization", ["bilinear", "zoh"])
@pytest.mark.parametrize("l_max", [32, 21])
def test_kernel_matches_dense_matrix_powers(discretization, l_max):
    layer = perturb(make(discretization=discretization, l_max=l_max))
    for length in (l_max, 7):
        torch.testing.assert_close(layer.kernel(length), reference_kernel(layer, length), rtol=1e-8, atol=1e-10)


def test_kernel_in_frequency_blocks_matches_the_whole(monkeypatch):
    """Blocks of a few frequencies (the memory bound of long kernels) give the same kernel."""
    layer = perturb(make(l_max=40))
    whole = layer.kernel(40)
    monkeypatch.setattr("mambadiff.ssm.s4.KERNEL_BLOCK_ELEMENTS", 3 * 4 * 8)  # 3 of the 21 frequencies at once
    torch.testing.assert_close(layer.kernel(40), whole, rtol=1e-12, atol=1e-13)


def test_init_is_legs_in_another_basis():
    # the stored half and its conjugates, in the basis [V_half, conj(V_half)], give back HiPPO-LegS
    N, m = 8, 4
    Lambda, P, B = dplr_legs_init(N)  # (m,), (1, m), (m,) complex128
    V_half = nplr("legs", N).V[:, :m]  # (N, m)
    V = torch.cat([V_half, V_half.conj()], dim=1)  # (N, N)
    Lf, Pf, Bf = (torch.cat([z, z.conj()], dim=-1) for z in (Lambda, P, B))
    A_dplr = torch.diag(Lf) - Pf.T @ Pf.conj()  # (N, N)
    A_legs, B_legs = hippo_legs(N)
    torch.testing.assert_close(V.mH @ V, torch.eye(N, dtype=torch.complex128), rtol=0, atol=1e-12)
    torch.testing.assert_close(V @ A_dplr @ V.mH, A_legs.to(torch.complex128), rtol=0, atol=1e-11)
    torch.testing.assert_close(V @ Bf, B_legs.to(torch.complex128), rtol=0, atol=1e-12)
    assert (Lambda.imag > 0).all()
    layer = make(d_state=N, expand=2)  # every channel starts from this init
    torch.testing.assert_close(layer.lambda_im[3], Lambda.imag, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("discretization", ["bilinear", "zoh"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_step_reproduces_parallel(discretization, dtype, tol):
    layer = perturb(make(discretization=discretization, l_max=24, expand=2).double()).to(dtype)
    x = torch.randn(2, 24, 4, dtype=dtype)
    state = layer.allocate_state(2)
    ys = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y_t, state = layer.step(x[:, t], state)
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), layer(x), rtol=tol, atol=tol)
    assert isinstance(state, S4State) and state.ssm_state.shape == (2, 8, 8)


def test_step_with_grad_enabled_matches_cached():
    layer = perturb(make())
    x = torch.randn(3, 4, dtype=torch.float64)
    y_grad, _ = layer.step(x, layer.allocate_state(3))
    with torch.no_grad():
        y_cached, _ = layer.step(x, layer.allocate_state(3))
        layer.D.add_(1.0)  # the cache covers only the SSM parameters, D is read each step
        y_moved, _ = layer.step(x, layer.allocate_state(3))
    torch.testing.assert_close(y_grad.detach(), y_cached, rtol=1e-12, atol=1e-12)
    assert float((y_moved - y_cached).abs().max()) > 1e-6


def test_gradients_reach_every_parameter():
    layer = make(dtype=torch.float32)
    x = torch.randn(2, 20, 4)
    layer(x).pow(2).mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


class KernelOf(torch.nn.Module):
    """forward(length) -> layer.kernel(length), so functional_call can swap the layer's parameters."""

    def __init__(self, layer):
        super().__init__()
        self.inner = layer

    def forward(self, length):
        return self.inner.kernel(length)


def test_gradcheck_kernel():
    layer = perturb(make(d_model=2, d_state=4, l_max=6))
    names = ["log_dt", "log_lambda_re", "lambda_im", "P", "B", "C"]
    inputs = [getattr(layer, n).detach().clone().requires_grad_() for n in names]
    call = KernelOf(layer)

    def kernel(*ps):
        return torch.func.functional_call(call, {f"inner.{n}": p for n, p in zip(names, ps)}, (6,))

    assert torch.autograd.gradcheck(kernel, inputs, eps=1e-6, atol=1e-6)


def test_padding_and_causality():
    layer = make()
    x = torch.randn(2, 10, 4, dtype=torch.float64)
    mask = torch.arange(10)[None] < torch.tensor([10, 6])[:, None]  # (b, l)
    with torch.no_grad():
        y = layer(x, mask)
        y_short = layer(x[1:, :6])
        later = x.clone()
        later[:, 7:] += 1
        diff = (layer(x) - layer(later)).abs().amax(dim=(0, 2))  # (l,)
    torch.testing.assert_close(y[1, :6], y_short[0], rtol=1e-10, atol=1e-12)
    assert float(y[1, 6:].abs().max()) == 0.0
    assert float(diff[:7].max()) < 1e-12 and float(diff[7:].min()) > 1e-8


def test_bidirectional():
    torch.manual_seed(0)
    bi = Bidirectional(lambda: make()).double()
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    mask = torch.arange(9)[None] < torch.tensor([9, 5])[:, None]
    y = bi(x, mask)
    with torch.no_grad():
        expect = bi.forward_layer(x) + bi.backward_layer(x.flip(1)).flip(1)
        short = bi(x[1:, :5])
        torch.testing.assert_close(bi(x), expect, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y[1, :5], short[0], rtol=1e-10, atol=1e-12)
    y.sum().backward()
    assert bi.backward_layer.C.grad is not None


def test_bad_input():
    with pytest.raises(ValueError, match="d_state"):
        S4Config(d_model=4, d_state=7)
    with pytest.raises(ValueError, match="discretization"):
        S4Config(d_model=4, discretization="euler")
    layer = make(l_max=8)
    with pytest.raises(ValueError, match="l_max"):
        layer(torch.randn(1, 9, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(1, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="ssm_state"):
        layer.step(torch.randn(2, 4, dtype=torch.float64), layer.allocate_state(3))
