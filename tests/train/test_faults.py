"""Training survives faults: SIGKILL at any moment, Ctrl-C, a full disk, an unwritable or damaged
run folder. Resume after any of them reproduces an uninterrupted run bit-for-bit (that is the
contract); a failed write leaves the previous checkpoint intact; a damaged checkpoint names its file.
"""
import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mambadiff.train import checkpoint as ckpt_io
from mambadiff.train.checkpoint import CheckpointError, CheckpointWriteError, latest_checkpoint, read_checkpoint
from mambadiff.train.interrupt import deferred_interrupt
from mambadiff.train.loop import CheckpointFallbackWarning

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fault_worker  # noqa: E402
from fault_worker import STEPS, StatefulTask, build_trainer  # noqa: E402

WORKER = HERE / "fault_worker.py"


@pytest.fixture(autouse=True)
def _keep_thread_count():
    threads = torch.get_num_threads()  # the worker's config pins 1 thread
    yield
    torch.set_num_threads(threads)


def partial_run(run_dir, stop_at: int, **kw):
    """The reference run's first ``stop_at`` steps (same LR schedule), then a checkpoint."""
    trainer = build_trainer(run_dir, **kw)
    trainer.cfg.steps = stop_at
    return trainer.fit()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Final model and EMA weights of an uninterrupted run."""
    trainer = build_trainer(tmp_path_factory.mktemp("reference"))
    trainer.fit()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}, \
        {k: v.clone() for k, v in trainer.ema.state_dict().items()}


def assert_matches(reference, folder: Path):
    model, ema = reference
    saved = ckpt_io.load_state(folder, ema=False)
    saved_ema = ckpt_io.load_state(folder, ema=True)
    for k in model:
        assert torch.equal(saved[k], model[k]), k
        assert torch.equal(saved_ema[k], ema[k]), k


def hidden(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("."))


def run_worker(run_dir: Path, fault: str = "", kill_after: float | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(run_dir), fault], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    if kill_after is not None:
        line = proc.stdout.readline()
        assert line.startswith("ready"), line + proc.stderr.read()
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


# ---- SIGKILL ---------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "run"
    rng = random.Random(7)
    faults = ["kill-loss:5",                      # mid-step, first run
              "kill-write:2:model.safetensors",   # inside a checkpoint write: weights written, rest not
              "kill-replace:2",                   # complete temp folder, not yet renamed
              ]
    left_temp = False
    for fault in faults:
        before = latest_checkpoint(run_dir)
        code, err = run_worker(run_dir, fault)
        assert code == -signal.SIGKILL, err
        left_temp |= bool(hidden(run_dir))
        newest = latest_checkpoint(run_dir)
        assert newest is not None and (before is None or newest.name >= before.name)
        read_checkpoint(newest, with_ema=True)  # the newest checkpoint always loads
    assert left_temp  # the kills inside writes did leave temp folders behind
    for _ in range(1):  # at a random moment of a slowed-down run
        code, err = run_worker(run_dir, "slow", kill_after=rng.uniform(0.05, 0.3))
        assert code in (-signal.SIGKILL, 0), err
        read_checkpoint(latest_checkpoint(run_dir), with_ema=True)
    code, err = run_worker(run_dir)
    assert code == 0, err
    final = latest_checkpoint(run_dir)
    assert final.name == f"step_{STEPS:08d}"
    assert hidden(run_dir) == []  # a start removes what killed writes left
    assert_matches(reference, final)


def test_stale_temp_folders_are_removed_and_an_orphaned_old_is_restored(tmp_path):
    trainer = build_trainer(tmp_path, steps=2)
    trainer.fit()
    ckpts = tmp_path / "checkpoints"
    (ckpts / ".step_00000003.tmpab12").mkdir()
    (ckpts / ".step_00000003.tmpab12" / "model.safetensors").write_bytes(b"partial")
    (ckpts / ".best.tmpzz").mkdir()
    os.replace(ckpts / "step_00000002", ckpts / ".step_00000002.old")  # killed between the two renames
    build_trainer(tmp_path, steps=4)
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_00000001", "step_00000002"]
    read_checkpoint(ckpts / "step_00000002", with_ema=True)


def test_checkpoint_files_and_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = ckpt_io.fsync_path
    monkeypatch.setattr(ckpt_io, "fsync_path", lambda p: (synced.append(Path(p)), real(p)))
    build_trainer(tmp_path, steps=1).fit()
    folder = latest_checkpoint(tmp_path)
    names = {p.name for p in synced}
    assert {p.name for p in folder.iterdir()} <= names  # every file of the checkpoint
    assert (tmp_path / "checkpoints") in synced  # and the folder holding the renamed checkpoint


# ---- Ctrl-C ----------------------------------------------------------------------------------------
class SigintAt(StatefulTask):
    """Sends this process SIGINT (as Ctrl-C does) at the given loss calls."""

    def __init__(self, *calls):
        super().__init__()
        self.at = set(calls)

    def loss(self, model, batch, ctx):
        result = super().loss(model, batch, ctx)
        if self.calls in self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return result


def test_sigint_mid_step_saves_the_matching_position_and_resume_is_bit_identical(tmp_path, reference):
    # call 7 is the first micro-batch of step 4: the step finishes, then step 4 is saved
    result = build_trainer(tmp_path, SigintAt(7), save_every=0).fit()
    assert result.interrupted and result.step == 4
    assert latest_checkpoint(tmp_path).name == "step_00000004"
    trainer = build_trainer(tmp_path, save_every=0)
    assert trainer.resume() and trainer.step == 4
    trainer.fit()
    assert_matches(reference, latest_checkpoint(tmp_path))


def test_keyboard_interrupt_raised_inside_a_step_rewinds_the_data_position(tmp_path, reference):
    class Raises(StatefulTask):
        def loss(self, model, batch, ctx):
            if self.calls == 4:  # step 3's first micro-batch, before the task's state changed
                raise KeyboardInterrupt
            return super().loss(model, batch, ctx)

    result = build_trainer(tmp_path, Raises(), save_every=0).fit()
    assert result.interrupted and result.step == 2
    trainer = build_trainer(tmp_path, save_every=0)
    assert trainer.resume() and trainer.step == 2
    trainer.fit()
    assert_matches(reference, latest_checkpoint(tmp_path))


def test_sigint_during_start_up_saves_a_checkpoint(tmp_path, reference):
    with deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)  # while data and model are being built
        result = build_trainer(tmp_path).fit()
    assert result.interrupted and result.step == 0 and result.checkpoint.name == "step_00000000"
    trainer = build_trainer(tmp_path)
    assert trainer.resume() and trainer.step == 0
    trainer.fit()
    assert_matches(reference, latest_checkpoint(tmp_path))


def test_sigint_during_evaluation_saves_a_checkpoint(tmp_path):
    class SigintInEval(StatefulTask):
        def evaluate(self, model):
            os.kill(os.getpid(), signal.SIGINT)
            return super().evaluate(model)

    result = build_trainer(tmp_path, SigintInEval(), save_every=0, eval_every=3).fit()
    assert result.interrupted and result.step == 3
    assert latest_checkpoint(tmp_path).name == "step_00000003"


def test_second_sigint_stops_at_once_without_saving(tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    build_trainer(tmp_path, steps=2).fit()
    task = SigintAt(7, 8)  # two Ctrl-C during step 4
    trainer = build_trainer(tmp_path, task, save_every=0)
    assert trainer.resume() and trainer.step == 2
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert task.calls == 8  # nothing ran after the second signal
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    assert hidden(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is handler


def test_cli_exits_130_on_sigint_during_training_and_start_up(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mambadiff.cli import main
    from mambadiff.tasks.seq2seq import train as seq2seq

    tiny = ["data.builtin_train=64", "data.builtin_valid=8", "data.builtin_test=8", "data.vocab_size=120",
            "data.seq_len=24", "data.eval_size=8", "model.emb_dim=16", "model.backbone.name=transformer",
            "model.backbone.attn_layers=[]", "diffusion.process=gaussian",
            "model.backbone.d_model=16", "model.backbone.n_layers=1", "train.batch_size=4", "train.steps=5",
            "diffusion.steps=20", "train.progress=false"]
    real_loss = seq2seq.DiffusionSeq2SeqTask.loss
    calls = []

    def loss(self, model, batch, ctx):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(self, model, batch, ctx)

    monkeypatch.setattr(seq2seq.DiffusionSeq2SeqTask, "loss", loss)
    r = CliRunner().invoke(main, ["train", "--config", "demo", f"run_dir={tmp_path / 'a'}", *tiny])
    assert r.exit_code == 130, r.output
    assert latest_checkpoint(tmp_path / "a").name == "step_00000002"

    real_prepare = seq2seq.prepare_tokenizer

    def prepare(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        return real_prepare(*a, **kw)

    monkeypatch.setattr(seq2seq, "prepare_tokenizer", prepare)
    r = CliRunner().invoke(main, ["train", "--config", "demo", f"run_dir={tmp_path / 'b'}", *tiny])
    assert r.exit_code == 130, r.output
    assert latest_checkpoint(tmp_path / "b").name == "step_00000000"


# ---- a full disk, an unwritable folder ---------------------------------------------------------------
def test_disk_full_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    build_trainer(tmp_path, steps=2).fit()
    real = ckpt_io.save_file
    writes = []

    def full_disk(tensors, path, *a, **kw):
        writes.append(path)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(ckpt_io, "save_file", full_disk)
    trainer = build_trainer(tmp_path, steps=4)
    assert trainer.resume()
    with pytest.raises(CheckpointWriteError, match=r"step_00000003.*disk is full") as info:
        trainer.fit()
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert latest_checkpoint(tmp_path).name == "step_00000002" and hidden(tmp_path) == []
    read_checkpoint(latest_checkpoint(tmp_path), with_ema=True)


def _blocks_writes(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        return True
    (folder / ".probe").unlink()
    return False


def test_unwritable_run_folder_is_a_clear_error(tmp_path):
    build_trainer(tmp_path, steps=2).fit()
    ckpts = tmp_path / "checkpoints"
    ckpts.chmod(0o555)
    try:
        if not _blocks_writes(ckpts):
            pytest.skip("permissions do not block writes here (running as root)")
        trainer = build_trainer(tmp_path, steps=4)
        assert trainer.resume()
        with pytest.raises(CheckpointWriteError, match="step_00000003"):
            trainer.fit()
        assert latest_checkpoint(tmp_path).name == "step_00000002"
        tmp_path.chmod(0o555)
        with pytest.raises(CheckpointWriteError, match="not writable"):
            build_trainer(tmp_path, steps=4)
    finally:
        tmp_path.chmod(0o755)
        ckpts.chmod(0o755)


# ---- damaged checkpoints --------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate model.safetensors", "truncate optimizer.safetensors",
                                    "garble trainer_state.json", "garble optimizer.json",
                                    "remove ema.safetensors"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, damage):
    partial_run(tmp_path, 4, keep_checkpoints=3)
    newest = latest_checkpoint(tmp_path)
    action, name = damage.split()
    path = newest / name
    if action == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif action == "garble":
        path.write_text('{"step": 4, "order": ')
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=name):
        read_checkpoint(newest, with_ema=True)
    trainer = build_trainer(tmp_path)
    with pytest.warns(CheckpointFallbackWarning, match=name):
        assert trainer.resume()
    assert trainer.step == 3
    assert (tmp_path / "checkpoints" / "step_00000004.corrupt").is_dir()  # kept aside for a look
    trainer.fit()
    assert_matches(reference, latest_checkpoint(tmp_path))


def test_no_loadable_checkpoint_is_an_error_naming_the_files(tmp_path):
    build_trainer(tmp_path, steps=2, keep_checkpoints=2).fit()
    for folder in ckpt_io.step_checkpoints(tmp_path):
        (folder / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match=r"no checkpoint loads.*step_00000002.*model\.safetensors"):
        build_trainer(tmp_path).resume()


def test_mismatched_weights_are_an_error_naming_the_file(tmp_path):
    from torch import nn

    from mambadiff.train import Trainer

    build_trainer(tmp_path, steps=1).fit()
    other = Trainer(nn.Linear(5, 1), StatefulTask(), fault_worker.config(), tmp_path / "other", {})
    with pytest.raises(CheckpointError, match="model.safetensors.*does not fit"):
        other.resume(latest_checkpoint(tmp_path))


def test_run_folder_that_cannot_be_created_is_a_clear_error(tmp_path):
    (tmp_path / "a_file").write_text("x")  # blocks writes for root too
    with pytest.raises(CheckpointWriteError, match=r"a_file/run: the run folder is not writable"):
        build_trainer(tmp_path / "a_file" / "run")
