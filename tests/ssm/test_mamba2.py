"""Mamba-2 (SSD): chunked algorithm vs the sequential oracle, block step/forward parity, init.

Glossary: b batch, l length, d model width, e inner width, n state size, h heads, p head dim,
q chunk length.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from mambadiff.ssm import Mamba2, Mamba2Config, Mamba2State, param_groups
from mambadiff.ssm.mamba2 import segsum, ssd_chunked, ssd_reference


def ssd_inputs(b=2, l=19, h=3, p=4, n=5, dtype=torch.float64, dt_scale=1.0, with_state=True):
    x = torch.randn(b, l, h, p, dtype=dtype)  # (b, l, h, p)
    dt = dt_scale * F.softplus(torch.randn(b, l, h, dtype=dtype))  # (b, l, h)
    A = -torch.rand(h, dtype=dtype) * 4 - 0.1  # (h,)
    B = torch.randn(b, l, n, dtype=dtype)  # (b, l, n)
    C = torch.randn(b, l, n, dtype=dtype)  # (b, l, n)
    D = torch.randn(h, dtype=dtype)  # (h,)
    s0 = torch.randn(b, h, p, n, dtype=dtype) if with_state else None  # (b, h, p, n)
    return x, dt, A, B, C, D, s0


def make(d_model=8, dtype=torch.float64, **kw) -> Mamba2:
    kw.setdefault("d_state", 6)
    kw.setdefault("headdim", 4)
    kw.setdefault("chunk_size", 8)
    return Mamba2(Mamba2Config(d_model=d_model, **kw)).to(dtype)


# --------------------------------------------------------------------------- SSD kernels


def test_segsum_matches_definition():
    a = -torch.rand(2, 6, dtype=torch.float64)  # (.., t)
    s = segsum(a)  # (.., t, t)
    for i in range(6):
        for j in range(6):
            if i >= j:
                torch.testing.assert_close(s[:, i, j], a[:, j + 1:i + 1].sum(-1))
            else:
                assert torch.isneginf(s[:, i, j]).all()


@pytest.mark.parametrize("l", [1, 5, 16, 37, 64])
@pytest.mark.parametrize("q", [1, 4, 16, 64])
def test_chunked_matches_reference_float64(l, q):
    x, dt, A, B, C, D, s0 = ssd_inputs(l=l)
    y_ref, h_ref = ssd_reference(x, dt, A, B, C, D, s0, return_final_state=True)
    y, h = ssd_chunked(x, dt, A, B, C, q, D, s0, return_final_state=True)
    assert y.shape == (2, l, 3, 4) and h.shape == (2, 3, 4, 5)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("l,q", [(50, 16), (64, 64), (7, 3)])
def test_chunked_matches_reference_float32(l, q):
    x, dt, A, B, C, D, s0 = ssd_inputs(l=l, dtype=torch.float32)
    y_ref, h_ref = ssd_reference(x, dt, A, B, C, D, s0, return_final_state=True)
    y, h = ssd_chunked(x, dt, A, B, C, q, D, s0, return_final_state=True)
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=1e-4, rtol=1e-4)


def test_chunked_without_initial_state_or_D():
    x, dt, A, B, C, _, _ = ssd_inputs(l=23, with_state=False)
    torch.testing.assert_close(ssd_chunked(x, dt, A, B, C, 8), ssd_reference(x, dt, A, B, C),
                               atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("l,q", [(21, 8), (16, 4), (9, 16)])
def test_chunked_gradients_match_reference(l, q):
    inputs = [t.requires_grad_(True) for t in ssd_inputs(l=l)]
    w = torch.randn(2, l, 3, 4, dtype=torch.float64)  # (b, l, h, p) random projection
    wh = torch.randn(2, 3, 4, 5, dtype=torch.float64)  # (b, h, p, n)

    def grads(fn):
        y, h = fn()
        loss = (y * w).sum() + (h * wh).sum()
        return torch.autograd.grad(loss, inputs)

    x, dt, A, B, C, D, s0 = inputs
    g_ref = grads(lambda: ssd_reference(x, dt, A, B, C, D, s0, return_final_state=True))
    g_chk = grads(lambda: ssd_chunked(x, dt, A, B, C, q, D, s0, return_final_state=True))
    for name, a, b in zip("x dt A B C D s0".split(), g_chk, g_ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=name)


def test_chunked_stable_for_long_strongly_decaying_sequence():
    # dt*A ~ -100 per token: a naive exp(cumsum_i - cumsum_j) would overflow / lose precision.
    x, dt, A, B, C, D, _ = ssd_inputs(b=1, l=4096, h=2, p=2, n=3, dt_scale=30.0,
                                      with_state=False)
    y_ref = ssd_reference(x, dt, A, B, C, D)
    y = ssd_chunked(x, dt, A, B, C, 64, D)
    torch.testing.assert_close(y, y_ref, atol=1e-9, rtol=1e-9)

    args = [t.float().requires_grad_(True) for t in (x, dt, A, B, C, D)]
    y32 = ssd_chunked(*args[:5], 64, args[5])
    assert torch.isfinite(y32).all()
    y32.square().mean().backward()
    assert all(torch.isfinite(t.grad).all() for t in args)


def test_ssd_bad_shapes():
    x, dt, A, B, C, D, s0 = ssd_inputs(l=5)
    with pytest.raises(ValueError, match=r"dt must have shape \(b, l, h\)"):
        ssd_chunked(x, dt[:, :4], A, B, C, 4)
    with pytest.raises(ValueError, match=r"A must have shape \(h,\)"):
        ssd_chunked(x, dt, A[:2], B, C, 4)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        ssd_reference(x, dt, A, B, C, D, s0[:, :2])
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(x, dt, A, B, C, 0)


# --------------------------------------------------------------------------- block


def test_output_shape():
    layer = make(dtype=torch.float32)
    y = layer(torch.randn(3, 11, 8))
    assert y.shape == (3, 11, 8) and y.dtype == torch.float32


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("l", [6, 19])
def test_step_reproduces_forward(dtype, atol, l):
    layer = make(dtype=dtype, chunk_size=4)
    x = torch.randn(2, l, 8, dtype=dtype)
    y_par = layer(x)
    state = layer.allocate_state(2)
    ys = []
    for t in range(l):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y_par, atol=atol, rtol=atol)
    assert isinstance(state, Mamba2State)
    assert state.conv_state.shape == (2, 16 + 12, 3) and state.ssm_state.shape == (2, 4, 4, 6)


def test_scan_algorithm_matches_chunked():
    chunked = make(chunk_size=4)
    scan = make(algorithm="scan", scan_backend="reference")
    scan.load_state_dict(chunked.state_dict())
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    torch.testing.assert_close(scan(x), chunked(x), atol=1e-10, rtol=1e-10)


def test_chunk_size_does_not_change_output():
    a = make(chunk_size=3, algorithm="chunked")
    b = make(chunk_size=64, algorithm="chunked")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), atol=1e-10, rtol=1e-10)


def test_init_properties():
    cfg = Mamba2Config(d_model=256)
    assert (cfg.d_state, cfg.headdim, cfg.chunk_size, cfg.nheads) == (64, 64, 64, 8)
    layer = Mamba2(Mamba2Config(d_model=64, headdim=2, d_state=8))  # 64 heads
    dt = F.softplus(layer.dt_bias.detach().double())  # (h,)
    assert dt.shape == (64,)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    A = layer.A_log.detach().exp()  # (h,)
    assert A.shape == (64,) and A.min() >= 1.0 - 1e-6 and A.max() <= 16.0 + 1e-5
    assert torch.equal(layer.D.detach(), torch.ones(64))
    assert layer.conv1d.weight.shape == (128 + 16, 1, 4)
    assert layer.in_proj.weight.shape == (2 * 128 + 2 * 8 + 64, 64)
    for p in (layer.A_log, layer.D, layer.dt_bias):
        assert p._no_weight_decay is True


def test_param_groups():
    layer = make(dtype=torch.float32)
    groups = param_groups(layer, weight_decay=0.1)
    no_decay = {n for g in groups if g["weight_decay"] == 0.0 for n in g["param_names"]}
    decay = {n for g in groups if g["weight_decay"] == 0.1 for n in g["param_names"]}
    assert {"A_log", "D", "dt_bias", "norm.weight", "conv1d.bias"} <= no_decay
    assert decay == {"in_proj.weight", "conv1d.weight", "out_proj.weight"}


def test_gradients_flow_to_every_parameter():
    layer = make()
    x = torch.randn(2, 11, 8, dtype=torch.float64, requires_grad=True)
    layer(x).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_mask_zeroes_padding_and_keeps_real_positions():
    layer = make(chunk_size=4)
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    mask = torch.arange(10).expand(2, 10) < torch.tensor([[10], [7]])
    garbage = torch.where(mask.unsqueeze(-1), x, 1e3 * torch.randn_like(x))
    y = layer(garbage, mask)
    assert torch.equal(y[1, 7:], torch.zeros(3, 8, dtype=torch.float64))
    torch.testing.assert_close(y[1, :7], layer(x[1:, :7])[0], atol=1e-12, rtol=1e-12)


def test_long_sequence_large_dt_is_finite():
    layer = make(d_model=4, dtype=torch.float32, d_state=4, headdim=2, chunk_size=64)
    with torch.no_grad():
        layer.dt_bias.fill_(5.0)
    x = (100.0 * torch.randn(1, 4096, 4)).requires_grad_(True)
    y = layer(x)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_bad_input_and_config():
    layer = make(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"x must have shape \(b, l, d_model=8\)"):
        layer(torch.randn(2, 5, 9))
    with pytest.raises(ValueError, match=r"x must have shape"):
        layer(torch.randn(2, 5, 8, 1))
    with pytest.raises(ValueError, match=r"mask must have shape \(b, l\)=\(2, 5\)"):
        layer(torch.randn(2, 5, 8), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"x_t must have shape"):
        layer.step(torch.randn(2, 3), layer.allocate_state(2))
    with pytest.raises(ValueError, match="state must be a Mamba2State"):
        layer.step(torch.randn(2, 8), None)
    with pytest.raises(ValueError, match="headdim must divide"):
        Mamba2Config(d_model=8, headdim=5)
    with pytest.raises(ValueError, match="algorithm"):
        Mamba2Config(d_model=8, headdim=4, algorithm="fast")
    with pytest.raises(ValueError, match="A_init_range"):
        Mamba2Config(d_model=8, headdim=4, A_init_range=(0.0, 1.0))
