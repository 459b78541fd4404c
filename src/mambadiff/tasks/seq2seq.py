"""Diffusion seq2seq (MambaDiff / DiffuSeq) as a task of the shared training loop (generation: tasks/paraphrase.py).

Glossary: b batch, l length, e embedding width, v vocab, t diffusion step, s samples per example.

A run folder holds ``config.json`` (the full ``Seq2SeqConfig``), ``tokenizer/``, ``metrics.jsonl`` and
``checkpoints/step_*/`` (each loadable alone: weights + config + tokenizer).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mambadiff.config import from_dict, to_dict
from mambadiff.data.seq2seq import (LAYOUTS, ON_OVERFLOW, Seq2SeqDataset, load_seq2seq_split, read_seq2seq_jsonl,
                                    resolve_split_path)
from mambadiff.data.tokenizer import SPECIAL_TOKENS, TextTokenizer, build_tokenizer, load_tokenizer
from mambadiff.diffusion import (SOLVERS, GaussianDiffusion, create_timestep_sampler, sample_ancestral,
                                 sample_dpm_solver, sample_respaced)
from mambadiff.diffusion.embedding_space import embedding_space
from mambadiff.diffusion.masked import WEIGHTINGS, MaskedDiffusion, sample_length_beam, sample_masked
from mambadiff.models.backbones import BACKBONES
from mambadiff.models.denoiser import EMBEDDING_INITS, Denoiser, DenoiserConfig
from mambadiff.train import StepContext, TrainConfig
from mambadiff.train.checkpoint import load_state, read_json, resolve_checkpoint, run_config

from .paraphrase import GenerationSettings, generate  # noqa: F401  (generation lives in tasks/paraphrase.py)

log = logging.getLogger(__name__)


@dataclass
class Seq2SeqDataConfig:
    path: str = "builtin"          # a DiffuSeq folder (train/valid/test.jsonl), or "builtin" (generated)
    seq_len: int = 64              # [CLS] src [SEP] [SEP] [CLS] trg [SEP] + padding; see data/seq2seq.py
    layout: str = "diffuseq"       # diffuseq | compact
    tokenizer: str = "bert"        # bert (bert-base-uncased, offline) | trained (WordPiece on train data)
    vocab_size: int = 8000         # for tokenizer: trained
    on_overflow: str = "truncate"  # truncate (DiffuSeq's rule) | error
    max_train: int = 0             # 0: all training pairs
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
        need("seq_len", self.seq_len > 0, "> 0")
        need("vocab_size", self.vocab_size > len(SPECIAL_TOKENS), f"> {len(SPECIAL_TOKENS)} (the special tokens)")
        need("builtin_train", self.builtin_train > 0, "> 0")
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


@dataclass
class SampleConfig:
    steps: int = 20                # K respaced steps; 0 = all T steps with the ancestral sampler
    eta: float = 1.0               # respaced sampler: 1 ancestral on the respaced chain (measured within 0.2% of
                                   # all-T BLEU at 20 steps), 0 deterministic DDIM (7.7% lower there)
    samples: int = 1               # S samples per example (different seeds)
    mbr: bool = True               # pick one of the S samples by MBR (DiffuSeq's rule) when S > 1
    clamp: str = "round"           # each step: round x0 to the nearest embedding (DiffuSeq) | logits (embedding
                                   # of the tied head's argmax token) | none
    solver: str = "respaced"       # gaussian, K < T steps: respaced (ancestral / DDIM by eta) | dpm-solver++
                                   # (DiffuSeq-v2's second-order multistep solver; eta unused)
    batch_size: int = 64
    # process masked: K confidence-ordered unmasking steps (steps 0 = 20); token draw temperature (0 argmax);
    # remask: committed tokens compete again with new proposals (RDM); forbid_adjacent_repeat: a position
    # never proposes a (non-special) token its committed neighbour holds. At temperature 0 the masked sampler is
    # deterministic, so samples > 1 (MBR) needs temperature > 0
    temperature: float = 0.0
    top_k: int = 0                 # draws at temperature > 0 from the k most likely tokens (0: all)
    remask: bool = False
    forbid_adjacent_repeat: bool = False
    forbid_repeat_bigram: bool = False  # no (non-special) word pair twice in an output ("origin of origin of")
    # end tokens ([SEP], [PAD]) decide the output length: end_bias is added to their logits (negative:
    # longer outputs); end_defer lowers the commit confidence of an end proposal, so that words are placed
    # before the end is (confidence ordering otherwise commits the easy [PAD]s first, and outputs come short)
    end_bias: float = 0.0
    end_defer: float = 0.0
    predict_length: bool = False   # the first step fixes each output's length (then no [PAD] among the words)
    length_beam: int = 1           # with predict_length: decode lengths n, n-1, n+1, ... (this many) and keep the
                                   # one whose words have the highest mean log-probability (Mask-Predict)
    beam_avoid_copy: bool = False  # the length beam never moves to a verbatim copy of the source (it keeps one only
                                   # where the predicted length gave it)
    limit: int = 0                 # examples to sample; 0: all
    seed: int = 123


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
        if self.sample.samples < 1:
            raise ValueError("sample.samples must be >= 1")
        validate_process(self)


# ---- data ------------------------------------------------------------------------------------------
def prepare_data_folder(cfg: Seq2SeqConfig) -> Path:
    """The data folder of a run: ``data.path``, or the built-in corpus written into ``run_dir/data``."""
    if cfg.data.path != "builtin":
        return Path(cfg.data.path)
    from mambadiff.data.builtin_corpus import write_builtin_corpus
    folder = Path(cfg.run_dir) / "data"
    if not (folder / "train.jsonl").exists():
        write_builtin_corpus(folder, n_train=cfg.data.builtin_train, n_valid=cfg.data.builtin_valid,
                             n_test=cfg.data.builtin_test, seed=cfg.data.builtin_seed)
    return folder


def prepare_tokenizer(cfg: Seq2SeqConfig, data_folder: Path) -> TextTokenizer:
    """bert: the shipped vocab. trained: WordPiece trained on train.jsonl (saved in run_dir/tokenizer).

    A leftover run_dir/tokenizer is reused only when it was built as ``cfg.data`` asks; otherwise a
    fresh run rebuilds it and a run with checkpoints is an error (``mambadiff.train.run_tokenizer``)."""
    from mambadiff.train.run_tokenizer import prepare_run_tokenizer

    train_file = resolve_split_path(data_folder, "train") if cfg.data.tokenizer == "trained" else None

    def build() -> TextTokenizer:
        texts = None
        if train_file is not None:
            texts = [s for pair in read_seq2seq_jsonl(train_file) for s in pair]
        return build_tokenizer(cfg.data.tokenizer, texts, cfg.data.vocab_size)

    return prepare_run_tokenizer(cfg.run_dir, cfg.data.tokenizer, cfg.data.vocab_size, train_file, build)


def build_denoiser(cfg: Seq2SeqConfig, vocab_size: int, tokenizer: TextTokenizer | None = None) -> Denoiser:
    """The denoiser of ``cfg``; with ``model.embedding_init: minilm`` and a ``tokenizer``, its word
    embedding starts from all-MiniLM-L6-v2's vectors for that vocab."""
    model_cfg = dataclasses.replace(cfg.model, vocab_size=vocab_size, diffusion_steps=cfg.diffusion.steps)
    if model_cfg.backbone.name == "transformer" and model_cfg.backbone.max_len < cfg.data.seq_len:
        model_cfg.backbone = dataclasses.replace(model_cfg.backbone, max_len=cfg.data.seq_len)
    cfg.model = model_cfg
    model = Denoiser(model_cfg)
    if model_cfg.embedding_init == "minilm" and tokenizer is not None:
        from mambadiff.models.pretrained_embedding import minilm_embedding
        model.set_word_embedding(minilm_embedding(tokenizer, model_cfg.emb_dim))
    return model


