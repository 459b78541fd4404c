"""The one training loop, shared by diffusion seq2seq, classification and the synthetic tasks.

A *task* owns the data and the loss; the loop owns everything else: optimizer and LR schedule,
gradient accumulation and clipping, EMA, autocast, DDP, progress bar, metrics log, checkpoints and
bit-for-bit resume.

Data order and randomness do not depend on the number of processes: the loop draws a global batch of
example indices from a per-epoch permutation (seeded by ``seed`` and the epoch), every rank takes its
slice, and tasks draw per-step randomness for the *global* batch from ``ctx.generator()`` (seeded by
``seed`` and the step) and keep their slice. So 2 processes reproduce 1 process on the same global batch.

The settings are ``train_config.TrainConfig``; what a task sees of the loop is in ``batches``; the
progress view (minutes of a time budget, or steps and the time left) is ``run_progress``.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import checkpoint as ckpt_io
from . import interrupt
from .batches import EpochOrder, StepContext, Task
from .checkpoint import CheckpointError, check_weights
from .distributed import DistInfo, all_reduce_mean, barrier
from .ema import EMA
from .metrics_log import MetricsLog
from .optim import build_optimizer, clock_decay, cosine_decay, warmup_linear_decay
from .run_folder import check_run_folder
from .run_progress import TrainProgress
from .state_codec import rng_state, set_rng_state
from .train_config import TrainConfig
from ..runtime import flush_denormals


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint of a run did not load; resume continued from an older one."""


class TrainingDivergedError(ValueError):
    """The loss or the weights stopped being finite (NaN or infinity); the message names the step.

    Raised before the step's update and before any checkpoint of such weights is written, so the run
    folder's newest checkpoint is the last good state."""


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    checkpoint: Path | None
    last_eval: dict = field(default_factory=dict)
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    interrupted: bool = False
    stop_signal: int = 0  # the signal that stopped it (signal.SIGINT, signal.SIGTERM), 0 if none
    best: dict = field(default_factory=dict)  # {"metric", "value", "step", "checkpoint"} or {}


