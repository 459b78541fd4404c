"""Training a diffusion seq2seq model: the data folder and tokenizer of a run, the denoiser, the
training task of each process on a shared base, and `train_seq2seq` (single process or torchrun / DDP).

Glossary: b batch, l length, e embedding width, t diffusion step.

A run folder holds ``config.json`` (the full ``Seq2SeqConfig``), ``tokenizer/``, ``metrics.jsonl`` and
``checkpoints/step_*/`` (each loadable alone: weights + config + tokenizer).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from mambadiff.config import to_dict
from mambadiff.data.errors import DataError
from mambadiff.data.seq2seq import (MAX_CHARS_PER_TOKEN, Seq2SeqDataset, is_stream, load_seq2seq_split,
                                    read_seq2seq_jsonl, resolve_split_path)
from mambadiff.data.tokenizer import TextTokenizer, build_tokenizer
from mambadiff.diffusion import GaussianDiffusion, create_timestep_sampler
from mambadiff.diffusion.embedding_space import embedding_space
from mambadiff.diffusion.masked import without_source
from mambadiff.models.denoiser import Denoiser
from mambadiff.models.meta_check import check_model_config
from mambadiff.train import StepContext

from .config import Seq2SeqConfig
from .sampling import build_masked_diffusion
from .training_data import training_split


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
            # only a text's first seq_len tokens reach the model: its vocabulary is learnt from as much
            # (a multi-megabyte line would otherwise cost seconds and gigabytes)
            limit = cfg.data.seq_len * MAX_CHARS_PER_TOKEN
            texts = [s[:limit] for pair in read_seq2seq_jsonl(train_file) for s in pair]
        return build_tokenizer(cfg.data.tokenizer, texts, cfg.data.vocab_size)

    return prepare_run_tokenizer(cfg.run_dir, cfg.data.tokenizer, cfg.data.vocab_size, train_file, build)


def build_denoiser(cfg: Seq2SeqConfig, vocab_size: int, tokenizer: TextTokenizer | None = None) -> Denoiser:
    """The denoiser of ``cfg``; with ``model.embedding_init: minilm`` and a ``tokenizer``, its word
    embedding starts from all-MiniLM-L6-v2's vectors for that vocab."""
    model_cfg = dataclasses.replace(cfg.model, vocab_size=vocab_size, diffusion_steps=cfg.diffusion.steps)
    # learned positions and S4's kernel cover the longest sequence
    model_cfg.backbone = model_cfg.backbone.cover_length(cfg.data.seq_len)
    cfg.model = model_cfg
    model = Denoiser(model_cfg)
    if model_cfg.embedding_init == "minilm" and tokenizer is not None:
        from mambadiff.models.pretrained_embedding import minilm_embedding
        model.set_word_embedding(minilm_embedding(tokenizer, model_cfg.emb_dim))
    return model


class DDPDenoiserView:
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


class Seq2SeqTask:
    """What the training tasks of both processes share: the laid-out pairs as tensors, batches, and no
    state of their own unless they override ``state_dict``."""

    def __init__(self, cfg: Seq2SeqConfig, train_set: Seq2SeqDataset, eval_set: Seq2SeqDataset | None):
        self.cfg = cfg
        self.train = train_set.tensors()  # (N, l) each
        self.eval = eval_set.tensors() if eval_set is not None else None

    def num_train_examples(self) -> int:
        return self.train["input_ids"].shape[0]

    def get_batch(self, indices, device) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: v[idx].to(device) for k, v in self.train.items() if k != "index"}

    def count_tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class DiffusionSeq2SeqTask(Seq2SeqTask):
    """Training task of ``diffusion.process: gaussian`` (DiffuSeq's losses, loss-aware timesteps)."""

    def __init__(self, cfg: Seq2SeqConfig, train_set: Seq2SeqDataset, eval_set: Seq2SeqDataset | None,
                 mask_id: int | None = None):
        if cfg.diffusion.soft_absorb and mask_id is None:
            raise ValueError("diffusion.soft_absorb needs the tokenizer's [MASK] id")
        super().__init__(cfg, train_set, eval_set)
        self.mask_id = mask_id
        self.diffusion = GaussianDiffusion.from_name(cfg.diffusion.schedule, cfg.diffusion.steps)
        self.t_sampler = create_timestep_sampler(cfg.diffusion.timestep_sampler, cfg.diffusion.steps)

    def _losses(self, model, batch, t, noise, x_start_noise, with_nll: bool = True,
                self_condition: bool = False, absorb: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        # no padding mask, as DiffuSeq: target-side [PAD]s are generated like any token (the model
        # decides where the output ends), so the denoiser must see them at training and sampling alike
        d = self.cfg.diffusion
        return self.diffusion.training_losses(
            embedding_space(DDPDenoiserView(model), d.embedding_norm, d.noise_factor), batch["input_ids"], batch["input_mask"], t,
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
        return {"t_sampler": self.t_sampler.state_dict()}  # JSON-native (lists, numbers)

    def load_state_dict(self, state: dict) -> None:
        self.t_sampler.load_state_dict(state["t_sampler"])



def self_condition_step(cfg: Seq2SeqConfig, g: torch.Generator) -> bool:
    """Whether this training step conditions on a no-grad first estimate (half the steps, drawn from the
    step's generator after its other draws); always False without ``model.self_condition``."""
    return bool(cfg.model.self_condition) and bool(torch.rand((), generator=g) < 0.5)


class MaskedSeq2SeqTask(Seq2SeqTask):
    """Training task of ``diffusion.process: masked``: weighted CE on masked target positions."""

    def __init__(self, cfg: Seq2SeqConfig, train_set: Seq2SeqDataset, eval_set: Seq2SeqDataset | None,
                 tok: TextTokenizer):
        super().__init__(cfg, train_set, eval_set)
        self.diffusion = build_masked_diffusion(cfg, tok.mask_id)
        self.special_ids = torch.tensor(sorted({tok.pad_id, tok.sep_id, tok.cls_id}))  # (s,) kept by source dropout

    def _losses(self, model, batch, t, g, self_condition=False):
        return self.diffusion.training_losses(DDPDenoiserView(model), batch["input_ids"], batch["input_mask"], t,
                                              generator=g, self_condition=self_condition)

    def _drop_sources(self, batch, ctx: StepContext, g: torch.Generator) -> dict:
        """``batch`` with the sources of a ``diffusion.source_dropout`` share of its rows masked (drawn for
        the global batch, then this rank's rows); unchanged, and no draw, when it is 0."""
        p = self.cfg.diffusion.source_dropout
        if not p:
            return batch
        rows = ctx.slice(torch.rand((ctx.global_batch,), generator=g) < p)  # (b,) bool
        ids = without_source(batch["input_ids"], batch["input_mask"], self.diffusion.mask_id, self.special_ids, rows)
        return {**batch, "input_ids": ids}

    def loss(self, model, batch, ctx: StepContext):
        g = ctx.generator()
        t = torch.randint(0, self.cfg.diffusion.steps, (ctx.global_batch,), generator=g)  # (B,)
        masking = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), generator=g)))
        sc = self_condition_step(self.cfg, g)
        batch = self._drop_sources(batch, ctx, g)
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


