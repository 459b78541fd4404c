"""Sequence classification (sentiment) as a task of the shared training loop, plus evaluation,
parameter matching across backbones and streaming (recurrent) inference.

Glossary: b batch, l length, d model width, c classes, v vocab.

Model: ``SequenceClassifier`` (token embedding -> backbone -> masked mean pooling -> linear head).
Loss: cross-entropy. Evaluation during training: accuracy, macro-F1 and loss on the valid split.

Data: ``data.train`` (required), optional ``data.valid`` / ``data.test``; a missing split is carved
out of the training file with a stratified split (``data.split`` = train/valid/test fractions,
``data.split_seed``). The valid and test files are read with the training file's label map, so ids
agree and an unknown label is an error naming the file, line and column. Relative data paths are
resolved against the current working directory: the shipped configs
(``sentiment140-mamba``, ``sst2-mamba``, ``imdb-mamba``) expect to be run from the repository root,
where ``../shared/data`` sits beside it.

Long Range Arena (``lra-listops``, ``lra-text``; ``mambadiff.data.lra``): ``data.format: listops`` reads
LRA's ListOps TSV; with ``data.listops.generate`` and no ``data.train``, the ListOps generator writes
the splits into ``data.listops.root/<a folder named by the generator settings>`` (reused when present)
and ``data.train/valid/test`` are set to them. ``data.tokenizer: listops | bytes`` are fixed
vocabularies (ListOps tokens; UTF-8 bytes) with no [CLS]/[SEP]: ``data.max_len`` is then L itself.

Parameter matching (``param_match``): by default every backbone is sized to the *non-embedding*
parameter count (everything except the token embedding and a learned position table) of the
``param_match.reference`` backbone (Mamba) at ``model.backbone.d_model``. The knob is ``d_model``
for mamba / mamba2 / s4d / lstm (the LSTM's hidden size is its d_model; Mamba-2's head dim becomes
the largest divisor of expand * d_model that divides ``backbone.mamba2.headdim``) and ``ff_dim`` for the
transformer (its d_model stays as configured). The embedding is left out of the match because with
a 30k-entry vocab it dominates the total (~94% at d=128) and would make any sizes look matched.
Both counts are printed and saved.

A run folder holds ``config.json`` (the full ``ClassifyConfig``, with the matched backbone and the
label map), ``tokenizer/``, ``metrics.jsonl``, ``checkpoints/step_*/`` (each loadable alone: weights +
config + tokenizer) and ``final_metrics.json`` (valid/test metrics of the final weights).
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from mambadiff.config import from_dict, to_dict
from mambadiff.data.classification import (ClassificationData, ClassificationDataset, detect_format,
                                           load_classification, resolve_splits)
from mambadiff.data.errors import DataError
from mambadiff.data.lra import (FIXED_TOKENIZERS, ListOpsGenerateConfig, fixed_tokenizer, generate_listops_splits,
                                is_fixed_tokenizer_dir, load_fixed_tokenizer, read_listops_tsv)
from mambadiff.data.text_clean import CleanConfig
from mambadiff.data.tokenizer import TextTokenizer, build_tokenizer, load_tokenizer
from mambadiff.models.backbones import (BACKBONES, BackboneConfig, ResidualStack, build_backbone,
                                        count_parameters)
from mambadiff.models.classifier import ClassifierConfig, SequenceClassifier
from mambadiff.train import StepContext, TrainConfig
from mambadiff.train.checkpoint import (atomic_write_json, load_state, read_json, resolve_checkpoint,
                                        run_config)

__all__ = [
    "CleanConfig", "ClassifyDataConfig", "ParamMatchConfig", "ClassifyConfig", "ClassificationTask",
    "train_classifier", "load_classifier", "evaluate_classifier", "predict", "classify_streaming",
    "StreamingClassifier", "match_backbone", "non_embedding_parameters", "parameter_counts",
    "build_classifier", "load_eval_data", "load_run_tokenizer", "encode_examples", "BACKBONE_NAMES",
]

BACKBONE_NAMES = tuple(BACKBONES)  # the registry's names, in registration order


# ---- configs -------------------------------------------------------------------------------------
@dataclass
class ClassifyDataConfig:
    train: str = ""                       # training file (required); relative paths: from the cwd
    valid: Optional[str] = None           # None: carved out of train (stratified)
    test: Optional[str] = None            # None: carved out of train (stratified)
    format: str = "auto"                  # auto | sentiment140 | sst2 | imdb | csv | jsonl | listops (LRA's TSV)
    text_column: Optional[str] = None     # None: the format's default (field name for jsonl)
    label_column: Optional[str] = None
    label_map: Optional[Any] = None       # {raw: id} or [raw0, raw1, ...]; None: the format's default
    label_names: Optional[Any] = None     # names for the ids (list); None: from the loader
    drop_neutral: bool = False            # sentiment140: drop polarity-2 rows (binary task)
    encoding: Optional[str] = None        # None: the format's default
    on_bad_row: str = "raise"             # raise | skip (counted and reported)
    clean: CleanConfig = field(default_factory=CleanConfig)
    max_len: int = 64                     # tokens incl. [CLS] and [SEP] (fixed tokenizers: none); longer texts are truncated
    tokenizer: str = "bert"               # bert (bert-base-uncased vocab, offline) | trained | listops | bytes
    #                                       (listops, bytes: fixed vocabularies, no [CLS]/[SEP]; data.lra)
    vocab_size: int = 8000                # for tokenizer: trained
    split: list[float] = field(default_factory=lambda: [0.98, 0.01, 0.01])  # train/valid/test fractions
    split_seed: int = 0
    max_train: int = 0                    # 0: all training examples; else a seeded random subset
    max_test: int = 0                     # 0: all test examples; else a seeded random subset (long inputs
    #                                       are slow to score: 1,000 of IMDB's 25,000 reviews at L 4,096)
    eval_batch_size: int = 256
    listops: ListOpsGenerateConfig = field(default_factory=ListOpsGenerateConfig)  # generated ListOps splits


@dataclass
class ParamMatchConfig:
    enabled: bool = True
    reference: str = "mamba"   # backbone whose size at model.backbone.d_model sets the target
    target: int = 0            # explicit non-embedding parameter target; 0: the reference's count
    tolerance: float = 0.10    # relative; a match outside it is an error
    applied: bool = False      # set once the backbone in model.backbone is the matched one


@dataclass
class ClassifyConfig:
    run_dir: str = "runs/classify"
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    param_match: ParamMatchConfig = field(default_factory=ParamMatchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.train.validate()
        d = self.data
        if self.model.backbone.name not in BACKBONE_NAMES:
            raise ValueError(f"model.backbone.name must be one of {BACKBONE_NAMES}, got {self.model.backbone.name!r}")
        if self.param_match.reference not in BACKBONE_NAMES:
            raise ValueError(f"param_match.reference must be one of {BACKBONE_NAMES}, "
                             f"got {self.param_match.reference!r}")
        if not 0 < self.param_match.tolerance < 1:
            raise ValueError(f"param_match.tolerance must be in (0, 1), got {self.param_match.tolerance}")
        if d.tokenizer not in ("bert", "trained", *FIXED_TOKENIZERS):
            raise ValueError(f"data.tokenizer must be bert|trained|{'|'.join(FIXED_TOKENIZERS)}, got {d.tokenizer!r}")
        if d.on_bad_row not in ("raise", "skip"):
            raise ValueError(f"data.on_bad_row must be raise|skip, got {d.on_bad_row!r}")
        if d.max_len < 3:
            raise ValueError(f"data.max_len must be >= 3 ([CLS] text [SEP]), got {d.max_len}")
        if len(d.split) != 3 or any(f < 0 for f in d.split) or abs(sum(d.split) - 1) > 1e-6:
            raise ValueError(f"data.split must be 3 fractions (train, valid, test) >= 0 summing to 1, got {list(d.split)}")
        if d.drop_neutral and d.format not in ("auto", "sentiment140"):
            raise ValueError(f"data.drop_neutral applies to format sentiment140 only, got format {d.format!r}")
        if d.eval_batch_size <= 0:
            raise ValueError("data.eval_batch_size must be > 0")
        if d.vocab_size <= 5:
            raise ValueError(f"data.vocab_size must be > 5 (the special tokens), got {d.vocab_size}")
        for key in ("max_train", "max_test"):
            if getattr(d, key) < 0:
                raise ValueError(f"data.{key} must be >= 0 (0: all), got {getattr(d, key)}")


# ---- parameter counting and matching -------------------------------------------------------------
def _position_parameters(backbone: nn.Module) -> int:
    pos = getattr(backbone, "pos", None)
    return pos.numel() if isinstance(pos, nn.Parameter) else 0


def parameter_counts(model: SequenceClassifier) -> dict[str, int]:
    """total, embedding (token table + learned positions) and non_embedding parameter counts."""
    total = count_parameters(model)
    emb = model.embedding.weight.numel() + _position_parameters(model.backbone)
    return {"total": total, "embedding": emb, "non_embedding": total - emb}


def non_embedding_parameters(backbone: BackboneConfig, num_classes: int) -> int:
    """Non-embedding parameters of a classifier with this backbone: backbone (less learned positions)
    plus the linear head. Builds the backbone only (cheap), never the vocab-sized embedding."""
    net = build_backbone(backbone)
    return count_parameters(net) - _position_parameters(net) + backbone.d_model * num_classes + num_classes


def _mamba2_headdim(cfg: BackboneConfig, d: int) -> int:
    """Mamba-2 head dim for width d: the largest divisor of e = expand * d that divides backbone.mamba2.headdim."""
    return math.gcd(cfg.mamba2.expand * d, cfg.mamba2.headdim)


def _valid_d_model(cfg: BackboneConfig, d: int, min_headdim: int = 16) -> bool:
    if cfg.name == "mamba2":  # heads of at least min_headdim channels (or the configured head dim if smaller)
        return _mamba2_headdim(cfg, d) >= min(min_headdim, cfg.mamba2.headdim)
    if cfg.name == "lstm" and cfg.bidirectional:
        return d % 2 == 0
    if cfg.name == "h3":  # heads of h3.head_dim channels, or the narrower ones _h3_head_dim picks
        return _h3_head_dim(cfg, d) >= min(min_headdim, cfg.h3.head_dim)
    return True


def _h3_head_dim(cfg: BackboneConfig, d: int) -> int:
    """H3 head dim for width d: the largest divisor of d that divides backbone.h3.head_dim."""
    return math.gcd(d, cfg.h3.head_dim)


def _closest(count, lo: int, hi: int, target: int, valid=lambda v: True) -> int:
    """The value v in [lo, hi] (valid(v)) whose count(v) is closest to target; count is increasing."""
    candidates = [v for v in range(lo, hi + 1) if valid(v)]
    if not candidates:
        raise ValueError(f"no valid size in [{lo}, {hi}]")
    a, b = 0, len(candidates) - 1  # binary search for the first candidate with count >= target
    while a < b:
        m = (a + b) // 2
        if count(candidates[m]) >= target:
            b = m
        else:
            a = m + 1
    best = [candidates[a]] + ([candidates[a - 1]] if a > 0 else [])
    return min(best, key=lambda v: (abs(count(v) - target), v))


def match_backbone(name: str, reference: BackboneConfig, num_classes: int, target: int = 0,
                   reference_name: str = "mamba", tolerance: float = 0.10) -> tuple[BackboneConfig, dict]:
    """The backbone ``name`` sized to ``target`` non-embedding parameters.

    ``reference`` carries every setting (d_model, n_layers, d_state, heads, ...); ``target`` 0 means
    the count of ``reference`` built as ``reference_name``. The knob is d_model for mamba, mamba2,
    s4d and lstm, and ff_dim for the transformer (d_model fixed). Returns the config and a report
    ``{target, params, rel_error, knob, value}``; raises ValueError when the closest size is more
    than ``tolerance`` (relative) away.
    """
    if name not in BACKBONE_NAMES:
        raise ValueError(f"backbone name must be one of {BACKBONE_NAMES}, got {name!r}")
    if target <= 0:
        target = non_embedding_parameters(dataclasses.replace(reference, name=reference_name), num_classes)
    base = dataclasses.replace(reference, name=name)
    cache: dict[int, int] = {}
    if name == "transformer":
        knob = "ff_dim"

        def count(v: int) -> int:
            if v not in cache:
                cache[v] = non_embedding_parameters(dataclasses.replace(base, ff_dim=v), num_classes)
            return cache[v]
        value = _closest(count, 1, 64 * base.d_model, target)
        cfg = dataclasses.replace(base, ff_dim=value)
    else:
        knob = "d_model"

        def sized(v: int) -> BackboneConfig:
            if name == "mamba2":
                return dataclasses.replace(base, d_model=v).with_layer(headdim=_mamba2_headdim(base, v))
            if name == "h3":
                return dataclasses.replace(base, d_model=v).with_layer(head_dim=_h3_head_dim(base, v))
            return dataclasses.replace(base, d_model=v)

        def count(v: int) -> int:
            if v not in cache:
                cache[v] = non_embedding_parameters(sized(v), num_classes)
            return cache[v]
        # Mamba-2 (H3) widths step by their head dim; at small widths that step is too coarse,
        # so narrower heads are allowed only when needed to get within the tolerance
        for min_headdim in {"mamba2": (16, 8, 4), "h3": (8, 4, 2)}.get(name, (16,)):
            value = _closest(count, 8, 16 * max(base.d_model, 64), target,
                             lambda v: _valid_d_model(base, v, min_headdim))
            if abs(count(value) - target) <= tolerance * target:
                break
        cfg = sized(value)
    params = count(value)
    rel = (params - target) / target
    report = {"target": target, "params": params, "rel_error": rel, "knob": knob, "value": value}
    if abs(rel) > tolerance:
        raise ValueError(f"param_match: the closest {name} ({knob}={value}) has {params:,} non-embedding "
                         f"parameters, {rel:+.1%} from the target {target:,} (tolerance {tolerance:.0%}); "
                         f"change model.backbone settings or set param_match.enabled=false")
    return cfg, report


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


# ---- data ----------------------------------------------------------------------------------------
def _missing_file_error(path: str, key: str) -> DataError:
    return DataError(f"{key}: no such file (relative paths are resolved against the current directory "
                     f"{os.getcwd()}; the shipped configs expect to be run from the repository root)", file=path)


def _load_file(d: ClassifyDataConfig, path: str, key: str, *, label_map=None, label_names=None,
               format: str | None = None, text_column: str | None = None,
               label_column: str | None = None, verbose: bool = True) -> ClassificationData:
    if not Path(path).is_file():
        raise _missing_file_error(path, key)
    fmt = format or d.format
    if fmt == "listops":  # LRA's TSV: labels are the digits 0-9, no cleaning
        return read_listops_tsv(path, on_bad_row=d.on_bad_row, verbose=verbose)
    if fmt == "auto":
        fmt = detect_format(path)
    same_format = format is None or format in (d.format, "auto")
    kwargs: dict[str, Any] = dict(
        format=fmt, label_map=label_map if label_map is not None else d.label_map,
        label_names=label_names if label_names is not None else d.label_names,
        clean=d.clean.to_text_clean(), on_bad_row=d.on_bad_row, verbose=verbose,
        text_column=text_column if text_column is not None else (d.text_column if same_format else None),
        label_column=label_column if label_column is not None else (d.label_column if same_format else None))
    if d.encoding is not None:
        kwargs["encoding"] = d.encoding
    if fmt == "sentiment140":
        kwargs["drop_neutral"] = d.drop_neutral
    return load_classification(path, **kwargs)


@dataclass
class ClassifySplits:
    train: list
    valid: list
    test: list
    label_names: list[str]
    label_map: dict[str, int]


def load_splits(cfg: ClassifyConfig, verbose: bool = True) -> ClassifySplits:
    d = cfg.data
    if not d.train and d.listops.generate:  # generated ListOps splits (reused when present)
        paths = generate_listops_splits(d.listops, verbose=verbose)
        d.train, d.format = str(paths["train"]), "listops"
        d.valid = d.valid or (str(paths["valid"]) if d.listops.n_valid else None)
        d.test = d.test or (str(paths["test"]) if d.listops.n_test else None)
        if verbose:
            print(f"data: generated ListOps splits in {paths['train'].parent}")
    if not d.train:
        raise ValueError("data.train must be set (a training file)")
    train = _load_file(d, d.train, "data.train", verbose=verbose)
    # valid/test are read with the training labels so the ids agree
    other = dict(label_map=train.label_map, label_names=train.label_names, verbose=verbose)
    valid = _load_file(d, d.valid, "data.valid", **other) if d.valid else None
    test = _load_file(d, d.test, "data.test", **other) if d.test else None
    tr, va, te = resolve_splits(train, valid, test, fractions=tuple(d.split), seed=d.split_seed)
    tr = seeded_subset(tr, d.max_train, d.split_seed)
    te = seeded_subset(te, d.max_test, d.split_seed)
    if not tr:
        raise DataError("no training examples left after the split", file=d.train)
    return ClassifySplits(tr, va, te, list(train.label_names), dict(train.label_map))


def seeded_subset(examples: list, size: int, seed: int) -> list:
    """``size`` of ``examples`` drawn with ``seed``, in their original order; all of them when ``size`` is 0
    or not smaller."""
    if not size or len(examples) <= size:
        return examples
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), size))]


def prepare_tokenizer(cfg: ClassifyConfig, train_texts: Iterable[str]) -> TextTokenizer:
    saved = Path(cfg.run_dir) / "tokenizer"
    if saved.is_dir():
        return load_run_tokenizer(saved)
    if cfg.data.tokenizer in FIXED_TOKENIZERS:
        tok = fixed_tokenizer(cfg.data.tokenizer)
        tok.save(saved)
        return tok
    texts = list(train_texts) if cfg.data.tokenizer == "trained" else None
    tok = build_tokenizer(cfg.data.tokenizer, texts, cfg.data.vocab_size)
    tok.save(saved)
    return tok


def load_run_tokenizer(directory: str | Path):
    """A run's saved tokenizer: a fixed one (listops, bytes) or a ``TextTokenizer``."""
    return load_fixed_tokenizer(directory) if is_fixed_tokenizer_dir(directory) else load_tokenizer(directory)


