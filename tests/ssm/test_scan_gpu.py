"""Selective scan and the state-space layers on a CUDA device: the ``triton`` and ``torch`` backends
against the reference loop (outputs and every gradient), reduced precision, the Mamba block with
the triton backend, Mamba-2 / S4D against their CPU results, and a bf16-autocast training step of
the diffusion denoiser.

Glossary: b batch, d channels, l length, n state size.

Everything here but the CPU dispatch check is skipped without CUDA, and the triton cases also
without triton (CI has neither).
"""
from __future__ import annotations

import copy

import pytest
import torch

from mambadiff.ssm.scan import available_backends, selective_scan
from mambadiff.ssm.scan.reference import selective_scan_reference

CUDA = torch.cuda.is_available()
DEV = "cuda"
TRITON = CUDA and "triton" in available_backends()  # probes triton only when CUDA is there
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
needs_triton = pytest.mark.skipif(not TRITON, reason="needs a CUDA device and triton")

GPU_BACKENDS = [pytest.param("triton", marks=needs_triton), pytest.param("torch", marks=needs_cuda)]
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
TOL32 = {"rtol": 6e-4, "atol": 2e-3}  # test_scan.py's float32 tolerances
LAYER_TOL = {"rtol": 1e-3, "atol": 1e-4}  # float32 layer outputs / grads, GPU vs CPU or backend


@pytest.fixture(autouse=True)
def _no_tf32():
    """TF32 convolutions / matmuls (cuDNN's default) would dominate the float32 comparisons."""
    if not CUDA:
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def make_inputs(b, d, l, n, seed, *, with_D=True, with_z=True, with_bias=True, softplus=True,
                with_h0=False):
    """Random float64 inputs on the GPU (without softplus, delta is drawn positive)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    delta = r(b, d, l) * 0.5 if softplus else torch.rand(b, d, l, generator=g, dtype=torch.float64) * 0.5
    args = {
        "u": r(b, d, l), "delta": delta,
        "A": -(0.05 + torch.rand(d, n, generator=g, dtype=torch.float64) * 2.95),
        "B": r(b, n, l), "C": r(b, n, l),
        "D": r(d) if with_D else None,
        "z": r(b, d, l) if with_z else None,
        "delta_bias": (r(d) * 0.3 if softplus else torch.rand(d, generator=g, dtype=torch.float64)
                       * 0.1) if with_bias else None,
        "initial_state": r(b, d, n) if with_h0 else None,
    }
    return {k: (v.to(DEV) if v is not None else None) for k, v in args.items()}


def run_with_grads(fn, args, softplus, return_last_state, seed):
    """Runs fn, backprops a fixed random linear loss of its outputs; returns (y, h, grads)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items() if v is not None}
    out = fn(**leaves, delta_softplus=softplus, return_last_state=return_last_state)
    y, h = out if return_last_state else (out, None)
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g, dtype=torch.float64).to(y)).sum()
    if h is not None:
        loss = loss + (h * torch.randn(h.shape, generator=g, dtype=torch.float64).to(h)).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names])
    return y.detach(), (None if h is None else h.detach()), dict(zip(names, grads))


def assert_close(name, got, want, **tol):
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    torch.testing.assert_close(got.double(), want.double(), **tol, msg=lambda m: f"{name}: {m}")


def rel_err(got, want) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-12)).item()


# --------------------------------------------------------------------------------------------------
# backends against the reference: float32 outputs and gradients

# (b, d, l, n, options): d not a multiple of the triton block (16 to 64 channels), l = 1, 7 and 300
# (several 32-step checkpoint chunks, the last one partial), with and without each optional input
CASES = [
    (2, 37, 300, 16, {"with_h0": True, "rls": True}),
    (1, 5, 1, 4, {"rls": True}),
    (3, 70, 7, 4, {"with_D": False, "with_z": False, "with_bias": False}),
    (2, 33, 300, 4, {"softplus": False, "with_h0": True}),
    (2, 64, 7, 16, {"with_z": False, "with_h0": True, "rls": True}),
    (1, 130, 300, 16, {"with_D": False, "with_bias": False}),
    (2, 19, 300, 16, {"with_h0": True, "rls": True, "softplus": False, "with_z": False}),
]


