"""Process-wide runtime settings that make CPU training faster.

``flush_denormals`` turns on flush-to-zero / denormals-are-zero for CPU float math. A softmax over a
large vocabulary produces probabilities below float32's normal range (~1e-38) once a model is
confident, and every matrix product that reads them (the backward of the tied output head) then
runs on microcode assists, many times slower. Measured on QQP with an 8,000-word vocabulary: training
fell from 3,600 to under 1,500 tokens/s within 400 steps, with the time in the head's sgemm and
log_softmax backward. Zeroing such values changes no result that matters (they are below 1e-38).
The training loop calls it for CPU runs (``train.flush_denormals``).

``tune_cpu_allocator`` keeps large freed blocks inside the process. By default glibc serves every
allocation above a (dynamic, at most 32 MB) threshold with a fresh ``mmap`` and returns it with
``munmap`` on free. A training step allocates and frees activations of tens to hundreds of MB
(one (64, 1024, 256) float32 tensor is 64 MB), so every step page-faults its whole working set back
in: measured here, a 6-layer Mamba training step at B=64, L=1024 spent 44 s of system time per
minute and ran 7.2 s per step, against 4.3 s with the blocks kept (``mambadiff bench layers``).

It calls glibc's ``mallopt`` (no effect, and no error, elsewhere): no mmap for large blocks and no
trimming of the heap top, the same as starting the process with ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=<huge>``. The price is that the resident size stays at its peak instead of
shrinking between steps. Set ``MAMBADIFF_MALLOC_TUNING=0`` to leave the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["tune_cpu_allocator", "flush_denormals"]

# glibc <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

_TUNED: bool | None = None


def tune_cpu_allocator() -> bool:
    """Apply the allocator settings once per process; True if they are in effect."""
    global _TUNED
    if _TUNED is not None:
        return _TUNED
    _TUNED = False
    if os.environ.get("MAMBADIFF_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1  # int parameter: ~2 GB, never reached in practice
    ok &= mallopt(_M_TOP_PAD, 64 << 20) == 1  # grow the heap 64 MB at a time
    _TUNED = bool(ok)
    return _TUNED


def flush_denormals() -> bool:
    """Flush denormal floats to zero in CPU math from now on; True if the CPU supports it.

    The setting is per thread: this sets the calling thread and, through the C kernel library
    (which shares torch's OpenMP runtime), every thread of the intra-op pool.
    """
    import torch

    ok = bool(torch.set_flush_denormal(True))  # this thread
    from mambadiff import kernels

    if ok and kernels.is_available():  # and every thread of the OpenMP pool that torch's CPU ops run on
        kernels.function("md_flush_denormals", torch.float32)(max(1, torch.get_num_threads()))
    return ok
