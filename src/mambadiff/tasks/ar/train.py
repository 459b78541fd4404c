"""Training an autoregressive paraphraser: a causal language model over ``[CLS] source [SEP] target
[SEP]`` (a prefix LM), the loss on the target tokens and the closing ``[SEP]`` only.

Glossary: b batch, l seq_len, d model width, v vocab, n target tokens in a batch.

The pairs are the diffusion runs' (``data.*``: the same files, tokenizer and truncation rule, laid out
``compact``), so the two kinds of model see the same text. The head runs only at the positions that
predict a target token: the source is context, never a prediction, and the (v, d) head is the cost of
a step on a CPU.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mambadiff.config import to_dict
from mambadiff.data.seq2seq import Seq2SeqDataset, collate, load_seq2seq_split
from mambadiff.models.backbones import count_parameters
from mambadiff.models.lm import CausalLM
from mambadiff.train import StepContext
from mambadiff.train.checkpoint import atomic_write_json
from mambadiff.tasks.seq2seq.training_data import training_split

from .config import ARConfig

__all__ = ["ARTask", "ar_parameter_report", "build_ar_model", "target_loss", "train_ar"]


def target_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """(mean cross-entropy over the batch's target tokens, their number)."""
    ids, attn = batch["input_ids"], batch["attention_mask"]  # (b, l) each
    # position p predicts token p + 1: a target token (input_mask 1) that is real (attention_mask 1)
    predicts = (batch["input_mask"][:, 1:] * attn[:, 1:]).bool()  # (b, l - 1)
    # through model(...), so that DDP sees the forward and reduces the gradients
    logits = model(ids[:, :-1], attn[:, :-1].bool(), predict=predicts)  # (n, v)
    targets = ids[:, 1:][predicts]  # (n,)
    return F.cross_entropy(logits.float(), targets), int(targets.numel())


class ARTask:
    """A ``Task`` of ``mambadiff.train.Trainer``: next-token cross-entropy on the target side."""

    def __init__(self, cfg: ARConfig, train_set: Seq2SeqDataset, eval_set: Seq2SeqDataset | None):
        self.cfg, self.train_set, self.eval_set = cfg, train_set, eval_set

    def num_train_examples(self) -> int:
        return len(self.train_set)

    def get_batch(self, indices: list[int], device) -> dict[str, torch.Tensor]:
        batch = collate([self.train_set[i] for i in indices])
        width = int(batch["attention_mask"].sum(1).max())  # trim the padding every row has
        return {k: v[:, :width].to(device) for k, v in batch.items() if k != "index"}

    def loss(self, model: nn.Module, batch: dict, ctx: StepContext):
        loss, _ = target_loss(model, batch)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.eval_set is None:
            return {}
        total, count = 0.0, 0
        for start in range(0, len(self.eval_set), 128):
            batch = self.get_batch(list(range(start, min(start + 128, len(self.eval_set)))),
                                   next(model.parameters()).device)
            loss, n = target_loss(model, batch)
            total, count = total + float(loss) * n, count + n
        return {"loss": total / max(count, 1)}

    def count_tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def state_dict(self) -> dict:
        return {}  # the loop's data order records the data's size (a resume on other data is refused)

    def load_state_dict(self, state: dict) -> None:
        pass


def build_ar_model(cfg: ARConfig, tok) -> CausalLM:
    """The causal LM of ``cfg`` for ``tok``'s vocabulary (filled into ``cfg.model``), its length-bound
    settings covering ``data.seq_len``; ``embedding_init: minilm`` starts the (tied) embedding from
    all-MiniLM-L6-v2's rows, as the diffusion recipes start theirs."""
    backbone = cfg.model.backbone.cover_length(cfg.data.seq_len)
    cfg.model = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size, backbone=backbone)
    torch.manual_seed(cfg.train.seed)
    model = CausalLM(cfg.model)
    if cfg.embedding_init == "minilm":
        from mambadiff.models.pretrained_embedding import minilm_embedding
        rows = minilm_embedding(tok, cfg.model.backbone.d_model)  # (v, d) at N(0, 1) row norms
        with torch.no_grad():  # at the scale of the embedding's own init: the tied head reads it too
            model.embedding.weight.copy_(rows * cfg.model.init_std)
    return model


def ar_parameter_report(cfg: ARConfig) -> dict[str, int]:
    """Parameter counts of ``cfg``'s model at ``data.vocab_size`` (a trained vocabulary's size; the
    bert vocabulary has 30,522): embedding (the head is tied), backbone, other (an untied head), total."""
    from mambadiff.data.tokenizer import bert_tokenizer
    vocab = bert_tokenizer().vocab_size if cfg.data.tokenizer == "bert" else cfg.data.vocab_size
    model = CausalLM(dataclasses.replace(cfg.model, vocab_size=vocab,
                                         backbone=cfg.model.backbone.cover_length(cfg.data.seq_len)))
    emb, bb, total = (count_parameters(m) for m in (model.embedding, model.backbone, model))
    return {"embedding": emb, "backbone": bb, "other": total - emb - bb, "total": total}


def _build_trainer(cfg: ARConfig, dist_info, verbose: bool):
    from mambadiff.tasks.seq2seq import prepare_data_folder, prepare_tokenizer
    from mambadiff.train import Trainer
    from mambadiff.train.distributed import barrier

    folder = prepare_data_folder(cfg)
    if dist_info.is_main:  # the main process writes run_dir/tokenizer, the others read it
        tok = prepare_tokenizer(cfg, folder)
    barrier()
    if not dist_info.is_main:
        tok = prepare_tokenizer(cfg, folder)
    d = cfg.data
    train_set = training_split(folder, tok, d, "compact")
    eval_set = load_seq2seq_split(folder, "valid", tok, d.seq_len, layout="compact", on_overflow=d.on_overflow,
                                  limit=d.eval_size) if d.eval_size else None
    model = build_ar_model(cfg, tok)
    full = to_dict(cfg)
    if dist_info.is_main:
        if verbose:
            bb = cfg.model.backbone
            print(f"model: {bb.name} x{bb.n_layers} (d_model={bb.d_model}); parameters: non-embedding "
                  f"{count_parameters(model.backbone):,}, total {count_parameters(model):,}; data: "
                  f"{len(train_set):,} training pairs, tokenizer {d.tokenizer} (vocab {tok.vocab_size:,})")
        atomic_write_json(Path(cfg.run_dir) / "config.json", full)
    trainer = Trainer(model, ARTask(cfg, train_set, eval_set), cfg.train, cfg.run_dir, full, dist_info=dist_info,
                      write_extra=lambda f: tok.save(f / "tokenizer"))
    return trainer, tok


def train_ar(cfg: ARConfig, resume: bool = False, progress: bool = True, verbose: bool = True):
    """Train an autoregressive paraphraser as ``cfg`` says: (TrainResult, model, tokenizer). Resume,
    the run lock, SIGINT / SIGTERM and divergence behave as for every run of the shared loop."""
    from mambadiff.train.run_session import fit_run, training_run

    with training_run(cfg, "autoregressive paraphraser", resume) as (cfg, dist_info):
        trainer, tok = _build_trainer(cfg, dist_info, verbose)
        result = fit_run(trainer, resume, progress, verbose)
    return result, trainer.eval_model(), tok
