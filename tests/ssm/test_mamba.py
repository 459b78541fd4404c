"""Mamba (S6) block: shapes, step/forward parity, init, optimizer groups, stability, errors.

Glossary: b batch, l length, d model width, e inner width, n state size, r dt rank.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mambadiff.ssm import Mamba, MambaConfig, MambaState, param_groups


def make(d_model=8, dtype=torch.float64, **kw) -> Mamba:
    kw.setdefault("d_state", 4)
    kw.setdefault("scan_backend", "reference")
    return Mamba(MambaConfig(d_model=d_model, **kw)).to(dtype)


def run_steps(layer, x):
    state = layer.allocate_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state  # (b, l, d)


def test_output_shape_and_dtype():
    layer = make(dtype=torch.float32)
    x = torch.randn(3, 10, 8)  # (b, l, d)
    y = layer(x)
    assert y.shape == (3, 10, 8) and y.dtype == torch.float32


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_step_reproduces_forward(dtype, atol):
    layer = make(d_model=8, dtype=dtype, d_conv=3)
    x = torch.randn(2, 13, 8, dtype=dtype)  # (b, l, d)
    y_par = layer(x)  # (b, l, d)
    y_seq, state = run_steps(layer, x)
    torch.testing.assert_close(y_seq, y_par, atol=atol, rtol=atol)
    assert isinstance(state, MambaState)
    assert state.conv_state.shape == (2, 16, 2) and state.ssm_state.shape == (2, 16, 4)


def test_step_with_conv_width_one_and_state_not_mutated():
    layer = make(d_conv=1)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    y_seq, _ = run_steps(layer, x)
    torch.testing.assert_close(y_seq, layer(x), atol=1e-10, rtol=1e-10)

    layer = make()
    state = layer.allocate_state(2)
    before = (state.conv_state.clone(), state.ssm_state.clone())
    layer.step(torch.randn(2, 8, dtype=torch.float64), state)
    assert torch.equal(state.conv_state, before[0]) and torch.equal(state.ssm_state, before[1])


def test_init_properties():
    cfg = MambaConfig(d_model=256)
    assert (cfg.d_state, cfg.d_conv, cfg.expand) == (16, 4, 2)
    assert cfg.dt_rank == math.ceil(256 / 16) == 16
    assert MambaConfig(d_model=17).dt_rank == 2
    assert MambaConfig(d_model=8, dt_rank=3).dt_rank == 3
    layer = Mamba(cfg)
    e, n, r = 512, 16, 16

    dt = F.softplus(layer.dt_proj.bias.detach().double())  # (e,)
    assert dt.shape == (e,)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    # log-uniform: log dt is spread over the whole range, centred on its midpoint
    log_dt = dt.log()
    mid = 0.5 * (math.log(1e-3) + math.log(1e-1))
    assert abs(log_dt.mean().item() - mid) < 0.25
    assert log_dt.min() < math.log(2e-3) and log_dt.max() > math.log(5e-2)

    bound = r ** -0.5 * cfg.dt_scale
    w = layer.dt_proj.weight.detach()  # (e, r)
    assert w.shape == (e, r) and w.abs().max() <= bound and w.abs().max() > 0.9 * bound

    expected = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand(e, n)  # (e, n)
    torch.testing.assert_close(layer.A_log.detach(), expected)
    assert torch.equal(layer.D.detach(), torch.ones(e))
    for p in (layer.A_log, layer.D, layer.dt_proj.bias):
        assert getattr(p, "_no_weight_decay", False) is True
    assert layer.in_proj.weight.shape == (2 * e, 256)
    assert layer.x_proj.weight.shape == (r + 2 * n, e)
    assert layer.conv1d.weight.shape == (e, 1, 4)
    assert layer.out_proj.weight.shape == (256, e)


def test_param_groups_split():
    layer = make(dtype=torch.float32, bias=True)
    groups = param_groups(layer, weight_decay=0.1)
    by_decay = {g["weight_decay"]: set(g["param_names"]) for g in groups}
    assert set(by_decay) == {0.1, 0.0}
    no_decay, decay = by_decay[0.0], by_decay[0.1]
    assert {"A_log", "D", "dt_proj.bias", "conv1d.bias", "in_proj.bias",
            "out_proj.bias"} <= no_decay
    assert decay == {"in_proj.weight", "conv1d.weight", "x_proj.weight", "dt_proj.weight",
                     "out_proj.weight"}
    n_params = len(list(layer.parameters()))
    assert sum(len(g["params"]) for g in groups) == n_params
    # usable as-is by AdamW
    opt = torch.optim.AdamW(groups, lr=1e-3)
    layer(torch.randn(2, 5, 8)).sum().backward()
    opt.step()
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(layer, weight_decay=-1.0)


def test_param_groups_lr_scale_and_frozen():
    layer = make(dtype=torch.float32)
    layer.A_log._lr_scale = 0.1
    layer.out_proj.weight.requires_grad_(False)
    groups = param_groups(layer, weight_decay=0.05, lr=2e-3)
    names = [n for g in groups for n in g["param_names"]]
    assert "out_proj.weight" not in names and len(names) == len(set(names))
    scaled = [g for g in groups if g["lr_scale"] != 1.0]
    assert len(scaled) == 1 and scaled[0]["param_names"] == ["A_log"]
    assert scaled[0]["weight_decay"] == 0.0 and scaled[0]["lr"] == pytest.approx(2e-4)


def test_gradients_flow_to_every_parameter():
    layer = make(dtype=torch.float64)
    x = torch.randn(2, 9, 8, dtype=torch.float64, requires_grad=True)
    layer(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_mask_zeroes_padding_and_keeps_real_positions():
    layer = make()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    garbage = x.clone()
    garbage[1, 6:] = 1e3 * torch.randn(4, 8, dtype=torch.float64)
    y = layer(garbage, mask)
    assert torch.equal(y[1, 6:], torch.zeros(4, 8, dtype=torch.float64))
    torch.testing.assert_close(y[1, :6], layer(x[1:, :6])[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(y[0], layer(x[:1])[0], atol=1e-12, rtol=1e-12)


def test_long_sequence_large_dt_is_finite():
    layer = make(d_model=4, dtype=torch.float32, d_state=4)
    with torch.no_grad():
        layer.dt_proj.bias.fill_(5.0)  # dt ~ 5: exp(dt*A) underflows towards 0
    x = (100.0 * torch.randn(1, 4096, 4)).requires_grad_(True)  # (b, l, d)
    y = layer(x)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in layer.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_auto_backend_matches_reference():
    ref = make(dtype=torch.float32)
    auto = make(dtype=torch.float32, scan_backend="auto")
    auto.load_state_dict(ref.state_dict())
    x = torch.randn(2, 17, 8)
    torch.testing.assert_close(auto(x), ref(x), atol=1e-4, rtol=1e-4)


def test_bad_input_raises_value_error_naming_argument():
    layer = make(dtype=torch.float32)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"x must have shape \(b, l, d_model=8\)"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"x must have shape \(b, l, d_model=8\)"):
        layer(torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"mask must have shape \(b, l\)=\(2, 5\)"):
        layer(x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        layer(x, torch.ones(2, 5))
    bad_mask = torch.tensor([[True, False, True, True, True]] * 2)
    with pytest.raises(ValueError, match="mask must be right-padded"):
        layer(x, bad_mask)
    with pytest.raises(ValueError, match="x has dtype torch.float64"):
        layer(x.double())
    with pytest.raises(ValueError, match="x must be a floating-point"):
        layer(torch.ones(2, 5, 8, dtype=torch.long))
    state = layer.allocate_state(2)
    with pytest.raises(ValueError, match=r"x_t must have shape \(b, d_model=8\)"):
        layer.step(x, state)
    with pytest.raises(ValueError, match=r"state.ssm_state must have shape"):
        layer.step(x[:, 0], MambaState(state.conv_state, state.ssm_state[:, :3]))
    with pytest.raises(ValueError, match=r"state.conv_state must have shape"):
        layer.step(x[:1, 0], state)


@pytest.mark.parametrize("kwargs,field", [
    ({"d_model": 0}, "d_model"), ({"d_model": 8, "d_state": -1}, "d_state"),
    ({"d_model": 8, "dt_rank": "big"}, "dt_rank"), ({"d_model": 8, "dt_min": 0.5}, "dt_min"),
    ({"d_model": 8, "scan_backend": "cuda"}, "scan_backend"),
    ({"d_model": 8, "dt_init": "zeros"}, "dt_init"),
])
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MambaConfig(**kwargs)
