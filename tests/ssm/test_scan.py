"""Selective-scan backends against the reference loop: outputs, gradients, stability, validation.

Glossary: b batch, d channels, l length, n state size.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mambadiff.ssm.scan import BACKENDS, available_backends, selective_scan
from mambadiff import kernels
from mambadiff.ssm.scan import cpu as cpu_backend
from mambadiff.ssm.scan.reference import selective_scan_reference
from mambadiff.ssm.scan.torch_scan import selective_scan_torch

CPU_KERNEL = kernels.is_available()
needs_cpu_kernel = pytest.mark.skipif(
    not CPU_KERNEL, reason=f"C kernel unavailable: {kernels.unavailable_reason()}")

# name -> callable with selective_scan's signature. The torch backend is run with both in-chunk
# schemes and chunk sizes that do not divide the drawn lengths, so chunk carries are exercised.
RUNNERS = {
    "cpu": functools.partial(selective_scan, backend="cpu"),
    "torch": functools.partial(selective_scan, backend="torch"),
    "torch-sequential-c5": functools.partial(selective_scan_torch, chunk_size=5,
                                             method="sequential"),
    "torch-doubling-c8": functools.partial(selective_scan_torch, chunk_size=8, method="doubling"),
}
BACKEND_PARAMS = [pytest.param("cpu", marks=needs_cpu_kernel), "torch", "torch-sequential-c5",
                  "torch-doubling-c8"]
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
TOL = {torch.float64: {"rtol": 1e-9, "atol": 1e-10}, torch.float32: {"rtol": 6e-4, "atol": 2e-3}}


def make_inputs(b, d, l, n, dtype, seed, *, with_D=True, with_z=True, with_bias=True,
                softplus=True, with_h0=False, dt_scale=1.0, a_max=3.0):
    """Random inputs (float64 draws cast to dtype). Without softplus, delta is drawn positive."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    delta = r(b, d, l) * 0.5 * dt_scale if softplus else (
        torch.rand(b, d, l, generator=g, dtype=torch.float64) * 0.5 * dt_scale)
    args = {
        "u": r(b, d, l), "delta": delta,
        "A": -(0.05 + torch.rand(d, n, generator=g, dtype=torch.float64) * (a_max - 0.05)),
        "B": r(b, n, l), "C": r(b, n, l),
        "D": r(d) if with_D else None,
        "z": r(b, d, l) if with_z else None,
        "delta_bias": (r(d) * 0.3 if softplus else torch.rand(d, generator=g, dtype=torch.float64)
                    * 0.1) if with_bias else None,
        "initial_state": r(b, d, n) if with_h0 else None,
    }
    return {k: (v.to(dtype) if v is not None else None) for k, v in args.items()}, g


def run_with_grads(fn, args, softplus, return_last_state, g):
    """Runs fn, backprops a random linear loss of its outputs; returns outputs and grads."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()
              if v is not None}
    out = fn(**leaves, delta_softplus=softplus, return_last_state=return_last_state)
    y, h = (out if return_last_state else (out, None))
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)  # (b, d, l)
    loss = (y * wy).sum()
    if h is not None:
        wh = torch.randn(h.shape, generator=g, dtype=torch.float64).to(h.dtype)  # (b, d, n)
        loss = loss + (h * wh).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names])
    return y.detach(), (None if h is None else h.detach()), dict(zip(names, grads))


def assert_close(name, got, want, tol):
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------------------------------
# parity with the reference on random shapes and options

shape_and_options = st.fixed_dictionaries({
    "b": st.integers(1, 3), "d": st.integers(1, 12), "l": st.integers(1, 70), "n": st.integers(1, 17),
    "with_D": st.booleans(), "with_z": st.booleans(), "with_bias": st.booleans(),
    "softplus": st.booleans(), "with_h0": st.booleans(), "return_last_state": st.booleans(),
    "seed": st.integers(0, 2**31 - 1),
})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=shape_and_options)
def test_matches_reference(backend, dtype, case):
    case = dict(case)
    b, d, l, n = (case.pop(k) for k in "bdln")
    softplus, rls, seed = case.pop("softplus"), case.pop("return_last_state"), case.pop("seed")
    args, _ = make_inputs(b, d, l, n, dtype, seed, softplus=softplus, **case)
    tol = TOL[dtype]

    # the same loss weights for both runs
    ref = run_with_grads(selective_scan_reference, args, softplus, rls,
                         torch.Generator().manual_seed(seed + 1))
    got = run_with_grads(RUNNERS[backend], args, softplus, rls,
                         torch.Generator().manual_seed(seed + 1))
    assert_close("y", got[0], ref[0], tol)
    if rls:
        assert_close("last_state", got[1], ref[1], tol)
    assert set(got[2]) == set(ref[2])
    for name in GRAD_NAMES:
        if name in ref[2]:
            assert_close(f"grad {name}", got[2][name], ref[2][name], tol)


@functools.lru_cache(maxsize=1)
def _long_case():
    """(inputs, reference result) for a length spanning three kernel time chunks (128) and d not a
    multiple of the kernel's SIMD block (16); computed once, the reference is the slow part."""
    args, _ = make_inputs(2, 37, 260, 16, torch.float64, 7, with_h0=True)
    ref = run_with_grads(selective_scan_reference, args, True, True, torch.Generator().manual_seed(3))
    return args, ref


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_long_chunks_and_partial_blocks(backend):
    args, ref = _long_case()
    got = run_with_grads(RUNNERS[backend], args, True, True, torch.Generator().manual_seed(3))
    tol = TOL[torch.float64]
    assert_close("y", got[0], ref[0], tol)
    assert_close("last_state", got[1], ref[1], tol)
    for name in GRAD_NAMES:
        assert_close(f"grad {name}", got[2][name], ref[2][name], tol)