def encode_examples(examples, tok, max_len: int) -> ClassificationDataset:
    """Examples as token ids: [CLS] text [SEP] for WordPiece tokenizers; bare ids for the fixed ones
    (a ListOps source or a text's bytes, truncated to max_len)."""
    return ClassificationDataset(examples, tok, max_len, add_special_tokens=hasattr(tok, "cls_id"))


def load_eval_data(cfg: ClassifyConfig, tok: TextTokenizer, path: str, format: str | None = None,
                   text_column: str | None = None, label_column: str | None = None,
                   verbose: bool = True) -> ClassificationDataset:
    """A labelled file encoded for a trained classifier: the run's label map, cleaning and max_len."""
    data = _load_file(cfg.data, path, "--data", label_map=cfg.data.label_map, label_names=cfg.data.label_names,
                      format=format, text_column=text_column, label_column=label_column, verbose=verbose)
    return encode_examples(data, tok, cfg.data.max_len)


# ---- the task ------------------------------------------------------------------------------------
def _batches_by_length(dataset: ClassificationDataset, batch_size: int):
    """Index batches in length order (little padding); predictions are put back in dataset order."""
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.token_ids[i]))
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


@torch.no_grad()
def predict(model: SequenceClassifier, dataset: ClassificationDataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, c) float32 in dataset order, labels (N,))."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(dataset)
    logits = torch.zeros(n, model.cfg.num_classes)
    labels = torch.tensor(dataset.labels, dtype=torch.long)
    try:
        for idx in _batches_by_length(dataset, batch_size):
            batch = dataset.collate([dataset[i] for i in idx])
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (b, c)
            logits[torch.as_tensor(idx)] = out.float().cpu()
    finally:
        model.train(was_training)
    return logits, labels


