"""The configs of a language-model run: ``LMDataConfig`` (text, split, tokenizer, windows),
``LMGenerateConfig`` (sampling) and ``LMConfig`` (data, model, training). A run's ``config.json`` is
``LMConfig`` as a dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mambadiff.data.lm_text import LM_FORMATS
from mambadiff.data.lm_tokenizers import LM_TOKENIZERS
from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.lm import CausalLMConfig
from mambadiff.options import Options, option
from mambadiff.train import TrainConfig

__all__ = ["LMConfig", "LMDataConfig", "LMGenerateConfig"]


@dataclass
class LMDataConfig(Options):
    """Where the text comes from, how it is split and tokenized, and the training windows."""

    prefix = "data."

    train: str = option("", "training text: a plain-text file (one document) or a jsonl file, gzip or not "
                            "(one document a line); relative paths are read from the current folder")
    valid: str = option("", "validation text in the same formats; empty: the last valid_fraction of the "
                            "training text (nanoGPT's split)")
    valid_fraction: float = option(0.1, "share of the training text's tokens held out for validation when "
                                        "data.valid is empty", minimum=0.0, maximum=0.5)
    format: str = option("auto", "text: the file is one document; jsonl: one JSON object a line; auto: "
                                 "jsonl for *.jsonl(.gz)", choices=LM_FORMATS)
    text_field: str = option("text", "the field holding the text in a jsonl file")
    tokenizer: str = option("bytes", "bytes: UTF-8 bytes (MambaByte); chars: the training text's "
                                     "characters; bpe: a byte-level BPE trained on the training text",
                            choices=LM_TOKENIZERS)
    vocab_size: int = option(4096, "vocabulary size of a bpe tokenizer", minimum=258)
    block_size: int = option(256, "tokens of context per training window; evaluation scores the text "
                                  "in windows of this length", minimum=2)
    stride: int = option(1, "training windows start every stride tokens (1: at every position)", minimum=1)
    max_train_tokens: int = option(0, "use only the first N tokens of the training split (0: all)", minimum=0)
    max_valid_tokens: int = option(0, "score only the first N tokens of the validation split (0: all)",
                                   minimum=0)
    eval_batch_size: int = option(32, "windows per evaluation batch", minimum=1)

    def check(self) -> None:
        if not self.valid and self.valid_fraction <= 0:
            raise ValueError("data.valid_fraction must be > 0 when data.valid is empty (no validation text)")


@dataclass
class LMGenerateConfig(Options):
    """How `mambadiff lm generate` samples: the number of tokens and the sampling rule."""

    prefix = ""

    max_new_tokens: int = option(200, "tokens to generate after the prompt", minimum=0)
    temperature: float = option(0.8, "softmax temperature; 0: greedy (the most likely token)", minimum=0.0)
    top_k: int = option(0, "sample among the k most likely tokens (0: all)", minimum=0)
    top_p: float = option(1.0, "sample from the smallest set of tokens whose probability reaches p "
                               "(nucleus; 1: all)", minimum=0.0, maximum=1.0)
    num_samples: int = option(1, "continuations of the prompt", minimum=1)
    seed: int = option(0, "seed of the sampling")
    stop_at_eos: bool = option(True, "end a continuation at the end-of-document token",
                               off_flag="no-stop-at-eos")

    def check(self) -> None:
        if self.top_p <= 0:
            raise ValueError("top_p must be > 0")


def _causal_lm() -> CausalLMConfig:
    return CausalLMConfig(backbone=BackboneConfig(name="mamba2", d_model=128, n_layers=4, bidirectional=False))


@dataclass
class LMConfig:
    run_dir: str = "runs/lm"
    data: LMDataConfig = field(default_factory=LMDataConfig)
    model: CausalLMConfig = field(default_factory=_causal_lm)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """ValueError naming the first bad key; run before anything is read or written."""
        if not self.data.train:
            raise ValueError("data.train is required: a text or jsonl file")
        self.data.check()
        self.train.validate()
        self.model.validate()
        if self.train.batch_size < 1:
            raise ValueError("train.batch_size must be >= 1")