@pytest.mark.parametrize("case", CASES, ids=[f"b{c[0]}-d{c[1]}-l{c[2]}-n{c[3]}" for c in CASES])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_float32_matches_reference(backend, case):
    b, d, l, n, opts = case
    opts = dict(opts)
    rls, softplus = opts.pop("rls", False), opts.get("softplus", True)
    args = make_inputs(b, d, l, n, seed=b * 1000 + d * 10 + l, **opts)
    ref = run_with_grads(selective_scan_reference, args, softplus, rls, seed=1)  # float64 oracle
    args32 = {k: (v.float() if v is not None else None) for k, v in args.items()}
    got = run_with_grads(lambda **kw: selective_scan(**kw, backend=backend), args32, softplus, rls,
                         seed=1)
    assert got[0].dtype == torch.float32 and got[0].device.type == DEV
    assert_close("y", got[0], ref[0], **TOL32)
    if rls:
        assert_close("last_state", got[1], ref[1], **TOL32)
    assert set(got[2]) == set(ref[2])
    for name in GRAD_NAMES:
        if name in ref[2]:
            assert got[2][name].dtype == torch.float32
            assert_close(f"grad {name}", got[2][name], ref[2][name], **TOL32)


def _time_major(t):
    return t.transpose(1, 2).contiguous().transpose(1, 2)  # (b, d, l) view of a (b, l, d) tensor


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_mamba_layouts_with_grads(backend):
    """The Mamba block's layouts: delta time-major, z a strided slice of a time-major (b, l, 2d),
    B, C transposed (b, l, n) views, u channel-major."""
    args = make_inputs(2, 45, 100, 16, seed=5, with_h0=True)
    ref = run_with_grads(selective_scan_reference, args, True, True, seed=2)
    a32 = {k: v.float() for k, v in args.items()}
    a32["delta"] = _time_major(a32["delta"])
    a32["z"] = _time_major(torch.cat([a32["z"], a32["z"]], dim=1))[:, :45]
    a32["B"], a32["C"] = _time_major(a32["B"]), _time_major(a32["C"])
    assert not any(a32[k].is_contiguous() for k in ("delta", "z", "B", "C"))
    got = run_with_grads(lambda **kw: selective_scan(**kw, backend=backend), a32, True, True, seed=2)
    assert_close("y", got[0], ref[0], **TOL32)
    assert_close("last_state", got[1], ref[1], **TOL32)
    for name in GRAD_NAMES:
        assert_close(f"grad {name}", got[2][name], ref[2][name], **TOL32)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_forward_without_grad(backend):
    args = {k: (v.float() if v is not None else None)
            for k, v in make_inputs(3, 40, 77, 16, seed=8, with_h0=True).items()}
    with torch.no_grad():
        y, h = selective_scan(**args, return_last_state=True, backend=backend)
    y_ref, h_ref = selective_scan_reference(**args, return_last_state=True)
    assert_close("y", y, y_ref, **TOL32)
    assert_close("last_state", h, h_ref, **TOL32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_half_activations_with_float32_params(backend, dtype):
    """Reduced-precision activations with float32 A, D, bias, initial state (the Mamba block under
    autocast): computed in float32, returned in the activations' dtype, gradients in each input's
    dtype and close to the float32 reference on the same (rounded) inputs."""
    args = make_inputs(2, 48, 300, 16, seed=4, with_h0=True)
    low = {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v.float())
           for k, v in args.items()}
    got = run_with_grads(lambda **kw: selective_scan(**kw, backend=backend), low, True, True, seed=6)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    for name, gr in got[2].items():
        assert gr.dtype == low[name].dtype, name
        assert torch.isfinite(gr).all(), name
    ref = run_with_grads(selective_scan_reference, {k: v.double() for k, v in low.items()}, True,
                         True, seed=6)
    torch.testing.assert_close(got[0].float(), ref[0].float(), rtol=2e-2, atol=2e-2)
    assert rel_err(got[1], ref[1]) < 2e-2
    for name in GRAD_NAMES:
        assert rel_err(got[2][name], ref[2][name]) < 2e-2, name


# --------------------------------------------------------------------------------------------------
# dispatch


def test_triton_backend_refuses_cpu_tensors():
    """Runs everywhere: the check comes before triton is imported."""
    u = torch.randn(1, 2, 5)
    with pytest.raises(ValueError, match="backend 'triton' needs CUDA tensors"):
        selective_scan(u, u.abs(), -torch.ones(2, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5),
                       backend="triton")


@needs_cuda
def test_auto_on_cuda_prefers_mamba_ssm_then_triton():
    from mambadiff.ssm import scan

    u = torch.randn(1, 2, 5, device=DEV)
    if scan._mamba_ssm_available():
        assert scan._pick_auto(u, None) == "mamba_ssm"
    want = "triton" if TRITON else "torch"
    assert scan._pick_auto(u, torch.zeros(1, 2, 3, device=DEV)) == want
    assert ("triton" in available_backends()) == TRITON


# --------------------------------------------------------------------------------------------------
# layers on the GPU