def evaluate_classifier(model: SequenceClassifier, dataset: ClassificationDataset, batch_size: int = 256,
                        label_names: list[str] | None = None) -> dict:
    """{accuracy, macro_f1, confusion_matrix (rows true, columns predicted), n, loss, labels, per_class}."""
    from mambadiff.metrics.classification import classification_metrics
    if len(dataset) == 0:
        raise ValueError("evaluate_classifier: the dataset is empty")
    logits, labels = predict(model, dataset, batch_size)
    k = model.cfg.num_classes
    out = classification_metrics(labels.tolist(), logits.argmax(-1).tolist(), labels=list(range(k)))
    out["loss"] = float(F.cross_entropy(logits, labels))
    if label_names is not None and len(label_names) == k:
        out["label_names"] = list(label_names)
    return out


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
        # the data is a pure function of the config; keep its size to catch a resume on other data
        return {"num_train": len(self.train_set)}

    def load_state_dict(self, state: dict) -> None:
        n = state.get("num_train")
        if n is not None and n != len(self.train_set):
            raise ValueError(f"the checkpoint was trained on {n} examples, the data now gives {len(self.train_set)}")


# ---- training / loading --------------------------------------------------------------------------
def train_classifier(cfg: ClassifyConfig, resume: bool = False, progress: bool = True, verbose: bool = True):
    """Train a classifier as ``cfg`` says; returns (TrainResult, model, tokenizer, final metrics).

    The final metrics (also in run_dir/final_metrics.json) hold the parameter counts and the valid and
    test metrics of the final weights. ``resume`` continues the run folder's latest checkpoint; without
    it, a run folder that already has checkpoints is refused.
    """
    from mambadiff.train import Trainer, seed_everything
    from mambadiff.train.distributed import setup_distributed

    cfg.validate()
    run_dir = Path(cfg.run_dir)
    cfg = run_config(cfg, resume)
    dist_info = setup_distributed(cfg.train.device)
    seed_everything(cfg.train.seed)
    splits = load_splits(cfg, verbose=verbose and dist_info.is_main)
    cfg.data.label_map, cfg.data.label_names = splits.label_map, splits.label_names
    from mambadiff.train.distributed import barrier
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
    if resume and trainer.resume():
        if verbose:
            print(f"resumed from step {trainer.step}")
    trainer.cfg.progress = progress and trainer.cfg.progress
    result = trainer.fit()
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
                metrics[name] = evaluate_classifier(final_model, ds, d.eval_batch_size, splits.label_names)
        atomic_write_json(run_dir / "final_metrics.json", metrics)
    return result, final_model, tok, metrics


