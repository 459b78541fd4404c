"""``TrainConfig``: the ``train.*`` settings of a run (the loop's knobs), checked on creation."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """The ``train.*`` settings; ``validate`` (run on creation) names the first key out of range."""

    steps: int = 1000                 # optimizer steps
    batch_size: int = 64              # global batch per optimizer step (all ranks and micro-batches)
    grad_accum: int = 1               # micro-batches per step on each rank
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_decay: str = "linear"          # linear | cosine | constant
    lr_decay_clock: str = "steps"     # steps: decay over train.steps | minutes: over train.max_minutes of
                                      # training clock (a time-budgeted run ends at LR 0, whatever its speed)
    grad_clip: float = 1.0            # 0 disables
    ema_decay: float = 0.0            # 0 disables EMA; sampling/eval use EMA weights when on; < 1
    log_every: int = 10
    eval_every: int = 0               # 0: only at the end
    save_every: int = 0               # 0: only at the end (and on interrupt / time budget)
    keep_checkpoints: int = 2         # newest step checkpoints kept; 0: all
    seed: int = 0
    precision: str = "fp32"           # fp32 | bf16 | fp16 (autocast, GPU only; CPU stays fp32)
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    max_minutes: float = 0.0          # wall-clock budget; 0: none. Stops cleanly with a checkpoint.
    num_threads: int = 0              # torch intra-op threads; 0: leave torch's default
    flush_denormals: bool = True      # CPU: flush denormals to zero (see mambadiff.runtime)
    best_metric: str = ""             # eval metric that picks checkpoints/best (early stopping); "" = off
    best_mode: str = "max"            # max | min: which direction of best_metric is better
    progress: bool = True
    tensorboard: bool = False         # also write the metrics as TensorBoard events (run_dir/tensorboard)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ValueError naming the first ``train.*`` key whose value is out of range."""
        def need(key: str, ok: bool, expect: str) -> None:
            if not ok:
                raise ValueError(f"train.{key} must be {expect}, got {getattr(self, key)!r}")

        def number(key: str) -> float:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"train.{key} must be a finite number, got {value!r}")
            return value

        for key in ("steps", "batch_size", "grad_accum", "log_every"):
            need(key, number(key) > 0 and float(getattr(self, key)).is_integer(), "an int > 0")
        for key in ("warmup_steps", "eval_every", "save_every", "keep_checkpoints", "num_threads"):
            need(key, number(key) >= 0 and float(getattr(self, key)).is_integer(), "an int >= 0")
        need("lr", number("lr") > 0, "> 0")
        for key in ("weight_decay", "grad_clip", "max_minutes"):
            need(key, number(key) >= 0, ">= 0 (0 disables)" if key != "weight_decay" else ">= 0")
        need("ema_decay", 0 <= number("ema_decay") < 1, "in [0, 1) (0 disables EMA)")
        number("seed")
        need("lr_decay", self.lr_decay in ("linear", "cosine", "constant"), "linear|cosine|constant")
        need("lr_decay_clock", self.lr_decay_clock in ("steps", "minutes"), "steps|minutes")
        if self.lr_decay_clock == "minutes" and self.lr_decay != "constant" and not self.max_minutes > 0:
            raise ValueError("train.lr_decay_clock=minutes decays the LR over train.max_minutes: set "
                             f"train.max_minutes > 0 (got {self.max_minutes!r})")
        need("best_mode", self.best_mode in ("max", "min"), "'max' or 'min'")
        need("precision", self.precision in ("fp32", "bf16", "fp16"), "fp32|bf16|fp16")
        need("device", isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
             "auto|cpu|cuda|cuda:N")

