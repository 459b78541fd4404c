"""Recall benchmark: the synthetic tasks of the Mamba paper (selective copying, induction heads) and
Zoology's multi-query associative recall (MQAR; Arora et al. 2023).

Each (task, model) pair trains a small causal language model (embedding -> backbone -> head, see
``mambadiff.tasks.synthetic``) with the shared ``Trainer`` and reports the held-out per-token accuracy
on the answer positions. A selective (input-dependent) model such as Mamba should solve the tasks; a
time-invariant one such as S4D should stay far below, near chance on selective copying.

The defaults are a quick run (a few minutes on 2 CPU cores for 2 tasks x 2 models): width 64, 2 layers,
length 64, 500 steps of batch 64 at lr 1e-2, selective copying of 4 tokens, 16 answer symbols (chance
1/16). Selective copying then separates the models (Mamba ~0.99, S4D ~0.55-0.6: its GLU output gate
lets it solve part of the task) and induction heads too (Mamba ~1.0 after a sudden transition around
step 150-300, S4D ~0.1). Mamba needs more steps for more copied tokens or longer sequences.

MQAR runs at each (sequence length, key-value pairs) of ``mqar_settings`` with its own step count and
learning rate (``mqar_steps``, ``mqar_lr``): N pairs, then all N keys queried in random order at random
positions, keys and values from alphabets of ``mqar_num_symbols`` (chance 1 / mqar_num_symbols).
Attention and models whose state stores key-value products can look the keys up; time-invariant
convolutions (S4D, S4) cannot. Measured at the defaults (width 64, 2 layers, batch 64, 1000 steps at lr
3e-3, one thread, seed 0), held-out per-token accuracy at 64 x 8 (chance 1/32): attention 1.000,
Mamba-2 0.990, H3 0.928, S4D 0.180, S4 0.179; at 128 x 16 attention 1.000, Mamba-2 0.992, S4D 0.103,
S4 0.077 (H3 not measured there). Mamba (S6) runs in its own MQAR shape (``MQAR_SHAPES``: one layer of
width 112, 105,569 parameters): 0.992 at 64 x 8 (0.201 in the shared 2 x 64), 0.919 at 128 x 16 (0.146
in 2 x 64).
H3 costs the most per step: its diagonal SSM convolves h * p * p key-value products.
"""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from mambadiff.data.synthetic import TASKS
from mambadiff.models.backbones import BACKBONES, BackboneConfig
from mambadiff.tasks.synthetic import SyntheticTask, SyntheticTaskConfig
from mambadiff.train import TrainConfig, Trainer, seed_everything
from mambadiff.train.checkpoint import atomic_write_text
from mambadiff.train.distributed import DistInfo
from mambadiff.train.run_folder import check_runs_root

# Quick defaults, tuned so that Mamba clearly beats S4D within a few CPU minutes.
DEFAULT_D_MODEL = 64
DEFAULT_LAYERS = 2
DEFAULT_STEPS = 500
DEFAULT_SEQ_LEN = 64
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 1e-2
DEFAULT_NUM_TOKENS = 4     # selective copying: data tokens to copy
DEFAULT_NUM_SYMBOLS = 16   # answer alphabet of both tasks (the paper's vocabulary of 16)
DEFAULT_NUM_EVAL = 1000
DEFAULT_TASKS = ("selective_copy", "induction", "mqar")
DEFAULT_MQAR_SETTINGS = ((64, 8), (128, 16))  # (sequence length, key-value pairs)
DEFAULT_MQAR_NUM_SYMBOLS = 32  # key alphabet = value alphabet size
DEFAULT_MQAR_STEPS = 1000
DEFAULT_MQAR_LR = 3e-3
# torch intra-op threads. These models are tiny: extra threads barely help, and on a busy machine
# (more runnable threads than cores) two threads ran 3-20x slower per step than one. 0: torch's default.
DEFAULT_NUM_THREADS = 1



@dataclass(frozen=True)
class MQARShape:
    """How one model's MQAR backbone departs from the shared (d_model, n_layers): ``n_layers //
    depth_divisor`` layers (at least 1) of width ``d_model * width_scale`` (rounded to a multiple of 8),
    plus any other ``BackboneConfig`` fields in ``extra``."""

    depth_divisor: int = 1
    width_scale: float = 1.0
    extra: Mapping[str, object] = field(default_factory=dict)


