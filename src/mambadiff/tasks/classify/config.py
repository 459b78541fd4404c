"""The configs of a classification run: data, parameter matching, and `ClassifyConfig` (with the model
and training sections) and its validation. A run's ``config.json`` is `ClassifyConfig` as a dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from mambadiff.data.lra import FIXED_TOKENIZERS, ListOpsGenerateConfig
from mambadiff.data.text_clean import CleanConfig
from mambadiff.models.backbones import BACKBONES
from mambadiff.models.classifier import ClassifierConfig
from mambadiff.train import TrainConfig

BACKBONE_NAMES = tuple(BACKBONES)  # the registry's names, in registration order


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
