"""Timing and memory helpers shared by the benchmarks.

Times are medians over ``repeats`` runs after ``warmup`` runs. Peak memory is measured in one more
run: on CUDA, ``torch.cuda.max_memory_allocated`` above the level before it; on CPU, the growth of the
kernel's peak-RSS mark (VmHWM, reset through /proc/self/clear_refs after handing free heap memory
back to the OS), so timing runs are not slowed by any measurement.
"""
from __future__ import annotations

import ctypes
import gc
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from mambadiff.fileio import atomic_write_text


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_and_peak(fn, device, repeats: int, warmup: int) -> tuple[float, float]:
    """(median seconds over ``repeats`` runs after ``warmup`` runs, peak memory growth in MB of one
    more run)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), peak_growth_mb(fn, device)


def peak_growth_mb(fn, device: torch.device) -> float:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0.0, (torch.cuda.max_memory_allocated(device) - base) / 2**20)
    _malloc_trim()
    base = _status_kb("VmRSS")
    if base is not None and _reset_hwm():
        fn()
        return max(0.0, ((_status_kb("VmHWM") or base) - base) / 1024)
    return _maxrss_growth_mb(fn)


def _maxrss_growth_mb(fn) -> float:
    """Fallback without /proc (e.g. macOS): growth of the process's lifetime peak RSS. It only sees
    new highs, so it under-reports runs that stay below an earlier peak."""
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(0, after - before) * scale / 2**20


def _malloc_trim() -> None:
    """Hands free heap memory back to the OS (glibc), so new allocations show up in RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def write_json(path: str | Path | None, records: list[dict]) -> None:
    if path:
        atomic_write_text(path, json.dumps(records, indent=2) + "\n")


def print_table(records: list[dict], columns: list[str], floatfmt: str = ".4g") -> str:
    rows = [[r.get(c, "") for c in columns] for r in records]
    text = tabulate(rows, headers=columns, floatfmt=floatfmt)
    print(text)
    return text


class BenchArgumentError(ValueError):
    """A bad benchmark argument: ``argument`` is the parameter's name, ``message`` what is wrong with it.
    The command line reports it against the option that set the parameter."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


def check_at_least(**values: tuple[float, float]) -> None:
    """``name=(value, least)``, checked in order: BenchArgumentError for the first value below its least."""
    for name, (value, least) in values.items():
        if value < least:
            raise BenchArgumentError(name, f"must be >= {least}, got {value}")


def split_spec(spec: str) -> tuple[str, list[str]]:
    """``"NAME_OR_YAML key=value ..."`` (shell quoting) -> (name, overrides); BenchArgumentError("spec")
    when it is empty."""
    parts = shlex.split(spec)
    if not parts:
        raise BenchArgumentError("spec", "an empty spec")
    return parts[0], parts[1:]
