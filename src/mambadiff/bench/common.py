"""Timing and memory helpers shared by the benchmarks.

Times are medians over ``repeats`` runs after ``warmup`` runs. Peak memory: on CUDA,
``torch.cuda.max_memory_allocated``; on CPU, the peak resident set size above the level at the start
of the measurement, sampled from /proc/self/statm by a background thread every millisecond.
"""
from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import torch
from tabulate import tabulate

from mambadiff.train.checkpoint import atomic_write_text

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


def _fix_malloc_for_rss() -> None:
    """Make freed tensors go back to the OS so RSS tracks live memory: glibc otherwise raises its mmap
    threshold after the first large free and keeps later tensors on the heap (RSS never drops)."""
    global _MALLOC_FIXED
    if _MALLOC_FIXED:
        return
    _MALLOC_FIXED = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, disables the dynamic adjustment
        libc.malloc_trim(0)
    except OSError:
        pass


_MALLOC_FIXED = False


class PeakMemory:
    """Context manager measuring peak memory growth in MB (CPU RSS or CUDA allocator)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak_mb = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            _fix_malloc_for_rss()
            self._base = _rss_bytes()
            self._peak = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = (self._peak - self._base) / 2**20
        return False


def time_median(fn: Callable[[], object], repeats: int = 5, warmup: int = 2,
                device: torch.device | str = "cpu") -> tuple[float, float]:
    """(median seconds, peak memory MB of one run) of ``fn()``."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    with PeakMemory(device) as mem:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.peak_mb


def write_json(path: str | Path | None, records: list[dict]) -> None:
    if path:
        atomic_write_text(path, json.dumps(records, indent=2) + "\n")


def print_table(records: list[dict], columns: list[str], floatfmt: str = ".4g") -> str:
    rows = [[r.get(c, "") for c in columns] for r in records]
    text = tabulate(rows, headers=columns, floatfmt=floatfmt)
    print(text)
    return text