class _DDPDenoiser:
    """What the diffusion losses call: forward through the (possibly DDP-wrapped) module so gradients
    are synchronised, embed/logits on the underlying denoiser (as DiffuSeq does under DDP)."""

    def __init__(self, wrapped: nn.Module):
        self.wrapped = wrapped
        self.inner = wrapped.module if hasattr(wrapped, "module") else wrapped
        self.emb_dim = self.inner.emb_dim

    def __call__(self, *a, **kw):
        return self.wrapped(*a, **kw)

    def embed(self, ids):
        return self.inner.embed(ids)

    def logits(self, h):
        return self.inner.logits(h)

    def token_cross_entropy(self, h, ids):
        return self.inner.token_cross_entropy(h, ids)

    @property
    def word_embedding(self):
        return self.inner.word_embedding


def fixed_eval_losses(eval_tensors: dict[str, torch.Tensor] | None, diffusion_steps: int, model,
                      batch_losses, batch_size: int = 64) -> dict[str, float]:
    """Mean eval losses over ``eval_tensors`` at timesteps (and noise) drawn from one fixed seed, so
    evaluations are comparable across training steps. ``batch_losses(batch, t (b,), generator)``
    returns per-example losses ``{name: (b,)}``; the generator supplies any further draws."""
    if eval_tensors is None:
        return {}
    n = eval_tensors["input_ids"].shape[0]
    g = torch.Generator().manual_seed(1234)
    t_all = torch.randint(0, diffusion_steps, (n,), generator=g)  # (n,)
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    for i in range(0, n, batch_size):
        batch = {k: v[i:i + batch_size].to(device) for k, v in eval_tensors.items() if k != "index"}
        out = batch_losses(batch, t_all[i:i + batch_size].to(device), g)
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
    return {k: v / n for k, v in sums.items()}


