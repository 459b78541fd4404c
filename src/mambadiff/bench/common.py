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
    return statistics.median(times), _peak_growth_mb(fn, device)


def _peak_growth_mb(fn, device: torch.device) -> float:
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


def parse_int_pairs(text: str, expected: str, param_hint: str | None = None) -> tuple[tuple[int, int], ...]:
    """``"64x128,8x256"`` -> ((64, 128), (8, 256)); a malformed item is a click error naming ``expected``."""
    import click

    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            a, b = item.lower().split("x")
            out.append((int(a), int(b)))
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected {expected}", param_hint=param_hint) from None
    return tuple(out)
