"""The one training loop, shared by diffusion seq2seq, classification and the synthetic tasks.

A *task* owns the data and the loss; the loop owns everything else: optimizer and LR schedule,
gradient accumulation and clipping, EMA, autocast, DDP, progress bar, metrics log, checkpoints and
bit-for-bit resume.

Data order and randomness do not depend on the number of processes: the loop draws a global batch of
example indices from a per-epoch permutation (seeded by ``seed`` and the epoch), every rank takes its
slice, and tasks draw per-step randomness for the *global* batch from ``ctx.generator()`` (seeded by
``seed`` and the step) and keep their slice. So 2 processes reproduce 1 process on the same global batch.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from ..progress import progress_bar
from . import checkpoint as ckpt_io
from .distributed import DistInfo, all_reduce_mean, barrier
from .ema import EMA
from .optim import build_optimizer, cosine_decay, warmup_linear_decay
from ..runtime import flush_denormals


@dataclass
class TrainConfig:
    steps: int = 1000                 # optimizer steps
    batch_size: int = 64              # global batch per optimizer step (all ranks and micro-batches)
    grad_accum: int = 1               # micro-batches per step on each rank
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_decay: str = "linear"          # linear | cosine | constant
    grad_clip: float = 1.0            # 0 disables
    ema_decay: float = 0.0            # 0 disables EMA; sampling/eval use EMA weights when on
    log_every: int = 10
    eval_every: int = 0               # 0: only at the end
    save_every: int = 0               # 0: only at the end (and on interrupt / time budget)
    keep_checkpoints: int = 2
    seed: int = 0
    precision: str = "fp32"           # fp32 | bf16 | fp16 (autocast, GPU only; CPU stays fp32)
    device: str = "auto"              # auto | cpu | cuda
    max_minutes: float = 0.0          # wall-clock budget; 0: none. Stops cleanly with a checkpoint.
    num_threads: int = 0              # torch intra-op threads; 0: leave torch's default
    flush_denormals: bool = True      # CPU: flush denormals to zero (see mambadiff.runtime)
    best_metric: str = ""             # eval metric that picks checkpoints/best (early stopping); "" = off
    best_mode: str = "max"            # max | min: which direction of best_metric is better
    progress: bool = True

    def validate(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"train.steps must be > 0, got {self.steps}")
        if self.batch_size <= 0 or self.grad_accum <= 0:
            raise ValueError("train.batch_size and train.grad_accum must be > 0")
        if self.lr_decay not in ("linear", "cosine", "constant"):
            raise ValueError(f"train.lr_decay must be linear|cosine|constant, got {self.lr_decay!r}")
        if self.best_mode not in ("max", "min"):
            raise ValueError(f"train.best_mode must be 'max' or 'min', got {self.best_mode!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"train.precision must be fp32|bf16|fp16, got {self.precision!r}")


class StepContext:
    """What a task needs to know about the current micro-batch."""

    def __init__(self, seed: int, step: int, micro: int, global_batch: int, offset: int, device):
        self.seed, self.step, self.micro = seed, step, micro
        self.global_batch = global_batch  # examples in this step across ranks (one micro-batch slot)
        self.offset = offset              # where this rank's micro-batch starts within it
        self.device = device

    def generator(self) -> torch.Generator:
        """A CPU generator seeded by (seed, step, micro): identical on every rank."""
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.step * 7919 + self.micro) % (2**63 - 1))
        return g

    def slice(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the global micro-batch."""
        return x[self.offset:self.offset + self.local_batch]

    local_batch: int = 0
    log_metrics: bool = True  # False: this step's metrics are not logged (a task may skip log-only work)


