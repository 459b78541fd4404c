"""`mambadiff lm train` and `mambadiff ar train` get every guarantee of a run folder: SIGTERM during
start-up saves and exits 143, divergence stops with the step named and no non-finite checkpoint, a
folder that is not a run folder is refused before anything is written, a locked folder is refused."""
from __future__ import annotations

import json
import os
import re
import signal

import pytest
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.tasks.lm import train as lm_train
from mambadiff.train.checkpoint import latest_checkpoint, load_state
from mambadiff.train.run_lock import run_lock

TEXT = "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune.\n" * 30


@pytest.fixture
def lm_args(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    return ["lm", "train", "--config", "shakespeare-char", f"data.train={text}", "data.block_size=16",
            "model.backbone.d_model=16", "model.backbone.n_layers=1", "train.batch_size=4", "train.progress=false",
            "train.eval_every=0"]


def test_sigterm_during_start_up_saves_and_exits_143(tmp_path, lm_args, monkeypatch):
    real = lm_train.prepare_lm_tokenizer

    def prepare(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # while the data and the model are being built
        return real(*a, **kw)

    monkeypatch.setattr(lm_train, "prepare_lm_tokenizer", prepare)
    r = CliRunner().invoke(main, [*lm_args, f"run_dir={tmp_path / 'a'}", "train.steps=5"])
    assert r.exit_code == 143, r.output
    assert latest_checkpoint(tmp_path / "a").name == "step_00000000"


def test_divergence_names_the_step_and_writes_no_nonfinite_checkpoint(tmp_path, lm_args):
    run = tmp_path / "nan"
    r = CliRunner().invoke(main, [*lm_args, f"run_dir={run}", "train.steps=30", "train.lr=1e6",
                                  "train.grad_clip=0", "train.warmup_steps=0", "train.save_every=1"])
    assert r.exit_code == 1 and re.search(r"step \d+: the loss is (nan|inf)", r.output), r.output
    if (run / "metrics.jsonl").exists():
        for line in (run / "metrics.jsonl").read_text().splitlines():
            json.loads(line)  # strict JSON: no bare NaN
    last = latest_checkpoint(run)
    assert last is not None and f"newest checkpoint, {last}, is kept" in " ".join(r.output.split())
    assert all(t.isfinite().all() for t in load_state(last, ema=False).values())


def test_a_folder_that_is_not_a_run_folder_is_refused(tmp_path, lm_args):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("my work", encoding="utf-8")
    r = CliRunner().invoke(main, [*lm_args, f"run_dir={folder}", "train.steps=2"])
    assert r.exit_code == 1 and "thesis.tex" in r.output, r.output
    assert sorted(os.listdir(folder)) == ["thesis.tex"]


def test_a_locked_folder_is_refused_naming_the_holder(tmp_path, lm_args):
    run = tmp_path / "busy"
    with run_lock(run):
        r = CliRunner().invoke(main, [*lm_args, f"run_dir={run}", "train.steps=2"])
    assert r.exit_code == 1 and str(os.getpid()) in r.output, r.output
    assert not (run / "tokenizer").exists()


def test_ar_train_refuses_a_foreign_folder_and_bad_data(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "main.py").write_text("print()", encoding="utf-8")
    r = CliRunner().invoke(main, ["ar", "train", "--config", "qqp-ar-mamba2-cpu", f"run_dir={folder}"])
    assert r.exit_code == 1 and "main.py" in r.output, r.output
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"src": "a b", "trg": "c d"}\n{"src": "e f"}\n', encoding="utf-8")
    r = CliRunner().invoke(main, ["ar", "train", "--config", "qqp-ar-mamba2-cpu", f"data.path={data}",
                                  f"run_dir={tmp_path / 'run'}", "embedding_init=random"])
    assert r.exit_code == 1 and "train.jsonl, line 2, field 'trg'" in r.output, r.output
