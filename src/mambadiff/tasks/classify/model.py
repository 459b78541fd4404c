"""The classifier of a run: its model config resolved for the data (vocab, classes, length, the matched
backbone), building it, describing its size, and loading a trained one from a run or checkpoint folder.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mambadiff.config import from_dict
from mambadiff.models.classifier import SequenceClassifier
from mambadiff.train.checkpoint import load_weights, read_json, resolve_checkpoint

from .config import ClassifyConfig
from .data import load_run_tokenizer
from .param_match import match_backbone, parameter_counts


def resolve_model_config(cfg: ClassifyConfig, vocab_size: int, num_classes: int) -> dict | None:
    """Fill cfg.model for the data (vocab, classes, the length of the backbones that have one) and apply
    parameter matching once (``param_match.applied`` guards a resumed or reloaded run). Returns the
    match report or None."""
    model = dataclasses.replace(cfg.model, vocab_size=vocab_size, num_classes=num_classes)
    bb = model.backbone.cover_length(cfg.data.max_len)  # learned positions and S4's kernel cover the longest input
    report = None
    pm = cfg.param_match
    if pm.enabled and not pm.applied:
        bb, report = match_backbone(bb.name, bb, num_classes, target=pm.target, reference_name=pm.reference,
                                    tolerance=pm.tolerance)
        pm.target, pm.applied = report["target"], True
    cfg.model = dataclasses.replace(model, backbone=bb)
    return report


def build_classifier(cfg: ClassifyConfig, vocab_size: int, num_classes: int) -> tuple[SequenceClassifier, dict | None]:
    report = resolve_model_config(cfg, vocab_size, num_classes)
    torch.manual_seed(cfg.train.seed)  # matching built throwaway backbones: seed the real one afresh
    return SequenceClassifier(cfg.model), report


def describe_parameters(model: SequenceClassifier, report: dict | None = None) -> str:
    c = parameter_counts(model)
    bb = model.cfg.backbone
    knob = f"d_model={bb.d_model}" + (f", ff_dim={bb.ff_dim or 4 * bb.d_model}" if bb.name == "transformer" else "")
    text = (f"model: {bb.name} x{bb.n_layers} ({knob}{', bidirectional' if bb.bidirectional else ''}); "
            f"parameters: total {c['total']:,}, non-embedding {c['non_embedding']:,}, embedding {c['embedding']:,}")
    if report is not None:
        text += f" (matched to {report['target']:,} non-embedding, {report['rel_error']:+.1%})"
    return text


def load_classifier(path: str | Path, ema: bool = True, device: str = "cpu"):
    """(model, tokenizer, config) from a run folder (latest checkpoint) or a checkpoint folder."""
    folder = resolve_checkpoint(path)
    cfg = from_dict(ClassifyConfig, read_json(folder / "config.json"))
    tok = load_run_tokenizer(folder / "tokenizer")
    model = SequenceClassifier(cfg.model)
    load_weights(folder, model, ema=ema)
    return model.to(device).eval(), tok, cfg
