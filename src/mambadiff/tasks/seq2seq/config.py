"""The configs of a diffusion seq2seq run: data, model, diffusion process, training and sampling.

A run's ``config.json`` is `Seq2SeqConfig` as a dict; `SampleConfig.upgrade_saved` reads the flat
``sample`` section that earlier versions saved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mambadiff.data.seq2seq import LAYOUTS, ON_OVERFLOW, min_seq_len
from mambadiff.data.tokenizer import SPECIAL_TOKENS
from mambadiff.diffusion.masked import WEIGHTINGS
from mambadiff.diffusion.samplers import SAMPLER_CONFIGS, GaussianSamplerConfig, MaskedSamplerConfig
from mambadiff.models.backbones import BACKBONES
from mambadiff.models.denoiser import EMBEDDING_INITS, DenoiserConfig
from mambadiff.options import Options, option
from mambadiff.train import TrainConfig

PROCESSES = tuple(SAMPLER_CONFIGS)  # diffusion.process: gaussian | masked
DISTILL_MODES = ("join", "replace")  # data.distill_mode


@dataclass
class Seq2SeqDataConfig:
    path: str = "builtin"          # a DiffuSeq folder (train/valid/test.jsonl), or "builtin" (generated)
    seq_len: int = 64              # [CLS] src [SEP] [SEP] [CLS] trg [SEP] + padding; see data/seq2seq.py
    layout: str = "diffuseq"       # diffuseq | compact
    tokenizer: str = "bert"        # bert (bert-base-uncased, offline) | trained (WordPiece on train data)
    vocab_size: int = 8000         # for tokenizer: trained
    on_overflow: str = "truncate"  # truncate (DiffuSeq's rule) | error
    max_train: int = 0             # 0: all training pairs
    # train on each pair both ways too (target -> source, after max_train): paraphrase is symmetric, and
    # QQP's duplicates twice over are twice the pairs for a budget that sees the data several times
    both_directions: bool = False
    # sequence-level knowledge distillation (Kim & Rush 2016): a file of a teacher's outputs for the training
    # sources, as `mambadiff generate` / `mambadiff ar generate` write it (source, recover); its pairs join the
    # data's own (distill_mode: join) or replace them (replace). "": none
    distill: str = ""
    distill_mode: str = "join"
    eval_size: int = 256           # validation pairs scored for the eval loss during training
    builtin_train: int = 18000     # built-in corpus sizes (path: builtin; the generator holds ~19k pairs)
    builtin_valid: int = 500
    builtin_test: int = 500
    builtin_seed: int = 0

    def __post_init__(self) -> None:
        def need(key: str, ok: bool, expect: str) -> None:
            if not ok:
                raise ValueError(f"data.{key} must be {expect}, got {getattr(self, key)!r}")

        need("layout", self.layout in LAYOUTS, "|".join(LAYOUTS))
        need("on_overflow", self.on_overflow in ON_OVERFLOW, "|".join(ON_OVERFLOW))
        need("seq_len", self.seq_len >= min_seq_len(self.layout),
             f">= {min_seq_len(self.layout)} for data.layout={self.layout} (the specials and a token per side)")
        need("vocab_size", self.vocab_size > len(SPECIAL_TOKENS), f"> {len(SPECIAL_TOKENS)} (the special tokens)")
        need("builtin_train", self.builtin_train > 0, "> 0")
        need("distill_mode", self.distill_mode in DISTILL_MODES, "|".join(DISTILL_MODES))
        for key in ("max_train", "eval_size", "builtin_valid", "builtin_test"):
            need(key, getattr(self, key) >= 0, ">= 0")


@dataclass
class DiffusionConfig:
    schedule: str = "sqrt"         # sqrt (DiffuSeq) | linear | cosine
    steps: int = 2000              # T
    timestep_sampler: str = "lossaware"  # lossaware (DiffuSeq) | uniform
    # Extra weight on the target-side rounding loss of the PREDICTED x0 (CE of logits(x0_hat), DiffuSeq's
    # logged "nll"). 0 = DiffuSeq's objective (mse + decoder_nll + tT). > 0 adds a direct token-level
    # signal (an "anchor" loss in the spirit of Difformer), which speeds up learning on small budgets.
    nll_weight: float = 0.0
    # gaussian: DiffuSeq's continuous diffusion over embeddings | masked: absorbing-state diffusion over
    # target tokens (MDLM / RDM; diffusion/masked.py), trained with weighted CE on masked positions
    process: str = "gaussian"
    masked_weighting: str = "rdm"  # masked: rdm | elbo | uniform (see diffusion/masked.py)
    # gaussian, in the manner of Difformer (diffusion/embedding_space.py): layer-normalised embedding rows,
    # and a noise-scale factor F (x_t = sqrt(ab) x0 + F sqrt(1 - ab) eps)
    embedding_norm: bool = False
    noise_factor: float = 1.0
    # gaussian: DiffuSeq-v2's soft absorbing state. While training, each target position's x0 is replaced by
    # the (learned) [MASK] embedding with probability soft_absorb * (t + 1) / T before noising: heavily
    # noised inputs carry an explicit "unknown" signal that the sampler's early steps resemble. 0: off
    soft_absorb: float = 0.0
    # masked: each training example's source words are all [MASK] with this probability, which trains the
    # unconditional model that classifier-free guidance (sample.masked.guidance) contrasts with. 0: off
    source_dropout: float = 0.0


@dataclass
class SampleConfig(Options):
    """``sample``: what `mambadiff generate` and `Paraphraser` use when given no option. The keys here
    apply to every process; ``gaussian`` and ``masked`` hold the sampler of each process."""

    prefix = "sample."
    samples: int = option(1, "Samples per example S (different seeds).", minimum=1)
    mbr: bool = option(True, "Pick one of the S samples by MBR (DiffuSeq's rule: summed sentence-BLEU) when S > 1.")
    batch_size: int = option(64, "Examples per batch (with seed, decides the random draws: keep it to reproduce "
                                 "a file).", minimum=1)
    seed: int = option(123, "Seed of the draws (see the randomness rule of `mambadiff.tasks.paraphrase`).",
                       minimum=0)
    limit: int = option(0, "Only the first N examples (0: all).", minimum=0)
    gaussian: GaussianSamplerConfig = field(default_factory=GaussianSamplerConfig)
    masked: MaskedSamplerConfig = field(default_factory=MaskedSamplerConfig)

    # the flat section of earlier versions: key -> the process sections that hold it now
    _MOVED = {"steps": PROCESSES, "eta": ("gaussian",), "clamp": ("gaussian",), "solver": ("gaussian",),
              **{k: ("masked",) for k in ("temperature", "top_k", "remask", "forbid_adjacent_repeat",
                                          "forbid_repeat_bigram", "end_bias", "end_defer", "predict_length",
                                          "length_beam", "beam_avoid_copy")}}

    @classmethod
    def upgrade_saved(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A saved flat ``sample`` section in the current layout (masked ``steps`` 0 meant 20)."""
        for key, sections in cls._MOVED.items():
            if key not in data:
                continue
            value = data.pop(key)
            for section in sections:
                moved = 20 if (section, key, value) == ("masked", "steps", 0) else value
                data.setdefault(section, {}).setdefault(key, moved)
        return data

    def for_process(self, process: str) -> GaussianSamplerConfig | MaskedSamplerConfig:
        """The sampler section of ``process``."""
        return getattr(self, process)