class Task(Protocol):
    def num_train_examples(self) -> int: ...
    def get_batch(self, indices: list[int], device) -> dict[str, Any]: ...
    def loss(self, model: nn.Module, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]: ...
    def evaluate(self, model: nn.Module) -> dict[str, float]: ...
    def count_tokens(self, batch: dict) -> int: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class EpochOrder:
    """Endless deterministic order of example indices: epoch e is a permutation seeded by (seed, e)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        if n <= 0:
            raise ValueError("the training set is empty")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.cursor = 0, 0
        self._perm = self._make_perm()

    def _make_perm(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 9973 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._perm = self._make_perm()
            m = min(k - len(out), self.n - self.cursor)
            out.extend(self._perm[self.cursor:self.cursor + m])
            self.cursor += m
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.cursor = s["epoch"], s["cursor"]
        self._perm = self._make_perm()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state().tolist(), "python": repr(random.getstate()),
             "numpy": [np.random.get_state()[0], np.random.get_state()[1].tolist(), *np.random.get_state()[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    random.setstate(eval(state["python"], {"__builtins__": {}}))  # tuple of ints, written by repr above
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


class MetricsLog:
    """Append-only JSONL of train/eval records (the curves `mambadiff report` plots)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """On resume, drop records written after the checkpoint we resume from (they will be redone)."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed run
        ckpt_io.atomic_write_text(self.path, "".join(l + "\n" for l in keep))

    def write(self, record: dict) -> None:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    checkpoint: Path | None
    last_eval: dict = field(default_factory=dict)
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    interrupted: bool = False
    best: dict = field(default_factory=dict)  # {"metric", "value", "step", "checkpoint"} or {}


class Trainer:
    def __init__(self, model: nn.Module, task: Task, cfg: TrainConfig, run_dir: str | Path,
                 full_config: dict, dist_info: DistInfo | None = None,
                 write_extra: Callable[[Path], None] | None = None):
        cfg.validate()
        self.cfg, self.task, self.full_config = cfg, task, full_config
        self.dist = dist_info or DistInfo()
        self.device = self.dist.device
        self.run_dir = Path(run_dir)
        self.write_extra = write_extra
        if cfg.flush_denormals and self.device.type == "cpu":
            flush_denormals()  # vocabulary softmax gradients would otherwise run on slow denormals
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        per_rank = cfg.batch_size // self.dist.world_size
        if per_rank * self.dist.world_size != cfg.batch_size or per_rank % cfg.grad_accum:
            raise ValueError(f"train.batch_size={cfg.batch_size} must split evenly over "
                             f"{self.dist.world_size} process(es) x grad_accum={cfg.grad_accum}")
        self.micro_batch = per_rank // cfg.grad_accum
        self.model = model.to(self.device)
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay)
        if cfg.lr_decay == "linear":
            factor = warmup_linear_decay(cfg.warmup_steps, cfg.steps)
        elif cfg.lr_decay == "cosine":
            factor = cosine_decay(cfg.warmup_steps, cfg.steps)
        else:
            factor = warmup_linear_decay(cfg.warmup_steps, cfg.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        use_amp = self.device.type == "cuda" and cfg.precision != "fp32"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision) if use_amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and cfg.precision == "fp16")
        self.order = EpochOrder(task.num_train_examples(), cfg.seed)
        self.step = 0
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", self.dist.is_main)
        self.last_eval: dict = {}
        self.best: dict = {}  # the evaluation that checkpoints/best holds (train.best_metric)

    # ---- checkpoints -------------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        """The weights used for evaluation and sampling: EMA when enabled."""
        return self.ema.copy_model(self.model) if self.ema is not None else self.model

    def _write_checkpoint(self, folder: Path, with_optimizer: bool = True) -> Path:
        state = {"step": self.step, "order": self.order.state_dict(), "rng": _rng_state(),
                 "task": self.task.state_dict(), "last_eval": self.last_eval, "best": self.best}
        opt = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
               "scaler": self.scaler.state_dict()} if with_optimizer else None
        return ckpt_io.save_checkpoint(
            folder, model_state=self.model.state_dict(), config=self.full_config, trainer_state=state,
            optimizer_state=opt, ema_state=self.ema.state_dict() if self.ema else None,
            write_extra=self.write_extra)

    def save(self) -> Path | None:
        path = None
        if self.dist.is_main:
            path = self._write_checkpoint(self.run_dir / "checkpoints" / f"step_{self.step:08d}")
            ckpt_io.prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints)
        barrier()
        return path

    def _track_best(self, result: dict[str, float]) -> None:
        """Keep checkpoints/best at the evaluation with the best ``train.best_metric`` (main only)."""
        name = self.cfg.best_metric
        if not name:
            return
        if name not in result:
            raise ValueError(f"train.best_metric={name!r} is not an evaluation metric of this task; "
                             f"it reports {sorted(result)}")
        value = float(result[name])
        old = self.best.get("value")
        better = old is None or (value > old if self.cfg.best_mode == "max" else value < old)
        if better and math.isfinite(value):
            folder = self._write_checkpoint(self.run_dir / "checkpoints" / "best", with_optimizer=False)
            self.best = {"metric": name, "value": value, "step": self.step, "checkpoint": str(folder)}

    def resume(self, folder: str | Path | None = None) -> bool:
        """Load the latest checkpoint of run_dir (or ``folder``); False when there is none."""
        folder = Path(folder) if folder else ckpt_io.latest_checkpoint(self.run_dir)
        if folder is None:
            return False
        state = ckpt_io.read_json(folder / "trainer_state.json")
        self.model.load_state_dict(ckpt_io.load_state(folder, ema=False))
        if self.ema is not None:
            self.ema.load_state_dict(ckpt_io.load_state(folder, ema=True))
        opt = torch.load(folder / "optimizer.pt", map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        self.scaler.load_state_dict(opt["scaler"])
        self.step = state["step"]
        self.order.load_state_dict(state["order"])
        self.task.load_state_dict(state["task"])
        self.last_eval = state.get("last_eval", {})
        self.best = state.get("best", {})
        _set_rng_state(state["rng"])
        self.log.truncate_after(self.step)
        return True

    # ---- one optimizer step ------------------------------------------------------------------
    def _logs_step(self, step: int) -> bool:
        """Whether the metrics of the step that ends at ``step`` are written to the log."""
        return step % self.cfg.log_every == 0 or step == self.cfg.steps

    def train_step(self) -> tuple[dict[str, float], int]:
        """One optimiser step over the next global batch (all micro-batches, clipping, EMA,
        schedule): (metrics averaged over the batch, tokens it held). ``fit`` runs these."""
        cfg, world, rank = self.cfg, self.dist.world_size, self.dist.rank
        global_idx = self.order.take(cfg.batch_size)
        slot = self.micro_batch * world  # examples per micro-batch slot across ranks
        sums: dict[str, float] = {}
        tokens = 0
        self.ddp_model.train()
        for micro in range(cfg.grad_accum):
            # micro-batch slot `micro` holds examples [micro*slot, (micro+1)*slot) of the global batch;
            # rank r takes rows [r*micro_batch, (r+1)*micro_batch) of the slot.
            slot_idx = global_idx[micro * slot:(micro + 1) * slot]
            offset = rank * self.micro_batch
            idx = slot_idx[offset:offset + self.micro_batch]
            batch = self.task.get_batch(idx, self.device)
            ctx = StepContext(cfg.seed, self.step, micro, slot, offset, self.device)
            ctx.local_batch = len(idx)
            ctx.log_metrics = self._logs_step(self.step + 1)
            sync = micro == cfg.grad_accum - 1
            cm = self.ddp_model.no_sync() if (self.dist.enabled and not sync) else contextlib.nullcontext()
            with cm:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss, metrics = self.task.loss(self.ddp_model, batch, ctx)
                # the loss is a mean over this micro-batch; the step optimises the mean over the
                # global batch (DDP averages gradients over ranks)
                self.scaler.scale(loss / cfg.grad_accum).backward()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
            tokens += self.task.count_tokens(batch)
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            sums["grad_norm"] = float(gnorm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        if self.dist.enabled:  # report the global mean of each metric
            keys = sorted(sums)
            vec = all_reduce_mean(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
            sums = dict(zip(keys, vec.tolist()))
            tokens *= world
        return sums, tokens

    def evaluate(self) -> dict[str, float]:
        result: dict[str, float] = {}
        if self.dist.is_main:
            model = self.eval_model()
            model.eval()
            with torch.no_grad():
                result = self.task.evaluate(model)
            self.log.write({"split": "eval", "step": self.step, **result})
            self.last_eval = result
            self._track_best(result)
        barrier()
        return result

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        start = time.perf_counter()
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
        bar = progress_bar(cfg.steps, "train", initial=self.step,
                           enabled=bool(cfg.progress and self.dist.is_main))
        window_tokens, window_t0 = 0, time.perf_counter()
        total_tokens, tok_s = 0, 0.0
        interrupted = False
        path = None
        try:
            while self.step < cfg.steps:
                metrics, tokens = self.train_step()
                window_tokens += tokens
                total_tokens += tokens
                bar.update(1)
                if self._logs_step(self.step):
                    now = time.perf_counter()
                    tok_s = window_tokens / max(now - window_t0, 1e-9)
                    window_tokens, window_t0 = 0, now
                    rec = {"split": "train", "step": self.step, "lr": self.scheduler.get_last_lr()[0],
                           "tokens_per_s": tok_s, **metrics}
                    self.log.write(rec)
                    bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", tok_s=f"{tok_s:,.0f}")
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    self.evaluate()
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save()
                if time.perf_counter() > deadline:
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        if not interrupted:
            self.evaluate()
        path = self.save()  # atomic: a second Ctrl-C here leaves the previous checkpoint intact
        seconds = time.perf_counter() - start
        return TrainResult(step=self.step, run_dir=self.run_dir, checkpoint=path, last_eval=self.last_eval,
                           seconds=seconds, tokens_per_s=total_tokens / max(seconds, 1e-9),
                           interrupted=interrupted, best=dict(self.best))