def _layer_grads(layer, x, mask=None, seed=0):
    """Output and (input grad, parameter grads) of a fixed random linear loss."""
    x = x.detach().clone().requires_grad_(True)
    y = layer(x, mask=mask)
    g = torch.Generator().manual_seed(seed)
    (y * torch.randn(y.shape, generator=g).to(y)).sum().backward()
    grads = {"x": x.grad.detach()}
    grads.update({k: p.grad.detach() for k, p in layer.named_parameters() if p.grad is not None})
    return y.detach(), grads


@needs_triton
def test_mamba_block_triton_matches_reference():
    from mambadiff.ssm import Mamba, MambaConfig

    torch.manual_seed(0)
    layer = Mamba(MambaConfig(d_model=40, d_state=16, scan_backend="triton")).to(DEV)
    ref_layer = copy.deepcopy(layer)
    ref_layer.config.scan_backend = "reference"
    x = torch.randn(3, 60, 40, device=DEV)
    mask = torch.ones(3, 60, dtype=torch.bool, device=DEV)
    mask[1, 45:] = False  # right padding
    y, grads = _layer_grads(layer, x, mask)
    y_ref, grads_ref = _layer_grads(ref_layer, x, mask)
    assert_close("y", y, y_ref, **LAYER_TOL)
    assert set(grads) == set(grads_ref)
    for name in grads:
        assert_close(f"grad {name}", grads[name], grads_ref[name], **LAYER_TOL)


def _mamba2(**kw):
    from mambadiff.ssm import Mamba2, Mamba2Config

    return Mamba2(Mamba2Config(d_model=32, d_state=16, headdim=16, chunk_size=16, **kw))


def _s4d():
    from mambadiff.ssm import S4D, S4DConfig

    return S4D(S4DConfig(d_model=32, d_state=16))


LAYERS = {
    "mamba2-chunked": lambda: _mamba2(),
    "mamba2-scan-auto": lambda: _mamba2(algorithm="scan"),  # triton on CUDA when it imports
    "s4d": _s4d,
}


@needs_cuda
@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_on_cuda_match_cpu(name):
    torch.manual_seed(1)
    layer = LAYERS[name]()
    x = torch.randn(2, 50, 32)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[0, 37:] = False
    y_cpu, grads_cpu = _layer_grads(layer, x, mask)
    gpu = copy.deepcopy(layer).to(DEV)
    for p in gpu.parameters():
        p.grad = None
    y_gpu, grads_gpu = _layer_grads(gpu, x.to(DEV), mask.to(DEV))
    assert y_gpu.device.type == DEV
    assert_close("y", y_gpu.cpu(), y_cpu, **LAYER_TOL)
    assert set(grads_gpu) == set(grads_cpu)
    for k in grads_cpu:
        assert_close(f"grad {k}", grads_gpu[k].cpu(), grads_cpu[k], **LAYER_TOL)


# --------------------------------------------------------------------------------------------------
# one training step of the diffusion denoiser under bf16 autocast


@needs_cuda
@pytest.mark.parametrize("backbone", ["mamba", "mamba2", "s4d"])
def test_denoiser_train_step_bf16_autocast_is_finite(backbone):
    from mambadiff.diffusion import GaussianDiffusion
    from mambadiff.models import BackboneConfig, Denoiser, DenoiserConfig
    from mambadiff.models.layer_options import Mamba2Options, MambaOptions, S4DOptions

    torch.manual_seed(2)
    cfg = DenoiserConfig(
        vocab_size=50, emb_dim=16, diffusion_steps=100, dropout=0.1,
        backbone=BackboneConfig(name=backbone, d_model=32, n_layers=2, bidirectional=True,
                                mamba=MambaOptions(d_state=16, scan_backend="triton" if TRITON else "auto"),
                                mamba2=Mamba2Options(d_state=16, headdim=16, chunk_size=16),
                                s4d=S4DOptions(d_state=16)))
    model = Denoiser(cfg).to(DEV).train()
    diffusion = GaussianDiffusion.from_name("sqrt", 100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b, l = 4, 24
    ids = torch.randint(0, 50, (b, l), device=DEV)
    input_mask = torch.zeros(b, l, dtype=torch.long, device=DEV)
    input_mask[:, l // 2:] = 1  # second half is the target
    t = torch.randint(0, 100, (b,), device=DEV)
    with torch.autocast(DEV, dtype=torch.bfloat16):
        losses = diffusion.training_losses(model, ids, input_mask, t)
    loss = losses["loss"].mean()
    assert torch.isfinite(loss), loss
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert len(grads) > len(list(model.parameters())) // 2
    for name, gr in grads.items():
        assert torch.isfinite(gr).all(), name
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
