"""The start of every training run, in one place: the folder check, the run lock, the deferred
Ctrl-C / SIGTERM, the saved config on ``--resume``, the seed, then resume and fit.

    with training_run(cfg, "language-model", resume) as (cfg, dist_info):
        trainer = build(cfg, dist_info)          # writes config.json, tokenizer/
        result = fit_run(trainer, resume, progress, verbose)
    ... final scores (still under the lock)

A start that fails before training wrote anything leaves the folder as it was
(``run_folder.discard_failed_start``).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterator

from .batches import seed_everything
from .checkpoint import run_config
from .distributed import DistInfo, setup_distributed
from .interrupt import deferred_interrupt
from .run_folder import check_run_folder, discard_failed_start
from .run_lock import run_lock

__all__ = ["fit_run", "training_run"]


@contextlib.contextmanager
def training_run(cfg, kind: str, resume: bool,
                 check: Callable[[object], None] | None = None) -> Iterator[tuple[object, DistInfo]]:
    """(the config to train with, the process's DistInfo) under the run's lock; ``kind`` names the
    run in the folder check's message ("a language-model run folder"). ``check`` is the task's test
    of the whole config (the model it builds included) before anything is written; default
    ``cfg.validate()``."""
    (check or type(cfg).validate)(cfg)
    dist_info = setup_distributed(cfg.train.device)
    if dist_info.is_main:
        check_run_folder(cfg.run_dir, [f.name for f in dataclasses.fields(type(cfg))], kind)
    with run_lock(cfg.run_dir, enabled=dist_info.is_main):
        with deferred_interrupt(), discard_failed_start(cfg.run_dir, dist_info.is_main):
            cfg = run_config(cfg, resume)
            seed_everything(cfg.train.seed)
            yield cfg, dist_info


def fit_run(trainer, resume: bool, progress: bool, verbose: bool):
    """Resume the trainer's latest checkpoint when asked (saying so), then fit: the TrainResult."""
    if resume and trainer.resume() and verbose:
        print(f"resumed from step {trainer.step}")
    trainer.cfg.progress = progress and trainer.cfg.progress
    return trainer.fit()
