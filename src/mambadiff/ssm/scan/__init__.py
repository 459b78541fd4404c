"""Selective scan (S6) behind one dispatch function.

Glossary: b batch, d channels (inner width), l length, n state size.

Backends
- ``reference``: sequential PyTorch loop (the oracle; any dtype, any device).
- ``cpu``: fused C kernel (OpenMP), compiled on first use and cached; never materialises (b, l, d, n).
  It reads u, delta, z in place both as contiguous (b, d, l) and as transposed (b, l, d) tensors
  (the Mamba block's layout), and returns y / their gradients in the matching layout.
- ``torch``: pure PyTorch, runs on any device.
- ``triton``: Triton GPU kernels (CUDA tensors only; triton is imported only when this backend is
  used or probed on a machine with CUDA, so CPU-only installs need no triton).
- ``auto``: the fastest available for the inputs' device: ``cpu`` on CPU tensors when the kernel
  builds, else ``torch``; on CUDA ``mamba_ssm``'s fused kernel when that package imports (and no
  initial_state is given), else ``triton`` when it imports, else ``torch``.

dtypes: u, delta, B, C, z share one floating dtype. A, D, delta_bias and initial_state may have that
dtype or float32 (the Mamba block keeps its parameters in float32 under reduced precision). The
``cpu``, ``torch`` and ``triton`` backends compute float16 / bfloat16 in float32 and return u's dtype.
"""
from __future__ import annotations

import torch

from .reference import selective_scan_reference

BACKENDS = ("auto", "reference", "cpu", "torch", "triton")
CONCRETE_BACKENDS = ("reference", "cpu", "torch", "triton")


def available_backends() -> tuple[str, ...]:
    """Concrete backends usable now (``cpu`` only when its C kernel compiles and loads, ``triton``
    only when CUDA is available and triton imports)."""
    from ... import kernels

    usable = {"cpu": kernels.is_available, "triton": _triton_available}
    return tuple(name for name in CONCRETE_BACKENDS if name not in usable or usable[name]())


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                   initial_state=None, return_last_state=False, backend="auto"):
    """Selective scan. Shapes: u, delta, z (b, d, l); A (d, n); B, C (b, n, l); D, delta_bias (d,);
    initial_state (b, d, n). Returns y (b, d, l) [, last state (b, d, n)]."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _validate(u, delta, A, B, C, D, z, delta_bias, initial_state)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state)

    if backend == "auto":
        backend = _pick_auto(u, initial_state)
    if backend == "reference":
        return selective_scan_reference(*args)
    if backend == "torch":
        from .torch_scan import selective_scan_torch

        return selective_scan_torch(*args)
    if backend == "cpu":
        from ... import kernels
        from . import cpu

        if u.device.type != "cpu":
            raise ValueError(f"backend 'cpu' needs CPU tensors, got u on {u.device}")
        if not kernels.is_available():
            raise RuntimeError(f"selective_scan backend 'cpu' is unavailable: "
                               f"{kernels.unavailable_reason()}")
        return cpu.selective_scan_cpu(*args)
    if backend == "triton":
        if u.device.type != "cuda":
            raise ValueError(f"backend 'triton' needs CUDA tensors, got u on {u.device}")
        if not _triton_available():
            raise RuntimeError("selective_scan backend 'triton' is unavailable: triton does not "
                               "import here")
        from .triton_scan import selective_scan_triton

        return selective_scan_triton(*args)
    if backend == "mamba_ssm":  # only reachable through auto
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                 return_last_state)
    raise AssertionError(backend)


def _pick_auto(u: torch.Tensor, initial_state) -> str:
    if u.device.type == "cpu":
        from ... import kernels

        return "cpu" if kernels.is_available() else "torch"
    if u.device.type == "cuda" and initial_state is None and _mamba_ssm_available():
        return "mamba_ssm"
    if u.device.type == "cuda" and _triton_available():
        return "triton"
    return "torch"


_MAMBA_SSM: bool | None = None


def _mamba_ssm_available() -> bool:
    global _MAMBA_SSM
    if _MAMBA_SSM is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401

            _MAMBA_SSM = True
        except Exception:  # noqa: BLE001  ImportError, or a broken CUDA build raising anything
            _MAMBA_SSM = False
    return _MAMBA_SSM


_TRITON: bool | None = None


def _triton_available() -> bool:
    """CUDA is available and the Triton kernels import (checked once; CUDA first, so machines
    without a GPU never import triton)."""
    global _TRITON
    if _TRITON is None:
        _TRITON = False
        if torch.cuda.is_available():
            try:
                from . import triton_scan  # noqa: F401
            except Exception:  # noqa: BLE001  ImportError, or a triton that fails on import
                _TRITON = False
            else:
                _TRITON = True
    return _TRITON


# --------------------------------------------------------------------------------------------------
# validation


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def _check_tensor(name: str, t, dims: str, expected: tuple, u: torch.Tensor | None,
                  param: bool = False) -> None:
    """``expected`` holds ints, or None where any size is accepted (reported by letter)."""
    letters = dims.strip("()").rstrip(",").split(", ")
    want = _fmt([e if e is not None else letter for e, letter in zip(expected, letters)])
    want = dims if want == dims else f"{dims} = {want}"
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape {want}, "  # noqa: TRY004 (contract)
                         f"got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must have a floating-point dtype (float16, bfloat16, float32, "
                         f"float64), got {t.dtype}")
    shape = tuple(t.shape)
    if len(shape) != len(expected) or any(e is not None and s != e
                                          for s, e in zip(shape, expected)):
        raise ValueError(f"{name} must have shape {want}, got {_fmt(shape)}")
    if u is None:
        return
    if t.device != u.device:
        raise ValueError(f"{name} must be on the same device as u ({u.device}), got {t.device}")
    if param:
        if t.dtype not in (u.dtype, torch.float32):
            raise ValueError(f"{name} must have u's dtype ({u.dtype}) or torch.float32, "
                             f"got {t.dtype}")
    elif t.dtype != u.dtype:
        raise ValueError(f"{name} must have the same dtype as u ({u.dtype}), got {t.dtype}")


def _validate(u, delta, A, B, C, D, z, delta_bias, initial_state) -> None:
    _check_tensor("u", u, "(b, d, l)", (None, None, None), None)
    b, d, l = u.shape
    if b == 0 or d == 0 or l == 0:
        raise ValueError(f"u must have non-zero sizes (b, d, l), got {_fmt(u.shape)}")
    _check_tensor("delta", delta, "(b, d, l)", (b, d, l), u)
    _check_tensor("A", A, "(d, n)", (d, None), u, param=True)
    n = A.shape[1]
    if n == 0:
        raise ValueError(f"A must have n >= 1 state columns, got shape {_fmt(A.shape)}")
    _check_tensor("B", B, "(b, n, l)", (b, n, l), u)
    _check_tensor("C", C, "(b, n, l)", (b, n, l), u)
    if D is not None:
        _check_tensor("D", D, "(d,)", (d,), u, param=True)
    if z is not None:
        _check_tensor("z", z, "(b, d, l)", (b, d, l), u)
    if delta_bias is not None:
        _check_tensor("delta_bias", delta_bias, "(d,)", (d,), u, param=True)
    if initial_state is not None:
        _check_tensor("initial_state", initial_state, "(b, d, n)", (b, d, n), u, param=True)
