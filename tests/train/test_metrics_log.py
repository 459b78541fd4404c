"""Metrics: TensorBoard events beside metrics.jsonl (optional extra), and progress lines with loss and tokens/s."""
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_loop import ToyTask, cfg, make_model  # noqa: E402

from mambadiff.train import Trainer  # noqa: E402


def test_tensorboard_mirrors_the_metrics_log_across_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = Trainer(make_model(), ToyTask(), cfg(steps=6, eval_every=2, tensorboard=True), tmp_path, {})
    first.cfg.steps = 3
    first.fit()
    second = Trainer(make_model(), ToyTask(), cfg(steps=6, eval_every=2, tensorboard=True), tmp_path, {})
    assert second.resume()
    second.fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/tokens_per_s", "eval/mse"} <= set(events.Tags()["scalars"])
    logged = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r["loss"] for r in logged if r["split"] == "train"}
    assert sorted(train) == [1, 2, 3, 4, 5, 6]
    for e in events.Scalars("train/loss"):
        assert e.value == pytest.approx(train[e.step], rel=1e-6)
    assert sorted({e.step for e in events.Scalars("train/loss")}) == [1, 2, 3, 4, 5, 6]


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were absent
    with pytest.raises(ValueError, match=r"train\.tensorboard=true needs the tensorboard package.*mambadiff\[tensorboard\]"):
        Trainer(make_model(), ToyTask(), cfg(tensorboard=True), tmp_path, {})


def test_progress_lines_show_loss_and_tokens_per_second(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAMBADIFF_PROGRESS", "lines")
    Trainer(make_model(), ToyTask(), cfg(steps=6, log_every=5, progress=True), tmp_path, {}).fit()
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("train:")]
    assert len(lines) == 6
    for line in lines:
        assert re.search(r"loss=\d+\.\d{4}", line) and re.search(r"tokens/s=[\d,]+", line), line
