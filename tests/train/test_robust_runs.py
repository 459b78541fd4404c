"""A run folder survives clusters and mistakes: a moved run resumes in its new folder, SIGTERM saves a
checkpoint and exits 143, a second process on the same folder is refused, divergence stops training
without writing non-finite checkpoints, and metrics.jsonl stays strict JSON."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.config import load_config
from mambadiff.tasks.seq2seq import Seq2SeqConfig, train_seq2seq
from mambadiff.tasks.seq2seq import train as seq2seq
from mambadiff.train import TrainingDivergedError
from mambadiff.train import checkpoint as ckpt_io
from mambadiff.train.checkpoint import CheckpointError, latest_checkpoint, run_config
from mambadiff.train.metrics_log import MetricsLog
from mambadiff.train.run_lock import RunFolderBusyError, run_lock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fault_worker import STEPS, StatefulTask, build_trainer  # noqa: E402

TINY = ["data.builtin_train=64", "data.builtin_valid=8", "data.builtin_test=8", "data.vocab_size=120",
        "data.seq_len=24", "data.eval_size=8", "model.emb_dim=16", "model.backbone.name=transformer",
        "model.backbone.attn_layers=[]", "diffusion.process=gaussian", "model.backbone.d_model=16",
        "model.backbone.n_layers=1", "train.batch_size=4", "diffusion.steps=20", "train.progress=false",
        "train.num_threads=1"]


@pytest.fixture(autouse=True)
def _keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MAMBADIFF_PROGRESS": "off", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}


def tiny_cfg(run_dir, *extra):
    return load_config(Seq2SeqConfig, "demo", [f"run_dir={run_dir}", *TINY, *extra])


# ---- 1. the folder given is the run ------------------------------------------------------------------
def test_a_moved_run_resumes_in_its_new_folder(tmp_path, capsys):
    train_seq2seq(tiny_cfg(tmp_path / "runA", "train.steps=3"), progress=False)
    os.replace(tmp_path / "runA", tmp_path / "runB")
    result, _, _ = train_seq2seq(tiny_cfg(tmp_path / "runB", "train.steps=5"), resume=True, progress=False)
    assert "resumed from step 3" in capsys.readouterr().out
    assert result.step == 5 and result.checkpoint == tmp_path / "runB" / "checkpoints" / "step_00000005"
    assert not (tmp_path / "runA").exists()  # nothing written into the old folder
    saved = json.loads((tmp_path / "runB" / "config.json").read_text())
    assert saved["run_dir"] == str(tmp_path / "runB")


def test_resume_without_a_checkpoint_starts_fresh_and_says_so(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path / "new")
    assert run_config(cfg, resume=True) is cfg
    err = capsys.readouterr().err
    assert f"{tmp_path / 'new'} holds no checkpoint" in err and "starting a fresh run" in err


# ---- 2. SIGTERM ----------------------------------------------------------------------------------------
def worker(run_dir: Path, fault: str = "") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "fault_worker.py"), str(run_dir), fault],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())


def wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    assert line.startswith("ready"), line + proc.stderr.read()


@pytest.mark.timeout(120)
def test_sigterm_saves_a_checkpoint_exits_143_and_resume_is_bit_identical(tmp_path):
    reference = build_trainer(tmp_path / "reference")
    reference.fit()
    proc = worker(tmp_path / "run", "slow")
    wait_ready(proc)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "SIGTERM: finishing the current step" in err
    stopped = latest_checkpoint(tmp_path / "run")
    assert 0 < int(stopped.name.split("_")[1]) < STEPS  # stopped mid-run, with its steps saved
    proc = worker(tmp_path / "run")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    final = ckpt_io.load_state(latest_checkpoint(tmp_path / "run"), ema=False)
    for k, v in reference.model.state_dict().items():
        assert torch.equal(final[k], v), k


@pytest.mark.timeout(60)
def test_a_second_sigterm_ends_the_process_at_once(tmp_path):
    proc = worker(tmp_path / "run", "slow")
    wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    while "SIGTERM: finishing" not in (line := proc.stderr.readline()):  # the first one was seen
        assert line, "the worker ended without reporting the first SIGTERM"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # ended by the signal, as without a handler


def test_cli_exits_143_on_sigterm_during_start_up(tmp_path, monkeypatch):
    real_prepare = seq2seq.prepare_tokenizer

    def prepare(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # while data and model are being built
        return real_prepare(*a, **kw)

    monkeypatch.setattr(seq2seq, "prepare_tokenizer", prepare)
    handler = signal.getsignal(signal.SIGTERM)
    r = CliRunner().invoke(main, ["train", "--config", "demo", f"run_dir={tmp_path / 'a'}", *TINY, "train.steps=5"])
    assert r.exit_code == 143, r.output
    assert latest_checkpoint(tmp_path / "a").name == "step_00000000"
    assert signal.getsignal(signal.SIGTERM) is handler  # the guard put the handler back


# ---- 3. one process per run folder ---------------------------------------------------------------------
HOLD = "import sys, time\nfrom mambadiff.train.run_lock import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('locked', flush=True)\n    time.sleep(60)\n"


@pytest.mark.timeout(60)
def test_a_second_run_on_a_locked_folder_is_refused_before_writing(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        before = sorted(p.name for p in run_dir.iterdir())
        r = CliRunner().invoke(main, ["train", "--config", "demo", f"run_dir={run_dir}", *TINY, "train.steps=2"])
        assert r.exit_code == 1 and f"in use by process {holder.pid}" in r.output, r.output
        assert "Traceback" not in r.output
        assert sorted(p.name for p in run_dir.iterdir()) == before == [".lock"]  # nothing written
    finally:
        holder.kill()  # SIGKILL: the kernel drops the flock with the process
        holder.communicate()
    with run_lock(run_dir):  # a crashed holder leaves no stale lock
        assert (run_dir / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(RunFolderBusyError):  # also within one process, a second holder is refused
        with run_lock(run_dir):
            with run_lock(run_dir):
                pass


# ---- 4. divergence -------------------------------------------------------------------------------------
class NaNAtCall(StatefulTask):
    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def loss(self, model, batch, ctx):
        loss, metrics = super().loss(model, batch, ctx)
        if self.calls >= self.at:
            loss = loss * float("nan")
        return loss, metrics


def strict_json_lines(path: Path) -> list[dict]:
    def refuse(constant):
        raise ValueError(f"{path}: non-JSON constant {constant}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = build_trainer(tmp_path, NaNAtCall(at=7))  # grad_accum=2: call 7 is in step 4
    with pytest.raises(TrainingDivergedError, match=r"step 4: the loss is nan.*step_00000003"):
        trainer.fit()
    assert latest_checkpoint(tmp_path).name == "step_00000003"
    ckpt_io.read_checkpoint(latest_checkpoint(tmp_path), with_ema=True)
    model = build_trainer(tmp_path / "other").model
    ckpt_io.load_weights(latest_checkpoint(tmp_path), model)  # finite: loads
    assert [r["step"] for r in strict_json_lines(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = build_trainer(tmp_path, steps=2)
    trainer.fit()
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = float("inf")
    with pytest.raises(TrainingDivergedError, match=r"step 2: the model weights hold NaN or infinite values"):
        trainer.save()
    assert [p.name for p in ckpt_io.step_checkpoints(tmp_path)] == ["step_00000002", "step_00000001"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_loading_non_finite_weights_is_an_error_naming_the_file(tmp_path):
    trainer = build_trainer(tmp_path, steps=1)
    trainer.fit()
    folder = latest_checkpoint(tmp_path)
    state = ckpt_io.load_state(folder, ema=False)
    state["0.weight"][1, 2] = float("nan")
    ckpt_io.save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: holds NaN or infinite values in 0\.weight"):
        ckpt_io.load_weights(folder, build_trainer(tmp_path / "x").model, ema=False)


def test_causal_lm_refuses_non_finite_weights(tmp_path):
    from mambadiff.models.backbones import BackboneConfig
    from mambadiff.models.lm import CausalLM, CausalLMConfig
    model = CausalLM(CausalLMConfig(vocab_size=16, backbone=BackboneConfig(name="mamba", d_model=8, n_layers=1)))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    model.save_pretrained(tmp_path / "lm")
    with pytest.raises(CheckpointError, match="holds NaN or infinite values"):
        CausalLM.from_pretrained(tmp_path / "lm")


def test_cli_divergence_is_a_one_line_error_and_metrics_stay_json(tmp_path, monkeypatch):
    real_loss, calls = seq2seq.DiffusionSeq2SeqTask.loss, []

    def loss(self, model, batch, ctx):
        calls.append(1)
        out, metrics = real_loss(self, model, batch, ctx)
        return (out * math.nan, {**metrics, "loss": math.nan}) if len(calls) >= 3 else (out, metrics)

    monkeypatch.setattr(seq2seq.DiffusionSeq2SeqTask, "loss", loss)
    r = CliRunner().invoke(main, ["train", "--config", "demo", f"run_dir={tmp_path}", *TINY, "train.steps=6",
                                  "train.save_every=1", "train.log_every=1"])
    assert r.exit_code == 1 and "step 3: the loss is nan" in r.output and "Traceback" not in r.output, r.output
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    strict_json_lines(tmp_path / "metrics.jsonl")


def test_metrics_log_writes_non_finite_values_as_null(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    log.write({"split": "eval", "step": 1, "loss": float("nan"), "x": [float("inf"), 1.0]})
    assert strict_json_lines(tmp_path / "metrics.jsonl") == [{"split": "eval", "step": 1, "loss": None,
                                                             "x": [None, 1.0]}]
