"""ctypes signatures of the kernel library's entry points and the helpers every wrapper uses to call them.

Glossary: b batch, l length, c channels (the last, unit-stride axis of a time-major tensor).

Each entry point exists once per element type, with the suffix ``_f32`` or ``_f64`` (see
csrc/ss_math.h); ``SIGNATURES`` lists the argument and return types of each base name, which
``mambadiff.kernels.build`` declares when it loads the library. Callers get a typed function with
``mambadiff.kernels.function(name, dtype)``.
"""
from __future__ import annotations

import ctypes

import torch

__all__ = ["SIGNATURES", "TYPES", "batch_time_strides", "declare", "ptr", "suffix_for", "threads_for",
           "time_origin", "unit_last_stride"]

TYPES = (("0", "f32"), ("1", "f64"))  # (-DSS_DOUBLE=, symbol suffix)

_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_EPS = object()  # stands for the element type (float / double) of the library copy


# base name -> (argument types, return type)
SIGNATURES = {
    # selective scan (csrc/selective_scan.c): 12 tensors + strides, sizes b d l n, softplus, threads
    "ss_fwd": ([_P] * 13 + [_I64] * 4 + [_I32, _I32], _I32),
    # 21 tensors + strides, sizes b d l n g, softplus, threads
    "ss_bwd": ([_P] * 22 + [_I64] * 5 + [_I32, _I32], _I32),
    "ss_abi_version": ([], _I32),  # >= 2000 when built with OpenMP
    # causal conv1d + SiLU (csrc/causal_conv1d.c): x, w, bias, y, strides; b l e k chunk; anti, threads
    "cc_fwd": ([_P] * 5 + [_I64] * 5 + [_I32] * 2, _I32),
    "cc_bwd": ([_P] * 8 + [_I64] * 5 + [_I32] * 2, _I32),  # 7 tensors + strides; sizes, chunk; anti, threads
    # SSD (csrc/ssd_scan.c): 9 tensors (the last state optional) + strides; b l h p n q; threads
    "ssd_fwd": ([_P] * 10 + [_I64] * 6 + [_I32], _I32),
    "ssd_bwd": ([_P] * 15 + [_I64] * 7 + [_I32], _I32),  # 14 tensors + strides; sizes, q, g; threads
    # (gated) RMSNorm (csrc/rms_norm.c): x, z, w, y, rstd, strides; rows, e; eps; threads
    "rn_fwd": ([_P] * 6 + [_I64] * 2 + [_EPS, _I32], _I32),
    "rn_bwd": ([_P] * 9 + [_I64] * 3 + [_I32], _I32),  # 8 tensors + strides; rows, e, tasks; threads
    # flush-to-zero on every thread of the OpenMP pool (csrc/runtime.c)
    "md_flush_denormals": ([_I32], _I32),
}


def declare(lib: ctypes.CDLL) -> None:
    """Set argtypes / restype of every entry point of both element types (AttributeError if one is
    missing: a stale or foreign library)."""
    for _, suffix in TYPES:
        real = ctypes.c_float if suffix == "f32" else ctypes.c_double
        for name, (args, res) in SIGNATURES.items():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes = [real if a is _EPS else a for a in args]
            fn.restype = res


def suffix_for(dtype: torch.dtype) -> str:
    """Symbol suffix of the library copy that computes in ``dtype`` (float32 or float64)."""
    if dtype == torch.float32:
        return "f32"
    if dtype == torch.float64:
        return "f64"
    raise ValueError(f"the C kernels compute in float32 or float64, got {dtype}")


def ptr(t: torch.Tensor | None) -> int | None:
    """The tensor's data pointer, or None (NULL) for an absent optional input."""
    return None if t is None else t.data_ptr()


def threads_for(work: int, min_work_per_thread: int) -> int:
    """torch.get_num_threads(), fewer when a thread would get less than ``min_work_per_thread``:
    below that, waking and joining threads costs more than they save."""
    return max(1, min(torch.get_num_threads(), work // min_work_per_thread))


def batch_time_strides(*tensors: torch.Tensor, reverse: bool = False) -> ctypes.Array:
    """(batch, time) element strides of each time-major (b, l, c) tensor, flattened (channels: 1).

    reverse=True negates the time strides: with ``time_origin`` pointers the kernels then walk every
    sequence from its last step to its first, which is the causal kernel run on the time-flipped
    tensors, without making the flipped copies."""
    vals = [v for t in tensors for v in (t.stride(0), -t.stride(1) if reverse else t.stride(1))]
    return (ctypes.c_int64 * len(vals))(*vals)


def time_origin(t: torch.Tensor, reverse: bool = False) -> int:
    """Data pointer of a time-major (b, l, c) tensor at the kernel's step 0: the tensor's first time
    step, or with reverse=True its last one (see ``batch_time_strides``)."""
    return t.data_ptr() + (t.stride(1) * (t.shape[1] - 1) * t.element_size() if reverse else 0)


def unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    """The kernels read any leading strides but need a unit stride on the last axis."""
    return t if t.stride(-1) == 1 else t.contiguous()