class Trainer:
    """Trains ``model`` on ``task`` as ``cfg`` says, writing checkpoints and metrics under ``run_dir``.

    ``clock`` returns seconds: the time budget, the progress view and ``train_seconds`` read it
    (``time.perf_counter`` by default; tests pass a fake one)."""

    def __init__(self, model: nn.Module, task: Task, cfg: TrainConfig, run_dir: str | Path,
                 full_config: dict, dist_info: DistInfo | None = None,
                 write_extra: Callable[[Path], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        cfg.validate()
        self.cfg, self.task, self.full_config, self.clock = cfg, task, full_config, clock
        self.dist = dist_info or DistInfo()
        self.device = self.dist.device
        self.run_dir = Path(run_dir)
        self.write_extra = write_extra
        if cfg.flush_denormals and self.device.type == "cpu":
            flush_denormals()  # vocabulary softmax gradients would otherwise run on slow denormals
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        n_train = task.num_train_examples()
        if cfg.batch_size > n_train:  # a batch would repeat examples (and may not fit in memory): refuse
            raise ValueError(f"train.batch_size {cfg.batch_size} exceeds the {n_train} training examples: "
                             f"set train.batch_size to at most {n_train}")
        per_rank = cfg.batch_size // self.dist.world_size
        if per_rank * self.dist.world_size != cfg.batch_size or per_rank % cfg.grad_accum:
            raise ValueError(f"train.batch_size={cfg.batch_size} must split evenly over "
                             f"{self.dist.world_size} process(es) x grad_accum={cfg.grad_accum}")
        self.micro_batch = per_rank // cfg.grad_accum
        if self.dist.is_main:  # fail before any work when the run folder cannot take checkpoints
            check_run_folder(self.run_dir, full_config.keys())
            ckpt_io.ensure_writable(self.run_dir)
            ckpt_io.clean_stale_folders(self.run_dir)
        self.model = model.to(self.device)
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        # wall-clock seconds spent in fit() over the whole run (resumes add to it): the x axis of
        # quality-against-training-time curves and the clock of lr_decay_clock=minutes; start-up and
        # checkpoint loading are not counted
        self.train_seconds_before = 0.0
        self._fit_start: float | None = None
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay)
        if cfg.lr_decay == "constant":
            factor = warmup_linear_decay(cfg.warmup_steps, cfg.warmup_steps)
        elif cfg.lr_decay_clock == "minutes":
            factor = clock_decay(cfg.warmup_steps, cfg.lr_decay, self._budget_fraction)
        elif cfg.lr_decay == "linear":
            factor = warmup_linear_decay(cfg.warmup_steps, cfg.steps)
        else:
            factor = cosine_decay(cfg.warmup_steps, cfg.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        use_amp = self.device.type == "cuda" and cfg.precision != "fp32"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision) if use_amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and cfg.precision == "fp16")
        self.order = EpochOrder(n_train, cfg.seed)
        self.step = 0
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", self.dist.is_main, tensorboard=cfg.tensorboard)
        self.last_eval: dict = {}
        self.best: dict = {}  # the evaluation that checkpoints/best holds (train.best_metric)
        self._saved: tuple[int, Path] | None = None  # (step, folder) of the newest checkpoint on disk

    # ---- checkpoints -------------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        """The weights used for evaluation and sampling: EMA when enabled."""
        return self.ema.copy_model(self.model) if self.ema is not None else self.model

    def _diverged(self, step: int, what: str) -> TrainingDivergedError:
        newest = ckpt_io.latest_checkpoint(self.run_dir) if self.dist.is_main else None
        kept = f"the newest checkpoint, {newest}, is kept" if newest else "no checkpoint was written"
        return TrainingDivergedError(
            f"step {step}: {what}: training stopped ({kept}); lower train.lr, set train.grad_clip "
            f"(e.g. 1.0) or train from an earlier checkpoint")

    def _write_checkpoint(self, folder: Path, with_optimizer: bool = True) -> Path:
        for name, weights in (("model", self.model.state_dict()),
                              ("EMA", self.ema.state_dict() if self.ema else {})):
            bad = ckpt_io.nonfinite_tensors(weights)
            if bad:  # never write a checkpoint that cannot be used
                raise self._diverged(self.step, f"the {name} weights hold NaN or infinite values "
                                                f"({ckpt_io.first_names(bad)}), {folder.name} not written")
        state = {"step": self.step, "train_seconds": self.train_seconds(),
                 "order": self.order.state_dict(), "rng": rng_state(),
                 "task": self.task.state_dict(), "last_eval": self.last_eval, "best": self.best}
        opt = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
               "scaler": self.scaler.state_dict()} if with_optimizer else None
        return ckpt_io.save_checkpoint(
            folder, model_state=self.model.state_dict(), config=self.full_config, trainer_state=state,
            optimizer_state=opt, ema_state=self.ema.state_dict() if self.ema else None,
            write_extra=self.write_extra)

    def _budget_fraction(self) -> float:
        """The share of ``train.max_minutes`` the training clock has used (``lr_decay_clock: minutes``);
        the ranks' mean under DDP, so that every rank steps with the same LR."""
        fraction = self.train_seconds() / (self.cfg.max_minutes * 60)
        if self.dist.enabled:
            fraction = float(all_reduce_mean(torch.tensor([fraction], dtype=torch.float64)).item())
        return fraction

    def train_seconds(self) -> float:
        """Training wall-clock seconds so far (this fit() plus those of the runs resumed from)."""
        now = 0.0 if self._fit_start is None else self.clock() - self._fit_start
        return self.train_seconds_before + now

    def save(self) -> Path | None:
        path = None
        if self.dist.is_main:
            path = self._write_checkpoint(self.run_dir / "checkpoints" / f"step_{self.step:08d}")
            ckpt_io.prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints)
            self._saved = (self.step, path)
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
        """Load the latest checkpoint of run_dir (or ``folder``); False when there is none.

        Without ``folder``, a newest checkpoint that does not load (truncated, damaged) is renamed
        ``step_N.corrupt`` with a ``CheckpointFallbackWarning`` and the next older one is tried."""
        if folder is not None:
            self._apply(ckpt_io.read_checkpoint(folder, with_ema=self.ema is not None))
            return True
        candidates = ckpt_io.step_checkpoints(self.run_dir)
        if not candidates:
            return False
        failures = []
        for candidate in candidates:
            try:
                self._apply(ckpt_io.read_checkpoint(candidate, with_ema=self.ema is not None))
            except CheckpointError as e:
                failures.append((candidate, e))
                continue
            for bad, err in failures:
                kept = bad.with_name(bad.name + ".corrupt")
                if self.dist.is_main:
                    bad.replace(kept)
                warnings.warn(f"{err}; resuming from the older checkpoint {candidate.name} instead "
                              f"(the damaged folder is kept as {kept.name})", CheckpointFallbackWarning,
                              stacklevel=2)
            return True
        raise CheckpointError(self.run_dir / "checkpoints", "no checkpoint loads: " +
                              "; ".join(str(e) for _, e in failures))

    def _apply(self, data: ckpt_io.CheckpointData) -> None:
        """Put a checked checkpoint into the model, optimizer, data order and RNGs."""
        folder, state = data.folder, data.trainer_state
        check_weights(folder / "model.safetensors", data.model, self.model.state_dict())
        if self.ema is not None:
            check_weights(folder / "ema.safetensors", data.ema, self.ema.state_dict())
        if isinstance(state.get("order"), dict):  # other data is the user's mistake, not a damaged checkpoint
            self.order.check_same_data(state["order"])
        where = folder / ckpt_io.OPTIMIZER_JSON
        try:
            self.model.load_state_dict(data.model)
            if self.ema is not None:
                self.ema.load_state_dict(data.ema)
            opt = data.optimizer
            self.optimizer.load_state_dict(opt["optimizer"])
            for group in self.optimizer.param_groups:  # JSON has no tuples: AdamW's betas come back as lists
                if isinstance(group.get("betas"), list):
                    group["betas"] = tuple(group["betas"])
            self.scheduler.load_state_dict(opt["scheduler"])
            self.scaler.load_state_dict(opt["scaler"])
            where = folder / "trainer_state.json"
            self.order.load_state_dict(state["order"])
            self.task.load_state_dict(state["task"])
            set_rng_state(state["rng"])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(where, f"does not restore ({type(e).__name__}: {e})") from None
        self.step = state["step"]
        self.train_seconds_before = float(state.get("train_seconds", 0.0))
        self.last_eval = state.get("last_eval", {})
        self.best = state.get("best", {})
        if self.best.get("checkpoint"):  # the folder given is the run, wherever it was trained before
            self.best["checkpoint"] = str(self.run_dir / "checkpoints" / "best")
        self._saved = (self.step, folder)
        self.log.truncate_after(self.step)

    # ---- one optimizer step ------------------------------------------------------------------
    def _logs_step(self, step: int) -> bool:
        """Whether the metrics of the step that ends at ``step`` are written to the log."""
        return step % self.cfg.log_every == 0 or step == self.cfg.steps

    def train_step(self) -> tuple[dict[str, float], int]:
        """One optimiser step over the next global batch (all micro-batches, clipping, EMA,
        schedule): (metrics averaged over the batch, tokens it held). ``fit`` runs these.

        An exception before the optimizer update (e.g. a KeyboardInterrupt) puts the data position
        back and drops the partial gradients, so a checkpoint saved afterwards matches ``self.step``."""
        cfg, world, rank = self.cfg, self.dist.world_size, self.dist.rank
        position = self.order.state_dict()
        try:
            sums, tokens = self._accumulate(world, rank)
        except BaseException:
            self.order.load_state_dict(position)
            self.optimizer.zero_grad(set_to_none=True)
            raise
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

    def _accumulate(self, world: int, rank: int) -> tuple[dict[str, float], int]:
        """Forward and backward over the micro-batches of the next global batch."""
        cfg = self.cfg
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
                value = float(loss.detach())
                if not math.isfinite(value):  # before backward: this step's update never happens
                    raise self._diverged(self.step + 1, f"the loss is {value}")
                # the loss is a mean over this micro-batch; the step optimises the mean over the
                # global batch (DDP averages gradients over ranks)
                self.scaler.scale(loss / cfg.grad_accum).backward()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
            tokens += self.task.count_tokens(batch)
        return sums, tokens

    def evaluate(self) -> dict[str, float]:
        result: dict[str, float] = {}
        if self.dist.is_main:
            model = self.eval_model()
            model.eval()
            with torch.no_grad():
                result = self.task.evaluate(model)
            self.log.write({"split": "eval", "step": self.step, "train_seconds": self.train_seconds(), **result})
            self.last_eval = result
            self._saved = None  # the newest checkpoint lacks this evaluation
            self._track_best(result)
        barrier()
        return result

    # ---- the loop ----------------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        """A Ctrl-C asked to stop (on any rank: all ranks stop at the same step)."""
        return self._stops_agreed(False)[0]

    def _stops_agreed(self, out_of_time: bool) -> tuple[bool, bool]:
        """``(interrupted, out_of_time)``, each true when it is on any rank (``out_of_time``: this rank's
        clock is past the budget). Ranks' clocks differ, and a rank that stopped alone would leave the
        others waiting in a collective; one all-reduce carries both."""
        flags = torch.tensor([float(interrupt.stop_requested()), float(out_of_time)], dtype=torch.float64)
        if self.dist.enabled:
            flags = all_reduce_mean(flags)  # (2,)
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def fit(self) -> TrainResult:
        """Train to ``cfg.steps``; on Ctrl-C or SIGTERM (or the time budget) stop at a step boundary
        and save. A non-finite loss raises ``TrainingDivergedError`` (nothing of that step is saved).

        A first SIGINT or SIGTERM lets the current step (or evaluation) finish, then a checkpoint is saved and
        the result says ``interrupted`` and ``stop_signal``; a second one stops at once."""
        with interrupt.deferred_interrupt():
            try:
                return self._fit()
            finally:
                self.log.close()

    def _fit(self) -> TrainResult:
        cfg, clock = self.cfg, self.clock
        start = self._fit_start = clock()
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
        progress = TrainProgress(cfg.steps, cfg.max_minutes, cfg.eval_every, initial_step=self.step, clock=clock,
                                 enabled=bool(cfg.progress and self.dist.is_main))
        window_tokens, window_t0 = 0, start
        total_tokens, tok_s = 0, 0.0
        loss_sum, loss_steps = 0.0, 0  # the loss the progress line shows: mean since the last log step
        interrupted = self._stop_requested()  # Ctrl-C during start-up
        try:
            while self.step < cfg.steps and not interrupted:
                metrics, tokens = self.train_step()
                window_tokens += tokens
                total_tokens += tokens
                if "loss" in metrics:
                    loss_sum, loss_steps = loss_sum + metrics["loss"], loss_steps + 1
                now = clock()
                progress.update(self.step, loss_sum / loss_steps if loss_steps else None,
                                total_tokens / max(now - start, 1e-9))
                if self._logs_step(self.step):
                    tok_s = window_tokens / max(now - window_t0, 1e-9)
                    window_tokens, window_t0 = 0, now
                    loss_sum, loss_steps = 0.0, 0
                    rec = {"split": "train", "step": self.step, "lr": self.scheduler.get_last_lr()[0],
                           "tokens_per_s": tok_s, "train_seconds": self.train_seconds(), **metrics}
                    self.log.write(rec)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    self.evaluate()
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save()
                interrupted, out_of_time = self._stops_agreed(clock() > deadline)
                if out_of_time:
                    break
        except KeyboardInterrupt:
            if interrupt.forced():  # a second Ctrl-C: stop now, nothing more is saved
                raise
            interrupted = True  # raised by the task or outside the main thread: the step was undone
        finally:
            progress.close()
        if not interrupted:
            self.evaluate()
            interrupted = self._stop_requested()  # Ctrl-C during the final evaluation
        if self._saved is not None and self._saved[0] == self.step and self._saved[1].is_dir():
            path = self._saved[1]  # this state is on disk already (saved just now, or resumed from)
        else:
            path = self.save()  # atomic: a second Ctrl-C here leaves the previous checkpoint intact
        seconds, stop_signal = clock() - start, interrupt.stop_signal()
        self.train_seconds_before, self._fit_start = self.train_seconds(), None  # the clock stops with fit()
        return TrainResult(step=self.step, run_dir=self.run_dir, checkpoint=path, last_eval=self.last_eval,
                           seconds=seconds, tokens_per_s=total_tokens / max(seconds, 1e-9),
                           interrupted=interrupted, stop_signal=stop_signal if interrupted else 0,
                           best=dict(self.best))
