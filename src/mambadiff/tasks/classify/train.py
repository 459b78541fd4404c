"""Training a classifier: `ClassificationTask` (a task of the shared training loop) and `train_classifier`.

Glossary: b batch, c classes.

Model: ``SequenceClassifier`` (token embedding -> backbone -> masked mean pooling -> linear head).
Loss: cross-entropy. Evaluation during training: accuracy, macro-F1 and loss on the valid split.

A run folder holds ``config.json`` (the full ``ClassifyConfig``, with the matched backbone and the
label map), ``tokenizer/``, ``metrics.jsonl``, ``checkpoints/step_*/`` (each loadable alone: weights +
config + tokenizer) and ``final_metrics.json`` (valid/test metrics of the final weights).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mambadiff.config import to_dict
from mambadiff.data.classification import ClassificationDataset
from mambadiff.train import StepContext
from mambadiff.train.checkpoint import atomic_write_json, load_state

from .config import ClassifyConfig
from .data import encode_examples, load_splits, prepare_tokenizer
from .evaluate import evaluate_classifier
from .model import build_classifier, describe_parameters
from .param_match import parameter_counts


class ClassificationTask:
    """A ``Task`` of ``mambadiff.train.Trainer``: cross-entropy on padded batches; evaluate() scores the
    valid split (accuracy, macro-F1, loss)."""

    def __init__(self, cfg: ClassifyConfig, train_set: ClassificationDataset, valid_set: ClassificationDataset | None):
        self.cfg = cfg
        self.train_set = train_set
        self.valid_set = valid_set if valid_set is not None and len(valid_set) else None

    def num_train_examples(self) -> int:
        return len(self.train_set)

    def get_batch(self, indices: list[int], device) -> dict[str, torch.Tensor]:
        batch = self.train_set.collate([self.train_set[i] for i in indices])  # padded to the longest
        return {k: v.to(device) for k, v in batch.items()}

    def loss(self, model: nn.Module, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["input_ids"], batch["attention_mask"])  # (b, c)
        loss = F.cross_entropy(logits.float(), batch["label"])
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        return loss, {"loss": loss.item(), "accuracy": acc.item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.valid_set is None:
            return {}
        m = evaluate_classifier(model, self.valid_set, self.cfg.data.eval_batch_size)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "loss": m["loss"]}

    def count_tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def state_dict(self) -> dict:
        return {}  # the loop's data order records the data's size (a resume on other data is refused)

    def load_state_dict(self, state: dict) -> None:
        pass


def check_classify_config(cfg: ClassifyConfig) -> None:
    """``cfg.validate()`` and the backbone it configures, built on the meta device (parameter matching
    then resizes a backbone that builds): a bad model setting fails before the run writes anything."""
    from mambadiff.models.backbones import build_backbone
    from mambadiff.models.meta_check import check_model_config

    cfg.validate()
    check_model_config(lambda: build_backbone(cfg.model.backbone.cover_length(cfg.data.max_len)))


def train_classifier(cfg: ClassifyConfig, resume: bool = False, progress: bool = True, verbose: bool = True):
    """Train a classifier as ``cfg`` says; returns (TrainResult, model, tokenizer, final metrics).

    The final metrics (also in run_dir/final_metrics.json) hold the parameter counts and the valid and
    test metrics of the final weights. ``resume`` continues the run folder's latest checkpoint (a folder
    without one starts fresh, saying so); without it, a run folder that already has checkpoints is
    refused. The run holds ``run_dir/.lock`` for its life (``mambadiff.train.run_lock``): a second run
    on the same folder is refused before it writes. A Ctrl-C or SIGTERM during start-up or training
    ends in a checkpoint (``mambadiff.train.interrupt``).
    """
    from mambadiff.train.run_session import fit_run, training_run

    with training_run(cfg, "classification", resume, check_classify_config) as (cfg, dist_info):
        trainer, tok, splits, sets = build_classify_trainer(cfg, dist_info, verbose)
        result = fit_run(trainer, resume, progress, verbose)
        final_model, metrics = final_metrics(cfg, trainer, result, splits, sets, dist_info, verbose)
    return result, final_model, tok, metrics


def build_classify_trainer(cfg: ClassifyConfig, dist_info, verbose: bool):
    """Data splits, tokenizer, model, task and ``Trainer`` of a classification run (writes the run's
    config.json and tokenizer/): (trainer, tokenizer, splits, (train, valid, test) datasets)."""
    from mambadiff.train import Trainer
    from mambadiff.train.distributed import barrier

    run_dir = Path(cfg.run_dir)
    splits = load_splits(cfg, verbose=verbose and dist_info.is_main)
    cfg.data.label_map, cfg.data.label_names = splits.label_map, splits.label_names
    if dist_info.is_main:  # the main process writes run_dir/tokenizer, the others read it
        tok = prepare_tokenizer(cfg, (t for t, _ in splits.train))
    barrier()
    if not dist_info.is_main:
        tok = prepare_tokenizer(cfg, (t for t, _ in splits.train))
    d = cfg.data
    train_set = encode_examples(splits.train, tok, d.max_len)
    valid_set = encode_examples(splits.valid, tok, d.max_len) if splits.valid else None
    test_set = encode_examples(splits.test, tok, d.max_len) if splits.test else None
    model, report = build_classifier(cfg, tok.vocab_size, len(splits.label_names))
    full = to_dict(cfg)
    if dist_info.is_main:
        if verbose:
            print(describe_parameters(model, report))
            print(f"data: {len(train_set):,} train / {len(valid_set or []):,} valid / {len(test_set or []):,} test "
                  f"examples, labels {splits.label_names}, max_len {d.max_len}, tokenizer {d.tokenizer} "
                  f"(vocab {tok.vocab_size:,})")
        atomic_write_json(run_dir / "config.json", full)
    task = ClassificationTask(cfg, train_set, valid_set)
    trainer = Trainer(model, task, cfg.train, run_dir, full, dist_info=dist_info,
                      write_extra=lambda folder: tok.save(folder / "tokenizer"))
    return trainer, tok, splits, (train_set, valid_set, test_set)


def final_metrics(cfg: ClassifyConfig, trainer, result, splits, sets, dist_info, verbose: bool):
    """(the final model, its metrics): the weights of the best evaluation with ``train.best_metric``
    (else the last), scored on the valid and test splits; written to run_dir/final_metrics.json."""
    _, valid_set, test_set = sets
    final_model = trainer.eval_model()
    if result.best:  # train.best_metric: report the weights of the best evaluation (early stopping)
        final_model.load_state_dict(load_state(result.best["checkpoint"], ema=trainer.ema is not None))
        if verbose and dist_info.is_main:
            print(f"selected step {result.best['step']} by valid {result.best['metric']} "
                  f"{result.best['value']:.4f}")
    metrics: dict[str, Any] = {"step": result.step, "seconds": result.seconds, "backbone": cfg.model.backbone.name,
                               "parameters": parameter_counts(final_model), "label_names": splits.label_names}
    if result.best:
        metrics["selected"] = {k: result.best[k] for k in ("metric", "value", "step")}
    if dist_info.is_main:
        for name, ds in (("valid", valid_set), ("test", test_set)):
            if ds is not None and len(ds):
                metrics[name] = evaluate_classifier(final_model, ds, cfg.data.eval_batch_size, splits.label_names)
        atomic_write_json(Path(cfg.run_dir) / "final_metrics.json", metrics)
    return final_model, metrics