@needs_cpu_kernel
@pytest.mark.parametrize("b", [1, 2, 5])
def test_cpu_threads_and_batch_do_not_change_results(b, monkeypatch):
    """Race-free reductions: the result must not depend on the thread count (also for b = 1, where
    the backward splits channels into several groups whose dB, dC partials are summed)."""
    monkeypatch.setattr(cpu_backend, "MIN_WORK_PER_THREAD", 1)  # use every thread even when small
    args, _ = make_inputs(b, 40, 50, 16, torch.float64, 11, with_h0=True)
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            results.append(run_with_grads(RUNNERS["cpu"], args, True, True,
                                          torch.Generator().manual_seed(5)))
    finally:
        torch.set_num_threads(old)
    for other in results[1:]:
        torch.testing.assert_close(other[0], results[0][0], rtol=1e-12, atol=1e-12)
        for name in GRAD_NAMES:
            torch.testing.assert_close(other[2][name], results[0][2][name], rtol=1e-12,
                                       atol=1e-12)


# --------------------------------------------------------------------------------------------------
# numerical safety at long length with large steps


@pytest.mark.parametrize("backend", ["reference", *BACKEND_PARAMS])
def test_long_sequence_large_dt_is_finite(backend):
    b, d, l, n = 1, 3, 4096, 4
    g = torch.Generator().manual_seed(0)
    args = {
        "u": torch.randn(b, d, l, generator=g),
        "delta": 10.0 + torch.randn(b, d, l, generator=g),  # softplus(delta) ~ 10
        "A": -torch.linspace(0.5, 20.0, d * n).reshape(d, n),  # dt * A down to about -250
        "B": torch.randn(b, n, l, generator=g), "C": torch.randn(b, n, l, generator=g),
        "D": torch.randn(d, generator=g), "z": torch.randn(b, d, l, generator=g),
        "delta_bias": torch.randn(d, generator=g),
    }
    fn = (functools.partial(selective_scan, backend="reference") if backend == "reference"
          else RUNNERS[backend])
    y, h, grads = run_with_grads(fn, args, True, True, g)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    for name, gr in grads.items():
        assert torch.isfinite(gr).all(), f"grad {name} has non-finite values"
    if backend != "reference":
        y_ref = selective_scan_reference(**args, delta_softplus=True)
        torch.testing.assert_close(y, y_ref, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# dtypes, layouts, dispatch


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_non_contiguous_inputs(backend):
    """The Mamba block passes B, C as transposed views of (b, l, n) and z as a strided slice."""
    args, _ = make_inputs(2, 9, 21, 16, torch.float64, 3)
    args["B"] = args["B"].transpose(1, 2).contiguous().transpose(1, 2)  # (b, n, l) view
    args["C"] = args["C"].transpose(1, 2).contiguous().transpose(1, 2)
    args["z"] = torch.cat([args["z"], args["z"]], dim=1)[:, ::2]  # strided (b, d, l)
    assert not args["B"].is_contiguous() and not args["z"].is_contiguous()
    want = selective_scan_reference(**args)
    torch.testing.assert_close(RUNNERS[backend](**args), want, **TOL[torch.float64])


def _time_major(t):
    return t.transpose(1, 2).contiguous().transpose(1, 2)  # (b, d, l) view of a (b, l, d) tensor


@pytest.mark.parametrize("layout", ["time-major", "strided"])
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_sequence_layouts_with_grads(backend, layout):
    """u, delta, z and the output gradient as the Mamba block produces them: transposed (b, l, d)
    tensors (read in place by the cpu kernel), or strided slices (copied)."""
    args, _ = make_inputs(2, 19, 45, 16, torch.float64, 5, with_h0=True)
    if layout == "time-major":
        lay = {k: _time_major(args[k]) for k in ("u", "delta", "z")}
    else:
        lay = {k: torch.stack([args[k], -args[k]], dim=-1).flatten(2)[:, :, ::2]  # l stride 2
               for k in ("u", "delta", "z")}
    assert all(not t.is_contiguous() and torch.equal(t, args[k]) for k, t in lay.items())
    ref = run_with_grads(selective_scan_reference, args, True, True,
                         torch.Generator().manual_seed(2))
    got = run_with_grads(RUNNERS[backend], {**args, **lay}, True, True,
                         torch.Generator().manual_seed(2))
    tol = TOL[torch.float64]
    assert_close("y", got[0], ref[0], tol)
    assert_close("last_state", got[1], ref[1], tol)
    for name in GRAD_NAMES:
        assert_close(f"grad {name}", got[2][name], ref[2][name], tol)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_bfloat16_activations_with_float32_params(backend):
    """Reduced-precision activations with float32 A, D, bias: computed in float32, returned in
    the activations' dtype."""
    args, _ = make_inputs(2, 6, 20, 8, torch.float32, 4)
    low = {k: (v.to(torch.bfloat16) if k in ("u", "delta", "B", "C", "z") else v)
           for k, v in args.items()}
    y = RUNNERS[backend](**low)
    assert y.dtype == torch.bfloat16
    want = selective_scan_reference(**{k: (v.float() if v is not None else None)
                                       for k, v in low.items()})
    torch.testing.assert_close(y.float(), want, rtol=2e-2, atol=2e-2)


def test_available_backends_and_auto():
    names = available_backends()
    assert "reference" in names and "torch" in names
    assert set(names) <= set(BACKENDS) - {"auto"}
    assert ("cpu" in names) == CPU_KERNEL
    args, _ = make_inputs(2, 5, 17, 4, torch.float64, 9)
    torch.testing.assert_close(selective_scan(**args, backend="auto"),
                               selective_scan_reference(**args), **TOL[torch.float64])


@needs_cpu_kernel
def test_cpu_kernel_cache_is_reused_and_left_clean(tmp_path):
    """A fresh process builds into $MAMBADIFF_CACHE; a second one reuses the file; no temp leftovers."""
    env = {**os.environ, "MAMBADIFF_CACHE": str(tmp_path)}
    code = ("from mambadiff import kernels as k; assert k.is_available(), k.unavailable_reason();"
            "print(k.build_info()['path'])")
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=300, check=False)
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip().splitlines()[-1])
    assert path.parent == tmp_path and path.is_file()
    mtime = path.stat().st_mtime_ns
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert second.returncode == 0, second.stderr
    assert Path(second.stdout.strip().splitlines()[-1]) == path
    assert path.stat().st_mtime_ns == mtime  # not rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp dirs left