# The one place a model gets another backbone shape on MQAR (fewer parameters than the Transformer's).
# Mamba (S6) trades depth for width: one layer of width 112 (105,569 parameters at the defaults) instead
# of two of width 64 (73,857). At 2 x 64 it stays on the plateau of guessing among the row's values
# (64 x 8: 0.201 after 1,000 steps, 0.70 after 3,000; a 16 x 4 toy needs ~2,000 steps to leave it),
# while a single layer binds keys to values within the budget (64 x 8: width 96 0.982, 112 0.992, 128
# 0.993; 128 x 16 at width 112: 0.919, at 96: 0.279). Its layer computes what the reference scan
# does (parity-tested); d_state 64, the A and dt inits, the learning rate, Mamba's GPT-2-style init
# and a gated output norm did not move the two-layer plateau. ``mqar_shapes={}`` (CLI
# ``--mqar-shared-shape``) gives every model the shared shape.
MQAR_SHAPES: dict[str, MQARShape] = {"mamba": MQARShape(depth_divisor=2, width_scale=1.75)}


def mqar_backbone_shape(model: str, d_model: int, n_layers: int,
                        shapes: Mapping[str, MQARShape] | None = None) -> dict:
    """The ``BackboneConfig`` shape fields (d_model, n_layers, and any extras) of ``model`` on MQAR, from
    the shared ``d_model`` x ``n_layers`` and ``shapes`` (None: ``MQAR_SHAPES``)."""
    shape = (MQAR_SHAPES if shapes is None else shapes).get(model)
    if shape is None:
        return {"d_model": d_model, "n_layers": n_layers}
    width = max(8, 8 * round(d_model * shape.width_scale / 8))
    return {"d_model": width, "n_layers": max(1, n_layers // shape.depth_divisor), **shape.extra}


RECORD_FIELDS = ("task", "model", "params", "accuracy", "seq_accuracy", "chance", "eval_loss",
                 "train_seconds", "steps", "lr", "seq_len", "num_kv_pairs", "d_model", "n_layers", "seed")


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto|cpu|cuda, got {device!r}")
    return torch.device(device)


def _check_names(kind: str, names: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ValueError(f"{kind} must name at least one of {sorted(allowed)}")
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"{kind}: unknown {bad}; expected some of {sorted(allowed)}")
    return names


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_mqar_settings(settings, num_symbols: int) -> tuple[tuple[int, int], ...]:
    """MQAR (sequence length, key-value pairs) settings as a tuple of int pairs (ValueError naming them)."""
    try:
        settings = tuple((int(l), int(n)) for l, n in settings)
    except (TypeError, ValueError):
        raise ValueError(f"mqar_settings must be (seq_len, num_kv_pairs) pairs, got {settings!r}") from None
    if not settings:
        raise ValueError("mqar_settings must hold at least one (seq_len, num_kv_pairs) pair")
    for l, n in settings:
        if n <= 0 or l < 3 * n:
            raise ValueError(f"mqar_settings: ({l}, {n}) needs num_kv_pairs >= 1 and seq_len >= 3 * num_kv_pairs "
                             f"(the pairs, then a query of every key)")
        if num_symbols < n:
            raise ValueError(f"mqar_num_symbols={num_symbols} must be >= num_kv_pairs={n} (a row's keys are distinct)")
    return settings


def validate_args(tasks: Sequence[str], models: Sequence[str], *, d_model: int, n_layers: int, steps: int,
                  seq_len: int, batch_size: int = DEFAULT_BATCH_SIZE, num_eval: int = DEFAULT_NUM_EVAL,
                  lr: float = DEFAULT_LR, num_tokens: int = DEFAULT_NUM_TOKENS,
                  num_symbols: int = DEFAULT_NUM_SYMBOLS, seed: int = 0,
                  mqar_settings=DEFAULT_MQAR_SETTINGS, mqar_num_symbols: int = DEFAULT_MQAR_NUM_SYMBOLS,
                  mqar_steps: int = DEFAULT_MQAR_STEPS, mqar_lr: float = DEFAULT_MQAR_LR) -> tuple[tuple, tuple]:
    """Check the benchmark's arguments (ValueError naming the argument); returns (tasks, models) as tuples."""
    tasks = _check_names("tasks", tasks, TASKS)
    models = _check_names("models", models, tuple(BACKBONES))
    for name, value in (("d_model", d_model), ("n_layers", n_layers), ("steps", steps),
                        ("seq_len", seq_len), ("batch_size", batch_size), ("num_eval", num_eval),
                        ("num_tokens", num_tokens), ("mqar_steps", mqar_steps)):
        _positive_int(name, value)
    for name, value in (("num_symbols", num_symbols), ("mqar_num_symbols", mqar_num_symbols)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            raise ValueError(f"{name} must be an int >= 2, got {value!r}")
    if "selective_copy" in tasks and seq_len < 2 * num_tokens:
        raise ValueError(f"seq_len={seq_len} is too short for selective copying of {num_tokens} tokens "
                         f"(needs >= {2 * num_tokens})")
    if "induction" in tasks and seq_len < 3:
        raise ValueError(f"seq_len={seq_len} is too short for induction heads (needs >= 3)")
    if "mqar" in tasks:
        check_mqar_settings(mqar_settings, mqar_num_symbols)
    for name, value in (("lr", lr), ("mqar_lr", mqar_lr)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return tasks, models


def _runs(tasks, seq_len, steps, lr, num_tokens, num_symbols, mqar_settings, mqar_num_symbols, mqar_steps,
          mqar_lr):
    """One (run name, task config fields, steps, lr) per task setting, in the order of ``tasks``."""
    for task in tasks:
        if task == "mqar":
            for l, n in mqar_settings:
                yield (f"mqar_l{l}_kv{n}", dict(task=task, seq_len=l, num_kv_pairs=n, num_queries=0,
                                                 num_symbols=mqar_num_symbols), mqar_steps, mqar_lr)
        else:
            yield task, dict(task=task, seq_len=seq_len, num_tokens=num_tokens, num_symbols=num_symbols), steps, lr


def run_synthetic_benchmark(
    tasks: Sequence[str] = DEFAULT_TASKS,
    models: Sequence[str] = ("mamba", "s4d"),
    d_model: int = DEFAULT_D_MODEL,
    n_layers: int = DEFAULT_LAYERS,
    steps: int = DEFAULT_STEPS,
    seq_len: int = DEFAULT_SEQ_LEN,
    seed: int = 0,
    json_path: str | Path | None = None,
    progress: bool = True,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    num_tokens: int = DEFAULT_NUM_TOKENS,
    num_symbols: int = DEFAULT_NUM_SYMBOLS,
    num_eval: int = DEFAULT_NUM_EVAL,
    mqar_settings: Sequence[tuple[int, int]] = DEFAULT_MQAR_SETTINGS,
    mqar_num_symbols: int = DEFAULT_MQAR_NUM_SYMBOLS,
    mqar_steps: int = DEFAULT_MQAR_STEPS,
    mqar_lr: float = DEFAULT_MQAR_LR,
    run_dir: str | Path | None = None,
    device: str = "auto",
    num_threads: int = DEFAULT_NUM_THREADS,
    mqar_shapes: Mapping[str, MQARShape] | None = None,
) -> list[dict]:
    """Train every (task setting, model) pair and return one record per pair (fields: ``RECORD_FIELDS``).

    Selective copying and induction heads run once at ``seq_len`` for ``steps`` at ``lr``; MQAR runs once
    per (seq_len, num_kv_pairs) of ``mqar_settings`` for ``mqar_steps`` at ``mqar_lr``. Prints a table when
    ``progress`` is set; writes ``{"config": ..., "results": [...]}`` atomically to ``json_path`` when
    given. Runs go to ``run_dir/<task setting>_<model>`` (a temporary folder when None). On MQAR a model
    listed in ``mqar_shapes`` (None: ``MQAR_SHAPES``; ``{}``: none) gets its own backbone shape; each
    record's ``d_model`` and ``n_layers`` are those its model was built with.
    """
    tasks, models = validate_args(tasks, models, d_model=d_model, n_layers=n_layers, steps=steps,
                                  seq_len=seq_len, batch_size=batch_size, num_eval=num_eval, lr=lr,
                                  num_tokens=num_tokens, num_symbols=num_symbols, seed=seed,
                                  mqar_settings=mqar_settings, mqar_num_symbols=mqar_num_symbols,
                                  mqar_steps=mqar_steps, mqar_lr=mqar_lr)
    mqar_settings = check_mqar_settings(mqar_settings, mqar_num_symbols) if "mqar" in tasks else ()
    dev = _resolve_device(device)
    check_runs_root(run_dir)  # before any training: a folder that holds other things is refused

    records: list[dict] = []
    with contextlib.ExitStack() as stack:
        threads_before = torch.get_num_threads()  # the Trainer sets torch's thread count process-wide
        stack.callback(torch.set_num_threads, threads_before)
        root = Path(run_dir) if run_dir is not None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="mambadiff-synthetic-")))
        for run_name, fields, run_steps, run_lr in _runs(tasks, seq_len, steps, lr, num_tokens, num_symbols,
                                                         mqar_settings, mqar_num_symbols, mqar_steps, mqar_lr):
            task_cfg = SyntheticTaskConfig(**fields, num_train=run_steps * batch_size, num_eval=num_eval,
                                           seed=seed)
            task = SyntheticTask(task_cfg)  # the same data for every model
            for model_name in models:
                backbone = pair_backbone(model_name, task_cfg, d_model, n_layers, mqar_shapes)
                train_cfg = TrainConfig(steps=run_steps, batch_size=batch_size, lr=run_lr,
                                        warmup_steps=max(1, run_steps // 10), lr_decay="linear",
                                        grad_clip=1.0, log_every=max(1, run_steps // 20), seed=seed,
                                        num_threads=num_threads, progress=progress,
                                        keep_checkpoints=1)
                records.append(train_pair(task, backbone, train_cfg, root / f"{run_name}_{model_name}", dev))
                if progress:
                    r = records[-1]
                    print(f"{run_name} / {model_name}: accuracy {r['accuracy']:.3f} ({r['train_seconds']:.1f} s)",
                          file=sys.stderr, flush=True)

    if progress:
        print(format_table(records), flush=True)
    if json_path is not None:
        config = {"tasks": list(tasks), "models": list(models), "d_model": d_model, "n_layers": n_layers,
                  "steps": steps, "seq_len": seq_len, "seed": seed, "batch_size": batch_size, "lr": lr,
                  "num_tokens": num_tokens, "num_symbols": num_symbols, "num_eval": num_eval,
                  "mqar_settings": [list(x) for x in mqar_settings], "mqar_num_symbols": mqar_num_symbols,
                  "mqar_steps": mqar_steps, "mqar_lr": mqar_lr,
                  "num_threads": num_threads, "device": str(dev),
                  "mqar_shapes": {name: asdict(shape) for name, shape in
                                  (MQAR_SHAPES if mqar_shapes is None else mqar_shapes).items()}}
        atomic_write_text(json_path, json.dumps({"config": config, "results": records}, indent=2) + "\n")
    return records


def pair_backbone(model_name: str, task_cfg: SyntheticTaskConfig, d_model: int, n_layers: int,
                  mqar_shapes: Mapping[str, MQARShape] | None) -> BackboneConfig:
    """The causal backbone of ``model_name`` on a task: the shared shape, or its own on MQAR; the
    transformer's learned positions (max_len) and S4's kernel (s4.l_max) cover exactly the length."""
    shape = ({"d_model": d_model, "n_layers": n_layers} if task_cfg.task != "mqar" else
             mqar_backbone_shape(model_name, d_model, n_layers, mqar_shapes))
    backbone = BackboneConfig(name=model_name, **shape, bidirectional=False, max_len=task_cfg.seq_len)
    return backbone.with_layer(l_max=task_cfg.seq_len) if model_name == "s4" else backbone


def train_pair(task: SyntheticTask, backbone: BackboneConfig, train_cfg: TrainConfig, folder: Path, device) -> dict:
    """Train one (task setting, backbone) pair from the same init seed and return its record."""
    task_cfg = task.cfg
    seed_everything(train_cfg.seed)  # the same init seed for every pair
    model = task.build_model(backbone)
    full_config = {"task": asdict(task_cfg), "backbone": asdict(backbone), "train": asdict(train_cfg)}
    trainer = Trainer(model, task, train_cfg, folder, full_config, dist_info=DistInfo(device=device))
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    if result.interrupted:  # Ctrl-C: stop the whole benchmark, not just this run
        raise KeyboardInterrupt
    ev = result.last_eval
    return {
        "task": task_cfg.task, "model": backbone.name, "params": model.num_parameters(),
        "accuracy": ev.get("accuracy", float("nan")),
        "seq_accuracy": ev.get("seq_accuracy", float("nan")),
        "chance": 1.0 / task.num_answer_symbols,
        "eval_loss": ev.get("loss", float("nan")),
        "train_seconds": seconds, "steps": result.step, "lr": train_cfg.lr, "seq_len": task_cfg.seq_len,
        "num_kv_pairs": task_cfg.num_kv_pairs if task_cfg.task == "mqar" else None,
        "d_model": backbone.d_model, "n_layers": backbone.n_layers, "seed": train_cfg.seed,
    }


def format_table(records: list[dict]) -> str:
    from tabulate import tabulate
    rows = [[r["task"], r["seq_len"], "" if r.get("num_kv_pairs") is None else r["num_kv_pairs"], r["model"],
             f"{r['n_layers']} x {r['d_model']}", f"{r['params']:,}", f"{r['accuracy']:.3f}", f"{r['seq_accuracy']:.3f}", f"{r['chance']:.3f}",
             f"{r['train_seconds']:.1f}"] for r in records]
    return tabulate(rows, headers=["task", "l", "kv", "model", "layers x width", "params", "accuracy", "seq acc", "chance", "train s"])
