"""A small training run for tests/train/test_faults.py to kill, interrupt or starve.

    python fault_worker.py RUN_DIR [FAULT]

Resumes RUN_DIR's latest checkpoint when there is one, trains to STEPS with a checkpoint after every
step, and exits 0 (done), 130 (stopped by SIGINT) or 143 (stopped by SIGTERM). FAULT makes the run hurt itself at a chosen moment:
    kill-loss:K            SIGKILL at the K-th loss call (mid-step)
    kill-write:K:FILE      SIGKILL in the K-th checkpoint write, right after FILE is in its temp folder
    kill-replace:K         SIGKILL in the K-th checkpoint write, just before it is renamed into place
    slow                   sleep in every step (the parent kills at a random moment)
"""
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import ToyTask  # noqa: E402

from mambadiff.train import TrainConfig, Trainer  # noqa: E402
from mambadiff.train import checkpoint as ckpt_io  # noqa: E402
from mambadiff.train.interrupt import deferred_interrupt, exit_code  # noqa: E402

STEPS = 10


class StatefulTask(ToyTask):
    """Its state changes inside loss() (as a loss-aware timestep sampler's does) and steers training."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.slow = 0.0

    def loss(self, model, batch, ctx):
        self.calls += 1
        if self.slow:
            time.sleep(self.slow)
        loss, metrics = super().loss(model, batch, ctx)
        return loss * (1.0 + 0.1 * (self.calls % 3)), metrics

    def state_dict(self):
        return {**super().state_dict(), "calls": self.calls}

    def load_state_dict(self, s):
        super().load_state_dict(s)
        self.calls = s["calls"]


def config(**kw) -> TrainConfig:
    base = dict(steps=STEPS, batch_size=8, grad_accum=2, lr=1e-2, warmup_steps=2, ema_decay=0.9, log_every=1,
                save_every=1, keep_checkpoints=2, progress=False, seed=3, device="cpu", num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def build_trainer(run_dir, task=None, **kw) -> Trainer:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))
    return Trainer(model, task or StatefulTask(), config(**kw), run_dir, {"worker": "toy"})


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str, task: StatefulTask) -> None:
    kind, _, rest = fault.partition(":")
    if kind == "slow":
        task.slow = 0.02
    elif kind == "kill-loss":
        at, original = int(rest), task.loss

        def loss(*a, **kw):
            if task.calls + 1 == at:
                _kill_self()
            return original(*a, **kw)
        task.loss = loss
    elif kind == "kill-write":
        at, name = rest.split(":")
        at, original, seen = int(at), ckpt_io.save_file, []

        def save_file(tensors, path, *a, **kw):
            original(tensors, path, *a, **kw)
            if Path(path).name == name:
                seen.append(path)
                if len(seen) == at:
                    _kill_self()
        ckpt_io.save_file = save_file
    elif kind == "kill-replace":
        at, original, seen = int(rest), ckpt_io.os.replace, []

        def replace(src, dst, *a, **kw):
            if ".tmp" in Path(src).name and Path(dst).name.startswith("step_"):
                seen.append(src)
                if len(seen) == int(at):
                    _kill_self()
            return original(src, dst, *a, **kw)
        ckpt_io.os.replace = replace
    elif kind:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    run_dir, fault = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
    with deferred_interrupt():
        task = StatefulTask()
        install(fault, task)
        trainer = build_trainer(run_dir, task)
        trainer.resume()
        print(f"ready at step {trainer.step}", flush=True)
        result = trainer.fit()
    sys.exit(exit_code(result.stop_signal) if result.interrupted else 0)
