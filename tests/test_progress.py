"""Progress output: a live bar on a terminal, plain lines in a file or CI log."""
import io

import pytest

from mambadiff.progress import LineProgress, progress_bar


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_file_output_gets_plain_lines_not_carriage_returns(monkeypatch):
    monkeypatch.delenv("MAMBADIFF_PROGRESS", raising=False)
    out = io.StringIO()
    bar = progress_bar(100, "train", stream=out)
    assert isinstance(bar, LineProgress)
    for i in range(100):
        bar.update(1)
        bar.set_postfix(loss=f"{1.0 / (i + 1):.3f}")
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 20  # every 5 steps (total // 20), the last one at 100
    assert lines[-1].startswith("train: 100/100 (100%)")
    assert "loss=" in lines[-1]


def test_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.delenv("MAMBADIFF_PROGRESS", raising=False)
    out = _Tty()
    bar = progress_bar(10, "sample", stream=out)
    assert not isinstance(bar, LineProgress)
    bar.update(10)
    bar.close()
    assert "\r" in out.getvalue()


def test_environment_overrides_and_disabled_is_silent(monkeypatch):
    out = _Tty()
    monkeypatch.setenv("MAMBADIFF_PROGRESS", "lines")
    assert isinstance(progress_bar(10, stream=out), LineProgress)
    monkeypatch.setenv("MAMBADIFF_PROGRESS", "off")
    bar = progress_bar(10, stream=out)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""
    monkeypatch.setenv("MAMBADIFF_PROGRESS", "loud")
    with pytest.raises(ValueError, match="MAMBADIFF_PROGRESS"):
        progress_bar(10, stream=out)


def test_resumed_counter_starts_at_initial():
    out = io.StringIO()
    bar = LineProgress(10, "train", initial=6, every=2, stream=out)
    bar.update(1)  # 7: no multiple of 2 crossed
    assert out.getvalue() == ""
    bar.update(1)
    assert out.getvalue().startswith("train: 8/10 (80%)")
