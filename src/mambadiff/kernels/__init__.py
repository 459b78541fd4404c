"""The compiled CPU kernels: one C library (csrc/) built on first use, loaded with ctypes.

Glossary: b batch, l length, c channels.

csrc/ holds the selective scan (selective_scan.c, wrapped by ``mambadiff.ssm.scan.cpu``), the Mamba
block's fused causal conv1d + SiLU (causal_conv1d.c, ``mambadiff.ssm.conv``), the Mamba-2 SSD
recurrence (ssd_scan.c, ``mambadiff.ssm.ssd``), the fused (gated) RMSNorm (rms_norm.c,
``mambadiff.ssm.norm``) and the flush-to-zero switch of ``mambadiff.runtime`` (runtime.c); all
include ss_math.h, and have AVX-512 / AVX2 paths beside generic C.

- ``build``: compile / cache / load (``$CC``, ``$MAMBADIFF_CACHE``, ``$MAMBADIFF_CFLAGS``).
- ``bindings``: the entry points' ctypes signatures and the pointer / stride helpers of the wrappers.
- ``function(name, dtype)``: the typed entry point ``name`` of the copy computing in ``dtype``.
"""
from __future__ import annotations

import ctypes

import torch

from .bindings import batch_time_strides, ptr, suffix_for, threads_for, time_origin, unit_last_stride
from .build import build_info, cache_dir, is_available, load, unavailable_reason

__all__ = ["batch_time_strides", "build_info", "cache_dir", "function", "is_available", "load", "ptr",
           "threads_for", "time_origin", "unavailable_reason", "unit_last_stride"]


def function(name: str, dtype: torch.dtype) -> ctypes._CFuncPtr:
    """Entry point ``name`` (a key of ``bindings.SIGNATURES``, e.g. ``"ssd_fwd"``) of the library
    copy that computes in ``dtype`` (float32 / float64). RuntimeError if the library cannot be built."""
    lib = load()
    if lib is None:
        raise RuntimeError(f"the C kernels are unavailable: {unavailable_reason()}")
    return getattr(lib, f"{name}_{suffix_for(dtype)}")
