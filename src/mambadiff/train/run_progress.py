"""Training progress against what will end the run: minutes of ``train.max_minutes`` or steps of
``train.steps``.

A time-budgeted run shows the minutes it has used of its budget; a step-bounded run shows its steps and
the estimated time left. Both show the step, the loss (mean since the last logged step), tokens/s and
when the next evaluation comes. On a terminal this is a tqdm bar; in a file, pipe or CI log it is a
plain line every 2% of the run or every minute, whichever comes first (``mambadiff.progress`` picks
the mode; ``$MAMBADIFF_PROGRESS=bar|lines|off`` overrides it).

When both bound a run, the view follows the one expected to end it first, from the step rate measured
in this ``fit()`` (evaluations included, as they spend the budget too): the time to the last step,
``(steps - step) / rate``, against the budget left. At a steady rate that choice does not change; a
run that slows down (a machine that gets busy) switches to the budget view instead of counting toward
a step it will not reach. The other bound stays on the line (the step in the budget view, the budget
in the step view).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import IO, Callable

from tqdm.auto import tqdm

from mambadiff.progress import progress_mode

__all__ = ["TrainProgress", "duration", "LINE_FRACTION", "LINE_SECONDS"]

LINE_FRACTION = 0.02  # plain lines: one each time the run passes another 2% ...
LINE_SECONDS = 60.0   # ... or a minute after the previous line, whichever comes first
BAR_SECONDS = 0.2     # the bar redraws at most this often
BAR_TOTAL = 1000      # the bar counts thousandths of the run (its unit changes with the view)


@dataclass
class Estimate:
    """Where a run stands at one moment."""
    elapsed_s: float       # seconds since this fit() started
    rate: float | None     # steps per second in this fit(); None before the first step
    left_s: float          # estimated seconds to the end of the run (math.inf when unknown)
    by_time: bool          # the time budget is expected to end the run (else the step count)
    fraction: float        # share of the run done, in the unit of whatever ends it


def _minutes(seconds: float, digits: int) -> str:
    return f"{seconds / 60:.{digits}f}"


def duration(seconds: float) -> str:
    """A wait as people read it: ``45 s`` under a minute, ``2.3 min`` above."""
    return f"{seconds:.0f} s" if seconds < 59.5 else f"{seconds / 60:.1f} min"


class TrainProgress:
    """The progress view of one ``fit()``: call ``update`` after every optimizer step, then ``close``.

    ``clock`` returns seconds (``time.perf_counter`` by default; tests pass a fake one)."""

    def __init__(self, steps: int, max_minutes: float = 0.0, eval_every: int = 0, *, initial_step: int = 0,
                 clock: Callable[[], float] = time.perf_counter, enabled: bool = True,
                 stream: IO[str] | None = None, desc: str = "train"):
        self.stream = stream if stream is not None else sys.stderr
        self.mode = progress_mode(enabled, self.stream)
        self.steps, self.eval_every, self.desc, self.clock = steps, eval_every, desc, clock
        self.budget_s = max_minutes * 60.0 if max_minutes > 0 else None
        self.start_t, self.start_step = clock(), initial_step
        self.step, self.loss, self.tokens_per_s = initial_step, None, 0.0
        self._line_t, self._line_step = self.start_t, initial_step
        self._line_slot = self._slot(self.estimate(self.start_t))
        self._drawn_t = -math.inf
        self._bar = None
        if self.mode == "bar":
            self._bar = tqdm(total=BAR_TOTAL, file=self.stream, dynamic_ncols=True,
                             bar_format=desc + " {percentage:3.0f}%|{bar}| {desc}")

    # ---- estimates ----------------------------------------------------------------------------
    def estimate(self, now: float) -> Estimate:
        """Elapsed time, step rate, time left and which bound ends the run, at clock time ``now``."""
        elapsed = max(now - self.start_t, 0.0)
        done = self.step - self.start_step
        rate = done / elapsed if done > 0 and elapsed > 0 else None
        steps_left_s = (self.steps - self.step) / rate if rate else math.inf
        budget_left_s = max(self.budget_s - elapsed, 0.0) if self.budget_s else math.inf
        by_time = self.budget_s is not None and budget_left_s < steps_left_s
        fraction = elapsed / self.budget_s if by_time else self.step / self.steps
        return Estimate(elapsed, rate, min(steps_left_s, budget_left_s), by_time, min(fraction, 1.0))

    def next_eval(self, e: Estimate) -> str:
        """When the next evaluation runs: an ``eval_every`` step, else the final one at the end."""
        if self.eval_every:
            step = (self.step // self.eval_every + 1) * self.eval_every
            if step < self.steps:  # the loop evaluates at multiples of eval_every before the last step
                if e.rate is None:
                    return f"step {step:,}"
                wait_s = (step - self.step) / e.rate
                if wait_s < e.left_s:
                    return f"step {step:,} in {duration(wait_s)}"
        return "end of run" + (f" in {duration(e.left_s)}" if math.isfinite(e.left_s) else "")

    def text(self, now: float) -> str:
        """The progress fields at clock time ``now``, without the bar."""
        e = self.estimate(now)
        pct = f"{100 * e.fraction:.0f}%"
        if e.by_time:
            digits = 2 if self.budget_s < 600 else 1
            head = (f"{_minutes(e.elapsed_s, digits)}/{_minutes(self.budget_s, digits)} min ({pct}), "
                    f"step {self.step:,}")
        else:
            left = f"~{duration(e.left_s)} left" if math.isfinite(e.left_s) else "time left unknown"
            head = f"step {self.step:,}/{self.steps:,} ({pct}), {_minutes(e.elapsed_s, 1)} min, {left}"
            if self.budget_s:
                head += f" (budget {_minutes(self.budget_s, 1)} min)"
        fields = [head] + ([f"loss={self.loss:.4f}"] if self.loss is not None else [])
        fields += [f"tokens/s={self.tokens_per_s:,.0f}", f"next eval={self.next_eval(e)}"]
        return ", ".join(fields)

    # ---- output -------------------------------------------------------------------------------
    def update(self, step: int, loss: float | None, tokens_per_s: float) -> None:
        """Record the state after an optimizer step; print or redraw when due."""
        self.step, self.loss, self.tokens_per_s = step, loss, tokens_per_s
        if self.mode == "off":
            return
        now = self.clock()
        if self._bar is not None:
            if now - self._drawn_t >= BAR_SECONDS:
                self._draw(now)
            return
        if self._line_due(now, self.estimate(now)):
            self._print_line(now)

    def _slot(self, e: Estimate) -> int:
        """Which 2% of the steps the run is in (the step view's line marks)."""
        return -1 if e.by_time else int(e.fraction / LINE_FRACTION + 1e-9)

    def _line_due(self, now: float, e: Estimate) -> bool:
        if e.by_time:  # every 2% of the budget or every minute: both are times
            return now - self._line_t >= min(LINE_SECONDS, LINE_FRACTION * self.budget_s)
        return self._slot(e) > self._line_slot or now - self._line_t >= LINE_SECONDS

    def _draw(self, now: float) -> None:
        self._bar.n = min(BAR_TOTAL, int(self.estimate(now).fraction * BAR_TOTAL))
        self._bar.set_description_str(self.text(now), refresh=False)
        self._bar.refresh()
        self._drawn_t = now

    def _print_line(self, now: float) -> None:
        print(f"{self.desc}: {self.text(now)}", file=self.stream, flush=True)
        self._line_t, self._line_slot, self._line_step = now, self._slot(self.estimate(now)), self.step

    def close(self) -> None:
        """Show the final state (once) and release the bar."""
        if self.mode == "off":
            return
        now = self.clock()
        if self._bar is not None:
            self._draw(now)
            self._bar.close()
        elif self.step != self._line_step:
            self._print_line(now)