def load_classifier(path: str | Path, ema: bool = True, device: str = "cpu"):
    """(model, tokenizer, config) from a run folder (latest checkpoint) or a checkpoint folder."""
    folder = resolve_checkpoint(path)
    cfg = from_dict(ClassifyConfig, read_json(folder / "config.json"))
    tok = load_run_tokenizer(folder / "tokenizer")
    model = SequenceClassifier(cfg.model)
    model.load_state_dict(load_state(folder, ema=ema))
    return model.to(device).eval(), tok, cfg


# ---- streaming inference -------------------------------------------------------------------------
class StreamingClassifier:
    """Recurrent inference of a unidirectional state-space classifier, one token at a time.

    Per token: embedding -> for each layer ``x + mixer.step(norm(x))`` (and its MLP block, if any) ->
    final norm, exactly the
    ``ResidualStack`` of the parallel forward; the masked mean pooling becomes a running sum and
    count. Memory is constant in the sequence length: one recurrent state per layer (conv window +
    SSM state) plus (b, d) sums.
    """

    def __init__(self, model: SequenceClassifier, batch_size: int):
        from mambadiff.ssm.bidirectional import Bidirectional
        stack = model.backbone
        name = model.cfg.backbone.name
        ok = isinstance(stack, ResidualStack) and all(
            hasattr(m, "step") and hasattr(m, "allocate_state") and not isinstance(m, Bidirectional)
            for m in stack.mixers)
        if not ok or model.cfg.backbone.bidirectional:
            raise ValueError(f"streaming inference needs a unidirectional state-space backbone (mamba, mamba2 "
                             f"or s4d with bidirectional=false); this model has backbone {name!r}"
                             f"{' (bidirectional)' if model.cfg.backbone.bidirectional else ''}")
        self.model, self.stack = model, stack
        p = model.embedding.weight
        self.states = [m.allocate_state(batch_size, device=p.device) for m in stack.mixers]
        self.total = torch.zeros(batch_size, stack.d_model, device=p.device, dtype=p.dtype)  # (b, d)
        self.count = torch.zeros(batch_size, 1, device=p.device, dtype=p.dtype)  # (b, 1)
        self.batch_size = batch_size

    @torch.no_grad()
    def push(self, token_ids: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Feed one token per row: token_ids (b,), keep (b,) bool (False: padding, not pooled)."""
        if token_ids.shape != (self.batch_size,):
            raise ValueError(f"token_ids must have shape ({self.batch_size},), got {tuple(token_ids.shape)}")
        x = self.model.embedding(token_ids)  # (b, d)
        k = (torch.ones_like(token_ids, dtype=torch.bool) if keep is None else keep.bool())[:, None].to(x.dtype)  # (b, 1)
        x = x * k  # (b, d) padded positions are zero, as in the parallel stack
        for i, (norm, mixer) in enumerate(zip(self.stack.norms, self.stack.mixers)):
            y, self.states[i] = mixer.step(norm(x), self.states[i])  # (b, d)
            x = x + y * k  # (b, d) dropout is the identity at inference
            if self.stack.mlps is not None:  # per-token gated MLP blocks (backbone.mlp_dim > 0)
                x = x + self.stack.mlps[i](self.stack.mlp_norms[i](x)) * k  # (b, d)
        h = self.stack.final_norm(x)  # (b, d)
        self.total += h * k
        self.count += k

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        pooled = self.total / self.count.clamp(min=1.0)  # (b, d) masked mean
        return self.model.head(pooled)  # (b, c)


@torch.no_grad()
def classify_streaming(model: SequenceClassifier, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (b, c) of ``model`` computed token by token with ``step()`` (constant memory in l).

    Equals ``model(input_ids, mask)`` in eval mode. ``mask`` (b, l) must be right-padded (True at real
    tokens). Only unidirectional mamba / mamba2 / s4d backbones have a recurrent form; any other
    backbone raises ValueError.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must have shape (b, l), got {tuple(input_ids.shape)}")
    b, l = input_ids.shape
    if mask is not None:
        if mask.shape != input_ids.shape:
            raise ValueError(f"mask must have shape {tuple(input_ids.shape)}, got {tuple(mask.shape)}")
        mask = mask.bool()
        lengths = mask.sum(1, keepdim=True)  # (b, 1)
        if not torch.equal(mask, torch.arange(l, device=mask.device)[None] < lengths):
            raise ValueError("mask must be right-padded (True at real tokens, then only False)")
    stream = StreamingClassifier(model, b)
    was_training = model.training
    model.eval()
    try:
        for t in range(l):
            stream.push(input_ids[:, t], None if mask is None else mask[:, t])
    finally:
        model.train(was_training)
    return stream.logits()
