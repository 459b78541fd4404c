"""A full disk: training stops with one line naming the file and "no space left on device", exit 1, and
leaves only complete checkpoints and strict logs; a resume continues from the newest complete checkpoint.
(`generate --out` on a full disk: tests/tasks/test_generate_inputs_outputs.py.)"""
import errno
import io
import json
import os

import pytest
import torch
from safetensors import SafetensorError

from mambadiff.train import checkpoint as ckpt_io
from mambadiff.train.checkpoint import CheckpointWriteError, latest_checkpoint
from mambadiff.train.metrics_log import MetricsLog

TINY = ["data.builtin_train=64", "data.builtin_valid=8", "data.builtin_test=8", "data.vocab_size=120",
        "data.seq_len=24", "data.eval_size=0", "model.emb_dim=16", "model.backbone.name=transformer",
        "model.backbone.attn_layers=[]", "diffusion.process=gaussian", "model.backbone.d_model=16",
        "model.backbone.n_layers=1", "train.batch_size=4", "diffusion.steps=20", "train.progress=false",
        "train.num_threads=1", "sample.gaussian.steps=2"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True)
def _keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def full_disk_save_file(tensors, path, *args, **kwargs):
    """safetensors' save_file on a full disk: it raises its own error, not an OSError."""
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def train(run_cli, run_dir, *extra):
    return run_cli("train", "--config", "demo", f"run_dir={run_dir}", *TINY, *extra)


# ---- training ------------------------------------------------------------------------------------------
def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_resume_uses_the_last_complete_one(
        tmp_path, run_cli, assert_clean_error, monkeypatch):
    run = tmp_path / "run"
    assert train(run_cli, run, "train.steps=2").exit_code == 0
    monkeypatch.setattr(ckpt_io, "save_file", full_disk_save_file)
    for _ in range(2):  # every resume on the full disk stops the same way, cleanly
        line = assert_clean_error(train(run_cli, run, "train.steps=4", "--resume"),
                                  str(run / "checkpoints" / "step_00000004"), "no space left on device")
        assert "the newest complete checkpoint, step_00000002, is kept" in line
        assert latest_checkpoint(run).name == "step_00000002"
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002"]  # no temp folder
    monkeypatch.undo()  # space again: the resume continues from step 2
    r = train(run_cli, run, "train.steps=4", "--resume")
    assert r.exit_code == 0, r.output
    assert "resumed from step 2" in r.output and latest_checkpoint(run).name == "step_00000004"


def test_a_safetensors_io_error_is_a_checkpoint_write_error_naming_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_io, "save_file", full_disk_save_file)
    folder = tmp_path / "checkpoints" / "step_00000001"
    with pytest.raises(CheckpointWriteError, match=r"step_00000001: cannot write the checkpoint: no space left on "
                                                   r"device \(the disk is full\); no checkpoint was written"):
        ckpt_io.save_checkpoint(folder, model_state={"w": torch.zeros(2)}, config={}, trainer_state={})
    assert list((tmp_path / "checkpoints").iterdir()) == []

    def bad_dtype(tensors, path, *a, **kw):
        raise SafetensorError("Error while serializing: unsupported dtype")
    monkeypatch.setattr(ckpt_io, "save_file", bad_dtype)  # not an I/O error: stays what it is
    with pytest.raises(SafetensorError, match="unsupported dtype"):
        ckpt_io.save_checkpoint(folder, model_state={"w": torch.zeros(2)}, config={}, trainer_state={})


def test_a_full_disk_writing_the_run_files_names_the_file(tmp_path, run_cli, assert_clean_error, monkeypatch):
    from mambadiff import fileio

    real = fileio.os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path / "run" / ".config.json")):
            raise ENOSPC
        return real(fd)
    monkeypatch.setattr(fileio.os, "fsync", fsync)
    assert_clean_error(train(run_cli, tmp_path / "run", "train.steps=1"),
                       f"{tmp_path / 'run' / 'config.json'}: cannot write: no space left on device")


def test_a_full_disk_leaves_metrics_jsonl_strict(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    log.write({"step": 1, "loss": 1.0})
    real_open = open

    class HalfLine(io.FileIO):
        def write(self, data):  # takes a few bytes, then the disk is full
            if len(data) > 5:
                return super().write(bytes(data)[:5])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("builtins.open", lambda path, mode="r", **kw: HalfLine(path, "a")
                        if str(path).endswith("metrics.jsonl") and "a" in mode else real_open(path, mode, **kw))
    with pytest.raises(OSError, match="metrics.jsonl") as info:
        log.write({"step": 2, "loss": 0.5})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == \
        [{"step": 1, "loss": 1.0}]