@dataclass
class Seq2SeqConfig:
    run_dir: str = "runs/seq2seq"
    data: Seq2SeqDataConfig = field(default_factory=Seq2SeqDataConfig)
    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self) -> None:
        self.train.validate()
        if self.model.backbone.name not in BACKBONES:
            raise ValueError(f"model.backbone.name: unknown backbone {self.model.backbone.name!r}; "
                             f"one of {sorted(BACKBONES)}")
        if self.data.tokenizer not in ("bert", "trained"):
            raise ValueError(f"data.tokenizer must be bert|trained, got {self.data.tokenizer!r}")
        d = self.diffusion
        if d.process not in PROCESSES:
            raise ValueError(f"diffusion.process must be one of {PROCESSES}, got {d.process!r}")
        if d.masked_weighting not in WEIGHTINGS:
            raise ValueError(f"diffusion.masked_weighting must be one of {WEIGHTINGS}, got {d.masked_weighting!r}")
        if not 0.0 <= d.soft_absorb <= 1.0:
            raise ValueError(f"diffusion.soft_absorb must be in [0, 1], got {d.soft_absorb}")
        if not 0.0 <= d.source_dropout < 1.0:
            raise ValueError(f"diffusion.source_dropout must be in [0, 1), got {d.source_dropout}")
        if d.source_dropout and d.process != "masked":
            raise ValueError("diffusion.source_dropout needs diffusion.process: masked (guidance is the masked "
                             f"sampler's), got {d.process!r}")
        if not d.noise_factor > 0:
            raise ValueError(f"diffusion.noise_factor must be > 0, got {d.noise_factor}")
        if self.model.embedding_init not in EMBEDDING_INITS:
            raise ValueError(f"model.embedding_init must be one of {EMBEDDING_INITS}, got {self.model.embedding_init!r}")