class DiffusionSeq2SeqTask:
    def __init__(self, cfg: Seq2SeqConfig, train_set: Seq2SeqDataset, eval_set: Seq2SeqDataset | None,
                 mask_id: int | None = None):
        if cfg.diffusion.soft_absorb and mask_id is None:
            raise ValueError("diffusion.soft_absorb needs the tokenizer's [MASK] id")
        self.cfg = cfg
        self.mask_id = mask_id
        self.diffusion = GaussianDiffusion.from_name(cfg.diffusion.schedule, cfg.diffusion.steps)
        self.t_sampler = create_timestep_sampler(cfg.diffusion.timestep_sampler, cfg.diffusion.steps)
        self.train = train_set.tensors()  # (N, l) each
        self.eval = eval_set.tensors() if eval_set is not None else None

    def num_train_examples(self) -> int:
        return self.train["input_ids"].shape[0]

    def get_batch(self, indices, device) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: v[idx].to(device) for k, v in self.train.items() if k != "index"}

    def count_tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())

    def _losses(self, model, batch, t, noise, x_start_noise, with_nll: bool = True,
                self_condition: bool = False, absorb: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        # no padding mask, as DiffuSeq: target-side [PAD]s are generated like any token (the model
        # decides where the output ends), so the denoiser must see them at training and sampling alike
        d = self.cfg.diffusion
        return self.diffusion.training_losses(
            embedding_space(_DDPDenoiser(model), d.embedding_norm, d.noise_factor), batch["input_ids"], batch["input_mask"], t,
            attention_mask=None, noise=noise, x_start_noise=x_start_noise,
            nll_grad=bool(self.cfg.diffusion.nll_weight),  # nll only logged: no graph for it
            with_nll=with_nll, self_condition=self_condition, absorb=absorb,
            mask_id=self.mask_id if absorb is not None else None)

    def loss(self, model, batch, ctx: StepContext):
        g = ctx.generator()
        b, l = batch["input_ids"].shape
        e = self.cfg.model.emb_dim
        # draw for the global micro-batch and keep this rank's rows: identical on 1 or N processes
        t, w = self.t_sampler.sample(ctx.global_batch, generator=g)  # (B,), (B,)
        noise = torch.randn(ctx.global_batch, l, e, generator=g)  # (B, l, e)
        x0_noise = torch.randn(ctx.global_batch, l, e, generator=g)  # (B, l, e)
        absorb = None
        if self.cfg.diffusion.soft_absorb:  # (B, l) drawn only when on: runs without it keep their draws
            rate = self.cfg.diffusion.soft_absorb * (t.double() + 1) / self.cfg.diffusion.steps  # (B,)
            absorb = torch.rand(ctx.global_batch, l, generator=g, dtype=torch.float64) < rate[:, None]  # (B, l)
            absorb = ctx.slice(absorb).to(ctx.device) & batch["input_mask"].bool()  # (b, l) target positions
        t, w = ctx.slice(t).to(ctx.device), ctx.slice(w).to(ctx.device)
        # the logged-only nll costs a v-wide head pass: computed on the steps whose metrics are logged
        losses = self._losses(model, batch, t, ctx.slice(noise).to(ctx.device), ctx.slice(x0_noise).to(ctx.device),
                              with_nll=ctx.log_metrics, self_condition=self_condition_step(self.cfg, g),
                              absorb=absorb)
        objective = losses["loss"]  # (b,) DiffuSeq: mse + decoder_nll + tT
        if self.cfg.diffusion.nll_weight:
            objective = objective + self.cfg.diffusion.nll_weight * losses["nll"]  # (b,)
        self.t_sampler.update(t, objective.detach())
        loss = (objective * w).mean()
        metrics = {k: float(v.detach().float().mean()) for k, v in losses.items()}
        return loss, metrics

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Eval losses on a fixed validation subset at fixed timesteps (comparable across steps)."""
        emb_dim = self.cfg.model.emb_dim

        def batch_losses(batch, t, g):
            b, l = batch["input_ids"].shape
            noise = torch.randn(b, l, emb_dim, generator=g).to(t.device)  # (b, l, e)
            x0n = torch.randn(b, l, emb_dim, generator=g).to(t.device)  # (b, l, e)
            return self._losses(model, batch, t, noise, x0n)
        return fixed_eval_losses(self.eval, self.cfg.diffusion.steps, model, batch_losses)

    def state_dict(self) -> dict:
        return {"t_sampler": _jsonable(self.t_sampler.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        self.t_sampler.load_state_dict(_from_jsonable(state["t_sampler"]))


# ---- masked (absorbing-state) process ------------------------------------------------------------
def validate_process(cfg: Seq2SeqConfig) -> None:
    if cfg.diffusion.process not in PROCESSES:
        raise ValueError(f"diffusion.process must be one of {PROCESSES}, got {cfg.diffusion.process!r}")
    if cfg.diffusion.masked_weighting not in WEIGHTINGS:
        raise ValueError(f"diffusion.masked_weighting must be one of {WEIGHTINGS}, got {cfg.diffusion.masked_weighting!r}")
    if cfg.sample.temperature < 0:
        raise ValueError(f"sample.temperature must be >= 0, got {cfg.sample.temperature}")
    if cfg.sample.top_k != 0 and cfg.sample.top_k < 3:
        raise ValueError(f"sample.top_k must be 0 (all tokens) or >= 3, got {cfg.sample.top_k}")
    if cfg.sample.end_defer < 0:
        raise ValueError(f"sample.end_defer must be >= 0, got {cfg.sample.end_defer}")
    if cfg.sample.length_beam < 1:
        raise ValueError(f"sample.length_beam must be >= 1, got {cfg.sample.length_beam}")
    if cfg.sample.length_beam > 1 and not cfg.sample.predict_length:
        raise ValueError("sample.length_beam > 1 needs sample.predict_length: true")
    if cfg.sample.solver not in SOLVERS:
        raise ValueError(f"sample.solver must be one of {', '.join(SOLVERS)}, got {cfg.sample.solver!r}")
    if not 0.0 <= cfg.diffusion.soft_absorb <= 1.0:
        raise ValueError(f"diffusion.soft_absorb must be in [0, 1], got {cfg.diffusion.soft_absorb}")
    if not cfg.diffusion.noise_factor > 0:
        raise ValueError(f"diffusion.noise_factor must be > 0, got {cfg.diffusion.noise_factor}")
    if cfg.model.embedding_init not in EMBEDDING_INITS:
        raise ValueError(f"model.embedding_init must be one of {EMBEDDING_INITS}, got {cfg.model.embedding_init!r}")


PROCESSES = ("gaussian", "masked")


def self_condition_step(cfg: Seq2SeqConfig, g: torch.Generator) -> bool:
    """Whether this training step conditions on a no-grad first estimate (half the steps, drawn from the
    step's generator after its other draws); always False without ``model.self_condition``."""
    return bool(cfg.model.self_condition) and bool(torch.rand((), generator=g) < 0.5)


def build_masked_diffusion(cfg: Seq2SeqConfig, tok: TextTokenizer) -> MaskedDiffusion:
    return MaskedDiffusion(cfg.diffusion.steps, tok.mask_id, cfg.diffusion.masked_weighting)


class MaskedSeq2SeqTask:
    """Training task of ``diffusion.process: masked``: weighted CE on masked target positions."""

    def __init__(self, cfg: Seq2SeqConfig, train_set: Seq2SeqDataset, eval_set: Seq2SeqDataset | None,
                 tok: TextTokenizer):
        self.cfg = cfg
        self.diffusion = build_masked_diffusion(cfg, tok)
        self.train = train_set.tensors()  # (N, l) each
        self.eval = eval_set.tensors() if eval_set is not None else None

    num_train_examples = DiffusionSeq2SeqTask.num_train_examples
    get_batch = DiffusionSeq2SeqTask.get_batch
    count_tokens = DiffusionSeq2SeqTask.count_tokens

    def _losses(self, model, batch, t, g, self_condition=False):
        return self.diffusion.training_losses(_DDPDenoiser(model), batch["input_ids"], batch["input_mask"], t,
                                              generator=g, self_condition=self_condition)

    def loss(self, model, batch, ctx: StepContext):
        g = ctx.generator()
        t = torch.randint(0, self.cfg.diffusion.steps, (ctx.global_batch,), generator=g)  # (B,)
        masking = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), generator=g)))
        sc = self_condition_step(self.cfg, g)
        if ctx.offset:  # this rank's rows of the global draw: skip the uniforms of the rows before it
            torch.rand((ctx.offset, batch["input_ids"].shape[1]), generator=masking, dtype=torch.float64)
        losses = self._losses(model, batch, ctx.slice(t).to(ctx.device), masking, sc)
        metrics = {k: float(v.detach().float().mean()) for k, v in losses.items()}
        return losses["loss"].mean(), metrics

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Eval losses on a fixed validation subset at fixed timesteps and masks (comparable across steps)."""
        return fixed_eval_losses(self.eval, self.cfg.diffusion.steps, model,
                                 lambda batch, t, g: self._losses(model, batch, t, g))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def make_seq2seq_task(cfg: Seq2SeqConfig, train_set, eval_set, tok: TextTokenizer):
    """The training task of ``diffusion.process``."""
    if cfg.diffusion.process == "masked":
        return MaskedSeq2SeqTask(cfg, train_set, eval_set, tok)
    return DiffusionSeq2SeqTask(cfg, train_set, eval_set, mask_id=tok.mask_id)


def sample_token_ids(model, cfg: Seq2SeqConfig, tok: TextTokenizer, ids: torch.Tensor, imask: torch.Tensor,
                     settings: GenerationSettings, g: torch.Generator) -> torch.Tensor:
    """Generated ids ``(b, l)`` of one batch with the sampler of ``diffusion.process``."""
    steps, eta, clamp = settings.steps, settings.eta, settings.clamp
    self_condition = bool(cfg.model.self_condition)
    if cfg.diffusion.process == "masked":
        sampler = dict(steps=steps or 20, temperature=settings.temperature, top_k=settings.top_k,
                       remask=cfg.sample.remask, forbid_adjacent_repeat=settings.forbid_adjacent_repeat,
                       forbid_repeat_bigram=settings.forbid_repeat_bigram, forbidden_ids=(tok.unk_id,),
                       special_ids=(tok.pad_id, tok.sep_id, tok.cls_id), end_ids=(tok.sep_id, tok.pad_id),
                       end_bias=settings.end_bias, end_defer=settings.end_defer,
                       self_condition=self_condition, generator=g)
        masked = build_masked_diffusion(cfg, tok)
        if settings.length_beam > 1:  # predict_length is checked with the settings
            return sample_length_beam(masked, model, ids, imask, length_beam=settings.length_beam,
                                      avoid_copy=settings.beam_avoid_copy, **sampler).token_ids
        return sample_masked(masked, model, ids, imask, predict_length=settings.predict_length, **sampler).token_ids
    diffusion = GaussianDiffusion.from_name(cfg.diffusion.schedule, cfg.diffusion.steps)
    model = embedding_space(model, cfg.diffusion.embedding_norm, cfg.diffusion.noise_factor)
    clamp = None if clamp == "none" else clamp
    # DiffuSeq gives the denoiser no padding mask while sampling: the target length is unknown
    if steps and steps < cfg.diffusion.steps and settings.solver == "dpm-solver++":
        out = sample_dpm_solver(diffusion, model, ids, imask, None, steps=steps, clamp=clamp, generator=g,
                                self_condition=self_condition)
    elif steps and steps < cfg.diffusion.steps:
        out = sample_respaced(diffusion, model, ids, imask, None, steps=steps, eta=eta, clamp=clamp, generator=g,
                              self_condition=self_condition)
    else:
        out = sample_ancestral(diffusion, model, ids, imask, None, clamp=clamp, generator=g,
                               self_condition=self_condition)
    return out.token_ids


def _jsonable(obj):
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": obj.tolist(), "dtype": str(obj.dtype).replace("torch.", "")}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _from_jsonable(obj):
    if isinstance(obj, dict) and "__tensor__" in obj:
        return torch.tensor(obj["__tensor__"], dtype=getattr(torch, obj["dtype"]))
    if isinstance(obj, dict):
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


# ---- loading a trained model --------------------------------------------------------------------
def load_seq2seq_model(path: str | Path, ema: bool = True, device: str = "cpu"):
    """(model, tokenizer, config) from a run folder (latest checkpoint) or a checkpoint folder."""
    folder = resolve_checkpoint(path)
    cfg = from_dict(Seq2SeqConfig, read_json(folder / "config.json"))
    tok = load_tokenizer(folder / "tokenizer")
    model = Denoiser(cfg.model)
    model.load_state_dict(read_weights(folder, ema=ema, model=model))
    return model.to(device).eval(), tok, cfg


def read_weights(folder: Path, ema: bool, model: nn.Module) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, checked against ``model``: a truncated or foreign weights file is a
    ValueError naming the file, not a deep safetensors / load_state_dict trace."""
    path = folder / ("ema.safetensors" if ema and (folder / "ema.safetensors").exists() else "model.safetensors")
    try:
        state = load_state(folder, ema=ema)
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors raises its own SafetensorError (not an OSError) on a damaged file
        raise ValueError(f"{path}: cannot read the weights ({' '.join(str(e).split())}); the file is truncated "
                         "or not a safetensors file") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        what = (f"missing {', '.join(missing[:3])}" if missing else
                f"unexpected {', '.join(unexpected[:3])}" if unexpected else
                f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the config needs {tuple(expected[wrong[0]].shape)}")
        raise ValueError(f"{path}: the weights do not fit the checkpoint's config.json ({what})")
    return state


# ---- diagnostics ---------------------------------------------------------------------------------
@torch.no_grad()
def x0_token_accuracy(model: Denoiser, dataset: Seq2SeqDataset, diffusion: GaussianDiffusion, t_values,
                      pad_id: int, batch_size: int = 128, seed: int = 0) -> dict[int, dict[str, float]]:
    """How well the denoiser recovers target words from x_t at fixed noise levels, split by kind.

    For each t in ``t_values``: noise the targets to x_t (the source stays clean), predict x0, take
    the head's argmax, and compare with the true token at every target position that is not
    ``pad_id``. Positions whose word also occurs in the source are "copy", the others "novel".
    A backbone that is good at copying from the source scores high on "copy"; paraphrase metrics
    such as ROUGE-L and BERTScore reward exactly that. Returns
    ``{t: {"copy": acc, "novel": acc, "n_copy": count, "n_novel": count}}`` (acc NaN for no positions).
    """
    data = dataset.tensors()
    ids_all, mask_all = data["input_ids"], data["input_mask"]  # (N, l) each
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    model.eval()
    result: dict[int, dict[str, float]] = {}
    for t_val in t_values:
        hits = {"copy": 0, "novel": 0}
        counts = {"copy": 0, "novel": 0}
        for i in range(0, ids_all.shape[0], batch_size):
            ids = ids_all[i:i + batch_size].to(device)  # (b, l)
            target = mask_all[i:i + batch_size].to(device).bool()  # (b, l) True at target positions
            x0 = model.embed(ids)  # (b, l, e)
            t = torch.full((ids.shape[0],), int(t_val), device=device, dtype=torch.long)  # (b,)
            noise = torch.randn(x0.shape, generator=g).to(device=device, dtype=x0.dtype)  # (b, l, e)
            x_t = diffusion.q_sample(x0, t, noise=noise, input_mask=target.long())  # (b, l, e)
            guess = model.logits(model(x_t, diffusion.model_timesteps(t))).argmax(-1)  # (b, l)
            same_word = ids[:, :, None] == ids[:, None, :]  # (b, l, l) [i, j]: word i == word j
            in_source = (same_word & ~target[:, None, :]).any(-1)  # (b, l)
            scored = target & (ids != pad_id)  # (b, l)
            right = guess == ids  # (b, l)
            for kind, where in (("copy", scored & in_source), ("novel", scored & ~in_source)):
                hits[kind] += int((right & where).sum())
                counts[kind] += int(where.sum())
        result[int(t_val)] = {
            "copy": hits["copy"] / counts["copy"] if counts["copy"] else math.nan,
            "novel": hits["novel"] / counts["novel"] if counts["novel"] else math.nan,
            "n_copy": counts["copy"], "n_novel": counts["novel"],
        }
    return result


# ---- training entry point ------------------------------------------------------------------------
def build_seq2seq_trainer(cfg: Seq2SeqConfig, dist_info=None):
    """Data, tokenizer, denoiser, task and ``Trainer`` for ``cfg``, as ``mambadiff train`` builds them
    (no run-folder or checkpoint handling): returns (trainer, tokenizer). ``trainer.train_step()`` is
    one training step; ``mambadiff bench denoiser`` times exactly that."""
    from mambadiff.train import Trainer
    from mambadiff.train.distributed import DistInfo, barrier

    dist_info = dist_info or DistInfo()
    if dist_info.is_main:  # the main process prepares the data folder and tokenizer first
        data_folder = prepare_data_folder(cfg)
        tok = prepare_tokenizer(cfg, data_folder)
    barrier()
    if not dist_info.is_main:
        data_folder = prepare_data_folder(cfg)
        tok = prepare_tokenizer(cfg, data_folder)
    d = cfg.data
    train_set = load_seq2seq_split(data_folder, "train", tok, d.seq_len, layout=d.layout,
                                   on_overflow=d.on_overflow, limit=d.max_train or None)
    eval_set = None
    if d.eval_size > 0 and (data_folder / "valid.jsonl").exists():
        eval_set = load_seq2seq_split(data_folder, "valid", tok, d.seq_len, layout=d.layout,
                                      on_overflow=d.on_overflow, limit=d.eval_size)
    torch.manual_seed(cfg.train.seed)
    model = build_denoiser(cfg, tok.vocab_size, tok)
    if dist_info.is_main:
        report = model.parameter_report()
        print(f"model: {cfg.model.backbone.name} backbone, parameters " +
              ", ".join(f"{k} {v:,}" for k, v in report.items()) + f"; {len(train_set):,} training pairs")
    task = make_seq2seq_task(cfg, train_set, eval_set, tok)
    trainer = Trainer(model, task, cfg.train, cfg.run_dir, to_dict(cfg), dist_info=dist_info,
                      write_extra=lambda folder: tok.save(folder / "tokenizer"))
    return trainer, tok


def train_seq2seq(cfg: Seq2SeqConfig, resume: bool = False, progress: bool = True):
    """Train a diffusion seq2seq model as ``cfg`` says; returns (TrainResult, model, tokenizer).

    Works single-process or under torchrun (DDP). ``resume`` continues from the run folder's latest
    checkpoint bit-for-bit; without it, a run folder that already has checkpoints is refused.
    """
    from mambadiff.train import seed_everything
    from mambadiff.train.checkpoint import atomic_write_json, ensure_writable
    from mambadiff.train.distributed import setup_distributed
    from mambadiff.train.interrupt import deferred_interrupt

    cfg.validate()
    run_dir = Path(cfg.run_dir)
    with deferred_interrupt():  # a Ctrl-C during start-up still ends in a checkpoint (train.interrupt)
        dist_info = setup_distributed(cfg.train.device)
        cfg = run_config(cfg, resume)
        if dist_info.is_main:
            ensure_writable(run_dir)
        seed_everything(cfg.train.seed)
        trainer, tok = build_seq2seq_trainer(cfg, dist_info)
        if dist_info.is_main:
            atomic_write_json(run_dir / "config.json", trainer.full_config)
        if resume and trainer.resume():
            print(f"resumed from step {trainer.step}")
        trainer.cfg.progress = progress and trainer.cfg.progress
        result = trainer.fit()
    return result, trainer.eval_model(), tok


def config_parameter_report(cfg: Seq2SeqConfig) -> dict[str, int]:
    """Parameter counts of the denoiser a config builds (vocab: bert's 30,522, or the trained vocab_size
    as an upper bound), without touching data."""
    vocab = 30522 if cfg.data.tokenizer == "bert" else cfg.data.vocab_size
    with torch.device("meta"):
        model = build_denoiser(dataclasses.replace(cfg), vocab)
    return model.parameter_report()