def test_without_compiler_cpu_is_unavailable_and_auto_falls_back(tmp_path):
    env = {**os.environ, "MAMBADIFF_CACHE": str(tmp_path), "CC": str(tmp_path / "no-such-cc")}
    code = (
        "import torch\n"
        "from mambadiff.ssm.scan import available_backends, selective_scan\n"
        "assert 'cpu' not in available_backends(), available_backends()\n"
        "u = torch.randn(1, 2, 5); A = -torch.ones(2, 3); B = torch.randn(1, 3, 5)\n"
        "y = selective_scan(u, u.abs(), A, B, B, backend='auto')\n"
        "try:\n"
        "    selective_scan(u, u.abs(), A, B, B, backend='cpu')\n"
        "except RuntimeError as e:\n"
        "    assert 'unavailable' in str(e)\n"
        "else:\n"
        "    raise AssertionError('cpu backend ran without a compiler')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------------------------------
# input validation

b_, d_, l_, n_ = 2, 4, 128, 16


def _good():
    return {"u": torch.randn(b_, d_, l_), "delta": torch.rand(b_, d_, l_), "A": -torch.rand(d_, n_),
                "B": torch.randn(b_, n_, l_), "C": torch.randn(b_, n_, l_), "D": torch.randn(d_),
                "z": torch.randn(b_, d_, l_), "delta_bias": torch.randn(d_),
                "initial_state": torch.randn(b_, d_, n_)}


BAD_CASES = [
    ("B", torch.randn(b_, l_, n_), "B must have shape (b, n, l) = (2, 16, 128), got (2, 128, 16)"),
    ("C", torch.randn(b_, n_), "C must have shape (b, n, l) = (2, 16, 128), got (2, 16)"),
    ("u", torch.randn(d_, l_), "u must have shape (b, d, l), got (4, 128)"),
    ("delta", torch.randn(b_, d_, l_ + 1), "delta must have shape (b, d, l) = (2, 4, 128)"),
    ("A", -torch.rand(d_ + 1, n_), "A must have shape (d, n) = (4, n), got (5, 16)"),
    ("A", -torch.rand(d_), "A must have shape (d, n) = (4, n), got (4,)"),
    ("D", torch.randn(d_, 1), "D must have shape (d,) = (4,), got (4, 1)"),
    ("delta_bias", torch.randn(d_ + 2), "delta_bias must have shape (d,) = (4,), got (6,)"),
    ("z", torch.randn(b_, d_, l_ - 1), "z must have shape (b, d, l) = (2, 4, 128)"),
    ("initial_state", torch.randn(b_, d_, n_ + 1),
     "initial_state must have shape (b, d, n) = (2, 4, 16), got (2, 4, 17)"),
    ("u", torch.zeros(b_, d_, l_, dtype=torch.int64), "u must have a floating-point dtype"),
    ("B", torch.zeros(b_, n_, l_, dtype=torch.int32), "B must have a floating-point dtype"),
    ("delta", torch.rand(b_, d_, l_, dtype=torch.float64),
     "delta must have the same dtype as u (torch.float32), got torch.float64"),
    ("A", -torch.rand(d_, n_, dtype=torch.float16),
     "A must have u's dtype (torch.float32) or torch.float32, got torch.float16"),
    ("A", -torch.rand(d_, n_, dtype=torch.complex64), "A must have a floating-point dtype"),
    ("u", [[1.0]], "u must be a tensor of shape (b, d, l)"),
    ("u", torch.randn(0, d_, l_), "u must have non-zero sizes (b, d, l), got (0, 4, 128)"),
]


@pytest.mark.parametrize("backend", ["reference", "torch", "auto",
                                     pytest.param("cpu", marks=needs_cpu_kernel)])
@pytest.mark.parametrize("arg,value,message", BAD_CASES,
                         ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(BAD_CASES)])
