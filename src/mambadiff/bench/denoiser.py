"""`mambadiff bench denoiser`: whole diffusion seq2seq training steps of several configs, side by side.

Each config is built as ``mambadiff train`` builds it (``build_seq2seq_trainer``: data, tokenizer,
denoiser, DiffuSeq loss, AdamW, clipping, EMA), and the timed unit is the Trainer's own
``train_step()``, so the numbers are the training loop's tokens/s without its logging, evaluation and
checkpoints. All configs live in one process and take turns step by step: every round runs ``warmup``
untimed steps of each config, then ``steps`` slots in which each config runs one timed step, so a slow
phase of a shared or noisy machine (on a shared 2-core VM the same GEMM was measured to vary by 28%
over seconds) falls on all of them alike. Reported per config: the median step time over all timed
steps, the spread of the per-round medians, tokens/s, and the speed relative to the first config
(> 1: faster) as the median over slots of the two configs' time ratio within the same slot.

The training data is the config's own (``data.path``), cut to ``train_pairs`` pairs; no run folder is
kept (each config runs in a temporary one).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import check_at_least, print_table, split_spec, write_json

DEFAULT_CONFIGS = ("qqp-transformer-gaussian-cpu", "qqp-mamba2-cpu", "qqp-mamba2-hybrid-cpu")


@dataclass
class _Entry:
    spec: str
    trainer: object
    backbone: str
    backbone_params: int
    total_params: int
    step_ms: list[list[float]] = field(default_factory=list)  # [round][slot]
    tokens_per_step: int = 0


def _build(spec: str, index: int, root: Path, threads: int, train_pairs: int) -> _Entry:
    from mambadiff.config import load_config
    from mambadiff.tasks.seq2seq import Seq2SeqConfig, build_seq2seq_trainer

    name, overrides = split_spec(spec)
    forced = [f"run_dir={root / str(index)}", f"data.max_train={train_pairs}", "data.eval_size=0",
              f"train.num_threads={threads}", "train.progress=false"]
    cfg = load_config(Seq2SeqConfig, name, [*overrides, *forced])
    trainer, _ = build_seq2seq_trainer(cfg)
    report = trainer.model.parameter_report()
    return _Entry(spec, trainer, cfg.model.backbone.name, report["backbone"], report["total"])


def run_denoiser_benchmark(specs=DEFAULT_CONFIGS, steps: int = 20, rounds: int = 5, warmup: int = 2,
                           threads: int = 1, train_pairs: int = 2048, json_path=None) -> list[dict]:
    """Time training steps of each config spec ("NAME_OR_YAML key=value ...") in turn; returns the
    records it prints and writes. A bad number or an empty spec raises ``BenchArgumentError``."""
    check_at_least(steps=(steps, 1), rounds=(rounds, 1), warmup=(warmup, 0), threads=(threads, 1),
                   train_pairs=(train_pairs, 1))
    with tempfile.TemporaryDirectory(prefix="mambadiff-bench-") as tmp:
        entries = [_build(spec, i, Path(tmp), threads, train_pairs) for i, spec in enumerate(specs)]
        for _ in range(rounds):
            for entry in entries:
                for _ in range(warmup):
                    entry.trainer.train_step()
                entry.step_ms.append([])
            for _ in range(steps):
                for entry in entries:  # one slot: one step of each config, back to back
                    t0 = time.perf_counter()
                    _, entry.tokens_per_step = entry.trainer.train_step()
                    entry.step_ms[-1].append(1000 * (time.perf_counter() - t0))
    first = [ms for rnd in entries[0].step_ms for ms in rnd]
    records = []
    for entry in entries:
        times = [ms for rnd in entry.step_ms for ms in rnd]
        round_ms = [statistics.median(rnd) for rnd in entry.step_ms]
        ms = statistics.median(times)
        records.append({
            "config": entry.spec, "backbone": entry.backbone, "backbone_params": entry.backbone_params,
            "total_params": entry.total_params, "threads": threads, "ms_per_step": ms,
            "round_ms_min": min(round_ms), "round_ms_max": max(round_ms),
            "tokens_per_step": entry.tokens_per_step, "tokens_per_s": entry.tokens_per_step * 1000 / ms,
            "speed_vs_first": statistics.median(f / t for f, t in zip(first, times)),
            "round_ms": round_ms, "step_ms": times, "steps": steps, "rounds": rounds,
        })
    print_table(records, ["config", "backbone_params", "ms_per_step", "round_ms_min", "round_ms_max",
                          "tokens_per_s", "speed_vs_first"], floatfmt=".4g")
    write_json(json_path, records)
    return records