def make_seq2seq_task(cfg: Seq2SeqConfig, train_set, eval_set, tok: TextTokenizer):
    """The training task of ``diffusion.process``."""
    if cfg.diffusion.process == "masked":
        return MaskedSeq2SeqTask(cfg, train_set, eval_set, tok)
    return DiffusionSeq2SeqTask(cfg, train_set, eval_set, mask_id=tok.mask_id)



# ---- training entry point ------------------------------------------------------------------------
def build_seq2seq_trainer(cfg: Seq2SeqConfig, dist_info=None):
    """Data, tokenizer, denoiser, task and ``Trainer`` for ``cfg``, as ``mambadiff train`` builds them
    (no run-folder or checkpoint handling): returns (trainer, tokenizer). ``trainer.train_step()`` is
    one training step; ``mambadiff bench denoiser`` times exactly that."""
    from mambadiff.train import Trainer
    from mambadiff.train.distributed import DistInfo, barrier

    dist_info = dist_info or DistInfo()
    if cfg.data.path != "builtin" and is_stream(resolve_split_path(cfg.data.path, "train")):
        raise DataError("not a regular file (a named pipe or a device): training reads its data more than "
                        "once; write it to a file", file=resolve_split_path(cfg.data.path, "train"))
    if dist_info.is_main:  # the main process prepares the data folder and tokenizer first
        data_folder = prepare_data_folder(cfg)
        tok = prepare_tokenizer(cfg, data_folder)
    barrier()
    if not dist_info.is_main:
        data_folder = prepare_data_folder(cfg)
        tok = prepare_tokenizer(cfg, data_folder)
    d = cfg.data
    train_set = training_split(data_folder, tok, d, d.layout)
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


def check_seq2seq_config(cfg: Seq2SeqConfig) -> None:
    """``cfg.validate()`` and the denoiser it describes (`check_model_config`; the vocab is bert's, or
    the trained vocab_size as an upper bound)."""
    cfg.validate()
    vocab = 30522 if cfg.data.tokenizer == "bert" else cfg.data.vocab_size
    check_model_config(lambda: build_denoiser(dataclasses.replace(cfg), vocab))


def train_seq2seq(cfg: Seq2SeqConfig, resume: bool = False, progress: bool = True):
    """Train a diffusion seq2seq model as ``cfg`` says; returns (TrainResult, model, tokenizer).

    Works single-process or under torchrun (DDP). ``resume`` continues from the run folder's latest
    checkpoint bit-for-bit (a folder without one starts fresh, saying so); without it, a run folder
    that already has checkpoints is refused. The run holds ``run_dir/.lock`` for its life
    (``mambadiff.train.run_lock``): a second run on the same folder is refused before it writes.
    """
    from mambadiff.train.checkpoint import atomic_write_json
    from mambadiff.train.run_session import fit_run, training_run

    with training_run(cfg, "seq2seq", resume, check_seq2seq_config) as (cfg, dist_info):
        trainer, tok = build_seq2seq_trainer(cfg, dist_info)
        if dist_info.is_main:
            atomic_write_json(Path(cfg.run_dir) / "config.json", trainer.full_config)
        result = fit_run(trainer, resume, progress, verbose=True)
    return result, trainer.eval_model(), tok


def config_parameter_report(cfg: Seq2SeqConfig) -> dict[str, int]:
    """Parameter counts of the denoiser a config builds (vocab: bert's 30,522, or the trained vocab_size
    as an upper bound), without touching data."""
    vocab = 30522 if cfg.data.tokenizer == "bert" else cfg.data.vocab_size
    with torch.device("meta"):
        model = build_denoiser(dataclasses.replace(cfg), vocab)
    return model.parameter_report()