def test_bad_input_raises_value_error(backend, arg, value, message):
    args = _good()
    args[arg] = value
    with pytest.raises(ValueError) as info:
        selective_scan(**args, backend=backend)
    assert message in str(info.value)


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of .*'cuda'"):
        selective_scan(**_good(), backend="cuda")


# --------------------------------------------------------------------------------------------------
# benchmark smoke test


def test_scan_benchmark_records_and_json(tmp_path, capsys):
    import json

    from mambadiff.bench.scan import run_scan_benchmark

    path = tmp_path / "out" / "scan.json"
    cases = [(2, 16, 8, 4), {"batch": 1, "seq_len": 2050, "d_inner": 2, "d_state": 2, "modes": ("fwd+bwd",)}]
    records = run_scan_benchmark(cases=cases, repeats=1, warmup=0, json_path=path)
    assert json.loads(path.read_text()) == records
    assert [p.name for p in path.parent.iterdir()] == ["scan.json"]  # no temp file left
    assert "vs reference" in capsys.readouterr().out
    names = set(available_backends()) - {"triton"}  # CUDA-only: not timed on CPU tensors
    assert {(r["backend"], r["mode"]) for r in records if r["seq_len"] == 16} == {
        (b, m) for b in names for m in ("fwd", "fwd+bwd")}
    for r in records:
        assert r["model"] == "scan" and r["d_inner"] in (8, 2)
        if r["skipped"]:  # the reference's fwd+bwd beyond REFERENCE_MAX_BWD_LEN
            assert r["backend"] == "reference" and r["seq_len"] == 2050 and r["seconds"] is None
            continue
        assert r["seconds"] > 0 and r["tokens_per_s"] > 0 and r["peak_mem_mb"] >= 0
        if r["seq_len"] == 16:
            assert r["speedup_vs_reference"] > 0
    assert any(r["skipped"] for r in records)


def test_scan_benchmark_ssd_kernel(capsys):
    from mambadiff.bench.scan import run_scan_benchmark

    records = run_scan_benchmark(cases=[(1, 70, 32, 4)], repeats=1, warmup=0, kernel="ssd", head_dim=16)
    algorithms = {"reference", "chunked"} | ({"cpu"} if CPU_KERNEL else set())
    assert {(r["backend"], r["mode"]) for r in records} == {
        (a, m) for a in algorithms for m in ("fwd", "fwd+bwd")}
    assert all(r["model"] == "ssd" and r["seconds"] > 0 for r in records)
    assert capsys.readouterr().out.startswith("SSD (float32")
    with pytest.raises(ValueError, match="head_dim"):
        run_scan_benchmark(cases=[(1, 8, 30, 4)], repeats=1, warmup=0, kernel="ssd", head_dim=16)
