"""Scoring many rows on every core, with a progress bar.

Sentence-level metrics (nltk's BLEU above all) are pure Python: 100,000 rows take minutes on one core.
`RowPool.map` cuts the rows into chunks of `CHUNK_ROWS` and, when there are at least
`PARALLEL_MIN_ROWS`, scores the chunks in worker processes; the results come back in row order. A row's
scores are computed by the same function on the same strings wherever it runs, so every mean taken
over them is identical to the serial one.

Workers are forked from a ``forkserver``, a fresh single-threaded process that imports the scoring
code once (about a second, mostly torch's import): a child forked from the caller itself would
inherit whatever threads it holds (torch's pools after training or BERTScore) in a broken state, and
a spawned child would import everything again. That start-up only pays off for many rows.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence, TypeVar

from mambadiff.progress import progress_bar

__all__ = ["CHUNK_ROWS", "PARALLEL_MIN_ROWS", "RowPool", "available_cpus"]

CHUNK_ROWS = 1000
PARALLEL_MIN_ROWS = 4000
PRELOAD = ("mambadiff.metrics.generation",)  # what the forkserver imports once for every worker

T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under taskset or a container quota)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class RowPool:
    """``map(fn, rows, desc)``: ``fn`` (a module-level function, picklable) maps a chunk of rows to one
    result per row; the results of all rows, in order. ``workers`` processes at most (None: one per
    available CPU; 1: never a process); ``progress`` shows a bar (`mambadiff.progress`) per map.
    Use as a context manager, or call ``close()``: the worker processes live until then."""

    def __init__(self, workers: int | None = None, progress: bool = False):
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be an int >= 1 or None, got {workers!r}")
        self.workers = available_cpus() if workers is None else workers
        self.progress = progress
        self._executor: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[list[T]], list[R]], rows: Sequence[T], desc: str = "",
            progress: bool | None = None) -> list[R]:
        """``progress`` overrides the pool's setting for this map (e.g. off for a quick one)."""
        rows = list(rows)
        chunks = [rows[i:i + CHUNK_ROWS] for i in range(0, len(rows), CHUNK_ROWS)]
        parallel = self.workers > 1 and len(rows) >= PARALLEL_MIN_ROWS and len(chunks) > 1
        bar = progress_bar(len(rows), desc, enabled=self.progress if progress is None else progress)
        out: list[R] = []
        try:
            results = self._pool().map(fn, chunks) if parallel else map(fn, chunks)
            for chunk, result in zip(chunks, results):
                out.extend(result)
                bar.update(len(chunk))
        finally:
            bar.close()
        return out

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(list(PRELOAD))
            else:  # macOS before 3.12, Windows
                context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> RowPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
