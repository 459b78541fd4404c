"""Progress reporting that suits where the output goes.

On a terminal: a live tqdm bar. When stderr is a file, a pipe or a CI log: one plain line every
``every`` updates (and at the end), so a log holds a few hundred readable lines instead of
thousands of carriage-return redraws. ``$MAMBADIFF_PROGRESS`` overrides the choice:
``bar``, ``lines`` or ``off``. Training shows its own view on the same choice
(``mambadiff.train.run_progress``: minutes of a time budget, or steps with the time left).
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_mode", "LineProgress", "PROGRESS_MODES"]

PROGRESS_MODES = ("auto", "bar", "lines", "off")


class LineProgress:
    """A tqdm-like counter that prints ``desc: n/total (pct) rate it/s, key=value`` lines."""

    def __init__(self, total: int | None, desc: str = "", initial: int = 0, every: int = 50,
                 stream: IO[str] | None = None):
        if every <= 0:
            raise ValueError(f"progress every must be a positive int, got {every!r}")
        self.total, self.desc, self.n, self.every = total, desc, initial, every
        self.stream = stream if stream is not None else sys.stderr
        self._start_n, self._start_t = initial, time.perf_counter()
        self._postfix = ""
        self._last_printed = None

    def update(self, n: int = 1) -> None:
        before = self.n
        self.n += n
        # Print when a multiple of `every` was crossed, and at the end.
        if self.n // self.every > before // self.every or (self.total is not None and self.n >= self.total):
            self._print()

    def set_postfix(self, **values) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _print(self) -> None:
        if self._last_printed == self.n:
            return
        self._last_printed = self.n
        elapsed = max(time.perf_counter() - self._start_t, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        count = f"{self.n}/{self.total} ({100.0 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        line = f"{self.desc + ': ' if self.desc else ''}{count} {rate:.2f} it/s, {elapsed:.0f} s"
        if self._postfix:
            line += f", {self._postfix}"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.n != self._start_n:
            self._print()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_mode(enabled: bool, stream: IO[str]) -> str:
    """``bar``, ``lines`` or ``off``: off when not ``enabled``, else ``$MAMBADIFF_PROGRESS``, else a bar
    when ``stream`` is a terminal and plain lines otherwise (ValueError on an unknown setting)."""
    if not enabled:
        return "off"
    mode = os.environ.get("MAMBADIFF_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise ValueError(f"$MAMBADIFF_PROGRESS must be one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
    if mode == "auto":
        isatty = getattr(stream, "isatty", None)
        mode = "bar" if isatty is not None and isatty() else "lines"
    return mode


def progress_bar(total: int | None, desc: str = "", *, initial: int = 0, enabled: bool = True,
                 every: int | None = None, stream: IO[str] | None = None):
    """A progress counter with ``update(n)``, ``set_postfix(**kw)`` and ``close()``.

    ``every``: updates between plain lines (default: about 20 lines over ``total``, at least 1).
    """
    stream = stream if stream is not None else sys.stderr
    mode = progress_mode(enabled, stream)
    if mode == "bar":
        return tqdm(total=total, desc=desc, initial=initial, file=stream, dynamic_ncols=True)
    if mode == "off":
        return tqdm(total=total, desc=desc, initial=initial, disable=True)
    if every is None:
        every = max(1, (total or 1000) // 20)
    return LineProgress(total, desc, initial=initial, every=every, stream=stream)
