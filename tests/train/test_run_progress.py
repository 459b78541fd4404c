"""Training progress on a fake clock: a time-budgeted run shows minutes of its budget at the required
cadence, a step-bounded run its steps and the time left, and a run bounded by both follows the bound
that will end it first."""
import io
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_loop import ToyTask, cfg, make_model  # noqa: E402

from mambadiff.train import Trainer  # noqa: E402
from mambadiff.train.run_progress import TrainProgress, duration  # noqa: E402

BUDGET_LINE = re.compile(r"^train: (\d+\.\d+)/(\d+\.\d+) min \((\d+)%\), step ([\d,]+), loss=\d+\.\d{4}, "
                         r"tokens/s=[\d,]+, next eval=((step [\d,]+|end of run) in (\d+ s|\d+\.\d min))$")


@pytest.fixture(autouse=True)
def auto_mode(monkeypatch):
    monkeypatch.delenv("MAMBADIFF_PROGRESS", raising=False)


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class TimedTask(ToyTask):
    """ToyTask whose every optimizer step (2 micro-batches) takes ``step_s`` seconds of a fake clock."""

    def __init__(self, clock: FakeClock, step_s: float):
        super().__init__()
        self.clock, self.step_s = clock, step_s

    def loss(self, model, batch, ctx):
        self.clock.t += self.step_s / 2  # cfg() uses grad_accum=2
        return super().loss(model, batch, ctx)


def budget_run(tmp_path, capsys, monkeypatch, minutes: float, step_s: float):
    monkeypatch.setenv("MAMBADIFF_PROGRESS", "lines")
    clock = FakeClock()
    trainer = Trainer(make_model(), TimedTask(clock, step_s),
                      cfg(steps=100_000, max_minutes=minutes, eval_every=100, log_every=50, ema_decay=0.0,
                          progress=True), tmp_path, {}, clock=clock)
    result = trainer.fit()
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("train:")]
    return result, lines


@pytest.mark.parametrize("minutes, step_s", [(3.0, 0.5), (60.0, 10.0)])
def test_budgeted_run_shows_minutes_of_the_budget_at_the_required_cadence(tmp_path, capsys, monkeypatch,
                                                                          minutes, step_s):
    result, lines = budget_run(tmp_path, capsys, monkeypatch, minutes, step_s)
    budget_s = minutes * 60
    assert result.step == pytest.approx(budget_s / step_s, abs=2)  # the budget ended it, not train.steps
    for line in lines:
        assert BUDGET_LINE.match(line), line
    elapsed = [float(BUDGET_LINE.match(l).group(1)) * 60 for l in lines]
    assert all(float(BUDGET_LINE.match(l).group(2)) == minutes for l in lines)
    # a line at least every minute or every 2% of the budget, whichever comes first (a line is printed
    # after the step that crosses the mark: up to one step late; the minutes are rounded on the line)
    gap = min(60.0, 0.02 * budget_s)
    rounding = 0.6 if minutes < 10 else 6.0
    for before, after in zip([0.0] + elapsed, elapsed):
        assert after - before <= gap + step_s + rounding
    assert len(lines) <= budget_s / gap + 2  # and not much more often
    assert elapsed[-1] == pytest.approx(budget_s, abs=step_s + rounding)


def test_budgeted_line_names_the_next_evaluation(tmp_path, capsys, monkeypatch):
    _, lines = budget_run(tmp_path, capsys, monkeypatch, 3.0, 0.5)
    # 0.5 s a step, eval_every=100: the evaluation after step 20 is step 100, 40 s = 0.7 min away
    steps = [int(BUDGET_LINE.match(l).group(4).replace(",", "")) for l in lines]
    evals = [BUDGET_LINE.match(l).group(5) for l in lines]
    i = next(i for i, s in enumerate(steps) if 10 < s < 90)
    assert evals[i] == f"step 100 in {(100 - steps[i]) * 0.5:.0f} s"
    # the budget ends the run at step 360: from step 300 on the next evaluation is the final one
    late = [e for s, e in zip(steps, evals) if 300 < s < 355]
    assert late and all(e.startswith("end of run in ") for e in late)


def drive(progress: TrainProgress, clock: FakeClock, steps: int, step_s: float, start: int = 0):
    for step in range(start + 1, start + steps + 1):
        clock.t += step_s
        progress.update(step, 0.25, 1234.0)


def test_step_bounded_run_shows_steps_and_the_time_left():
    clock, out = FakeClock(), io.StringIO()
    progress = TrainProgress(200, 0.0, 0, clock=clock, stream=out)
    drive(progress, clock, 200, 0.3)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 50  # one every 2% of the steps (4 steps, 1.2 s: the minute never comes first)
    assert lines[9] == ("train: step 40/200 (20%), 0.2 min, ~48 s left, loss=0.2500, tokens/s=1,234, "
                        "next eval=end of run in 48 s")
    assert lines[-1].startswith("train: step 200/200 (100%), 1.0 min, ~0 s left")


def test_slow_step_bounded_run_still_prints_every_minute():
    clock, out = FakeClock(), io.StringIO()
    progress = TrainProgress(10_000, 0.0, 500, clock=clock, stream=out)
    drive(progress, clock, 100, 2.0)  # 1% of the steps in 200 s
    assert len(out.getvalue().splitlines()) == 100 * 2.0 // 60
    assert "next eval=step 500 in 15.7 min" in out.getvalue().splitlines()[0]


def test_both_bounds_follow_the_one_that_ends_the_run_first():
    clock, out = FakeClock(), io.StringIO()
    progress = TrainProgress(100, 3.0, 0, clock=clock, stream=out)
    drive(progress, clock, 10, 0.5)  # 100 steps take 50 s: the steps end it
    assert progress.text(clock()).startswith("step 10/100 (10%), 0.1 min, ~45 s left (budget 3.0 min)")
    drive(progress, clock, 5, 30.0, start=10)  # the machine got busy: the 3 minutes end it
    assert progress.text(clock()).startswith("2.58/3.00 min (86%), step 15, ")
    assert progress.estimate(clock()).by_time


def test_terminal_gets_a_bar_with_the_same_fields(monkeypatch):
    monkeypatch.delenv("MAMBADIFF_PROGRESS", raising=False)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    clock, out = FakeClock(), Tty()
    progress = TrainProgress(100_000, 2.0, 0, clock=clock, stream=out)
    drive(progress, clock, 12, 5.0)
    progress.close()
    text = out.getvalue()
    assert "\r" in text
    assert "train  50%|" in text and "1.00/2.00 min (50%), step 12, loss=0.2500, tokens/s=1,234" in text
    assert "next eval=end of run in 1.0 min" in text


def test_off_prints_nothing(monkeypatch):
    monkeypatch.setenv("MAMBADIFF_PROGRESS", "off")
    clock, out = FakeClock(), io.StringIO()
    progress = TrainProgress(10, 1.0, 0, clock=clock, stream=out)
    drive(progress, clock, 10, 1.0)
    progress.close()
    assert out.getvalue() == ""


def test_waits_read_in_seconds_then_minutes():
    assert [duration(s) for s in (0.4, 45.2, 59.4, 59.6, 150.0)] == ["0 s", "45 s", "59 s", "1.0 min", "2.5 min"]
