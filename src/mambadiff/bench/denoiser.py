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

import shlex
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from .common import print_table, write_json

DEFAULT_CONFIGS = ("qqp-transformer-cpu", "qqp-mamba2-cpu", "qqp-mamba2-hybrid-cpu")


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

    parts = shlex.split(spec)
    if not parts:
        raise click.BadParameter("an empty --config", param_hint="--config")
    name, overrides = parts[0], parts[1:]
    forced = [f"run_dir={root / str(index)}", f"data.max_train={train_pairs}", "data.eval_size=0",
              f"train.num_threads={threads}", "train.progress=false"]
    cfg = load_config(Seq2SeqConfig, name, [*overrides, *forced])
    trainer, _ = build_seq2seq_trainer(cfg)
    report = trainer.model.parameter_report()
    return _Entry(spec, trainer, cfg.model.backbone.name, report["backbone"], report["total"])


def run_denoiser_benchmark(specs=DEFAULT_CONFIGS, steps: int = 20, rounds: int = 5, warmup: int = 2,
                           threads: int = 1, train_pairs: int = 2048, json_path=None) -> list[dict]:
    """Time training steps of each config spec ("NAME_OR_YAML key=value ...") in turn; returns the
    records it prints and writes."""
    for name, value, least in (("steps", steps, 1), ("rounds", rounds, 1), ("warmup", warmup, 0),
                               ("threads", threads, 1), ("train_pairs", train_pairs, 1)):
        if value < least:
            raise click.BadParameter(f"must be >= {least}, got {value}", param_hint=f"--{name.replace('_', '-')}")
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


@click.command("denoiser")
@click.option("--config", "configs", multiple=True, default=DEFAULT_CONFIGS, show_default=True,
              help='A shipped config name or YAML file, optionally with key=value overrides in the same '
                   'quoted string, e.g. "qqp-mamba2-cpu model.backbone.d_state=32". Repeat for each '
                   'config; the first is the reference of speed_vs_first.')
@click.option("--steps", default=20, show_default=True,
              help="Timed slots per round; in each slot every config runs one training step.")
@click.option("--rounds", default=5, show_default=True, help="Rounds (each starts with --warmup steps per config).")
@click.option("--warmup", default=2, show_default=True, help="Untimed steps before each config's turn.")
@click.option("--threads", default=1, show_default=True, help="torch / kernel threads (train.num_threads).")
@click.option("--train-pairs", default=2048, show_default=True, help="Training pairs loaded per config.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the records here.")
def denoiser_command(configs, steps, rounds, warmup, threads, train_pairs, json_path):
    """Training steps of whole denoiser configs side by side: ms/step, tokens/s, speed vs the first."""
    from mambadiff.config import ConfigError
    from mambadiff.data.errors import DataError
    try:
        run_denoiser_benchmark(configs, steps, rounds, warmup, threads, train_pairs, json_path)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
