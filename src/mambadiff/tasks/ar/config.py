"""The configs of an autoregressive paraphraser: the data section of the diffusion runs (same files,
tokenizer and truncation), a causal language model, training, and ``ARDecodeConfig`` (greedy or beam).
A run's ``config.json`` is ``ARConfig`` as a dict."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.lm import CausalLMConfig
from mambadiff.options import Options, option
from mambadiff.tasks.seq2seq.config import Seq2SeqDataConfig
from mambadiff.train import TrainConfig

__all__ = ["ARConfig", "ARDecodeConfig", "EMBEDDING_INITS", "is_ar_config"]

EMBEDDING_INITS = ("random", "minilm")


@dataclass
class ARDecodeConfig(Options):
    """``decode``: how `mambadiff ar generate` writes a target after ``[CLS] source [SEP]``."""

    prefix = "decode."

    beam: int = option(4, "beam width; 1: greedy", minimum=1)
    length_penalty: float = option(1.0, "a hypothesis scores its summed log-probability over length ** this "
                                        "(0: none; 1: the mean)", minimum=0.0)
    no_repeat_ngram: int = option(0, "no word-piece n-gram of this size twice in a target (0: off); the source's "
                                     "phrases may still repeat", minimum=0)
    max_new_tokens: int = option(0, "longest target in tokens, [SEP] included (0: data.seq_len)", minimum=0)
    batch_size: int = option(64, "sources decoded at once", minimum=1)
    limit: int = option(0, "only the first N pairs (0: all)", minimum=0)


def _causal_lm() -> CausalLMConfig:
    return CausalLMConfig(backbone=BackboneConfig(name="mamba2", d_model=128, n_layers=4, bidirectional=False))


@dataclass
class ARConfig:
    run_dir: str = "runs/ar"
    data: Seq2SeqDataConfig = field(default_factory=lambda: Seq2SeqDataConfig(layout="compact"))
    model: CausalLMConfig = field(default_factory=_causal_lm)
    embedding_init: str = "random"  # random | minilm (all-MiniLM-L6-v2's rows, as the diffusion recipes)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: ARDecodeConfig = field(default_factory=ARDecodeConfig)

    def validate(self) -> None:
        """ValueError naming the first bad key; run before anything is read or written."""
        self.train.validate()
        self.model.validate()
        if self.data.layout != "compact":
            raise ValueError(f"data.layout must be compact for an autoregressive model ([CLS] source [SEP] "
                             f"target [SEP]), got {self.data.layout!r}")
        if self.data.tokenizer not in ("bert", "trained"):
            raise ValueError(f"data.tokenizer must be bert|trained, got {self.data.tokenizer!r}")
        if self.embedding_init not in EMBEDDING_INITS:
            raise ValueError(f"embedding_init must be one of {'|'.join(EMBEDDING_INITS)}, got {self.embedding_init!r}")


def is_ar_config(name_or_path: str | Path) -> bool:
    """Whether a config (a shipped name or a YAML file) is an autoregressive paraphraser's: it has a
    ``decode`` section. False for a file that cannot be read (its own loader reports the problem)."""
    import yaml

    from mambadiff.config import resolve_config_path
    try:
        data = yaml.safe_load(resolve_config_path(name_or_path).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "decode" in data
