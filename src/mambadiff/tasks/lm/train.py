"""Training a causal language model: `LMTask` (a task of the shared training loop) and `train_lm`.

Glossary: b batch, w window length (``data.block_size``), v vocab.

An example is a window of ``block_size + 1`` consecutive tokens of the training stream starting at a
multiple of ``data.stride``; the model reads the first ``block_size`` and predicts each next one
(cross-entropy over every position, as nanoGPT trains). Evaluation scores the validation stream
(`score_stream`: nats per token and bits per byte).

A run folder holds ``config.json`` (the full ``LMConfig``, the vocabulary size filled in),
``tokenizer/``, ``metrics.jsonl``, ``checkpoints/step_*/`` (each loadable alone) and
``final_metrics.json`` (validation loss and bits per byte of the final weights).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mambadiff.config import to_dict
from mambadiff.models.backbones import count_parameters
from mambadiff.models.lm import CausalLM
from mambadiff.train import StepContext
from mambadiff.train.checkpoint import atomic_write_json, latest_checkpoint

from .config import LMConfig
from .data import LMStreams, load_streams, prepare_lm_tokenizer
from .evaluate import score_stream

__all__ = ["LMTask", "build_lm", "train_lm"]


class LMTask:
    """A ``Task`` of ``mambadiff.train.Trainer``: next-token cross-entropy on windows of the stream."""

    def __init__(self, cfg: LMConfig, streams: LMStreams, token_bytes: list[int]):
        self.cfg, self.streams, self.token_bytes = cfg, streams, token_bytes
        self.window = torch.arange(cfg.data.block_size + 1)  # (w + 1,)

    def num_train_examples(self) -> int:
        d = self.cfg.data
        return (len(self.streams.train) - d.block_size - 1) // d.stride + 1

    def get_batch(self, indices: list[int], device) -> dict[str, torch.Tensor]:
        starts = torch.tensor(indices, dtype=torch.long) * self.cfg.data.stride  # (b,)
        windows = self.streams.train[starts[:, None] + self.window].long()  # (b, w + 1)
        return {"windows": windows.to(device)}

    def loss(self, model: nn.Module, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        windows = batch["windows"]  # (b, w + 1)
        logits = model(windows[:, :-1])  # (b, w, v)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten())
        return loss, {"loss": loss.item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        d = self.cfg.data
        return score_stream(model, self.streams.valid, d.block_size, self.token_bytes, d.eval_batch_size)

    def count_tokens(self, batch: dict) -> int:
        return batch["windows"][:, :-1].numel()

    def state_dict(self) -> dict:
        return {}  # the loop's data order records the data's size (a resume on other data is refused)

    def load_state_dict(self, state: dict) -> None:
        pass


def build_lm(cfg: LMConfig, vocab_size: int) -> CausalLM:
    """The model of ``cfg`` for a vocabulary of ``vocab_size`` (filled into ``cfg.model``), its
    length-bound settings (learned positions, S4's kernel) covering ``data.block_size``."""
    backbone = cfg.model.backbone.cover_length(cfg.data.block_size)
    cfg.model = dataclasses.replace(cfg.model, vocab_size=vocab_size, backbone=backbone)
    torch.manual_seed(cfg.train.seed)
    return CausalLM(cfg.model)


def describe(model: CausalLM, streams: LMStreams, tok) -> str:
    bb = model.cfg.backbone
    return (f"model: {bb.name} x{bb.n_layers} (d_model={bb.d_model}); parameters: non-embedding "
            f"{count_parameters(model.backbone):,}, total {count_parameters(model):,}\n"
            f"data: {len(streams.train):,} training / {len(streams.valid):,} validation tokens, tokenizer "
            f"{tok.kind} (vocab {tok.vocab_size:,})")


def _build_trainer(cfg: LMConfig, dist_info, resume: bool, verbose: bool):
    from mambadiff.train import Trainer
    from mambadiff.train.distributed import barrier

    run_dir = Path(cfg.run_dir)
    reuse = resume and latest_checkpoint(run_dir) is not None
    # the main process writes run_dir/tokenizer, the others read it back
    if dist_info.is_main:
        streams, tok = load_streams(cfg.data, lambda docs: prepare_lm_tokenizer(cfg.data, docs, run_dir, reuse))
    barrier()
    if not dist_info.is_main:
        streams, tok = load_streams(cfg.data, lambda docs: prepare_lm_tokenizer(cfg.data, docs, run_dir, True))
    model = build_lm(cfg, tok.vocab_size)
    full = to_dict(cfg)
    if dist_info.is_main:
        if verbose:
            print(describe(model, streams, tok))
        atomic_write_json(run_dir / "config.json", full)
    task = LMTask(cfg, streams, tok.token_bytes)
    trainer = Trainer(model, task, cfg.train, run_dir, full, dist_info=dist_info,
                      write_extra=lambda folder: tok.save(folder / "tokenizer"))
    return trainer, tok, task


def train_lm(cfg: LMConfig, resume: bool = False, progress: bool = True, verbose: bool = True):
    """Train a language model as ``cfg`` says; returns (TrainResult, model, tokenizer, final metrics).

    The final metrics (also run_dir/final_metrics.json) are the validation loss and bits per byte of
    the final weights (EMA when on) and the parameter counts. ``resume``, the run lock, SIGINT/SIGTERM
    and divergence behave as for every run of the shared loop (``mambadiff.train``)."""
    from mambadiff.train.run_session import fit_run, training_run

    with training_run(cfg, "language-model", resume) as (cfg, dist_info):
        trainer, tok, task = _build_trainer(cfg, dist_info, resume, verbose)
        result = fit_run(trainer, resume, progress, verbose)
        model = trainer.eval_model()
        metrics = {"step": result.step, "seconds": result.seconds, "backbone": cfg.model.backbone.name,
                   "parameters": {"non_embedding": count_parameters(model.backbone),
                                  "total": count_parameters(model)},
                   "valid": dict(result.last_eval) or task.evaluate(model)}
        if dist_info.is_main:  # under the run's lock, beside the checkpoints it scores
            atomic_write_json(Path(cfg.run_dir) / "final_metrics.json", metrics)
    return result, model, tok, metrics
