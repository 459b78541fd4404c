"""The diffusion denoiser: predicts clean word embeddings x0 from noisy ones x_t.

Glossary: b batch, l length, e word-embedding width (emb_dim), d backbone width, v vocab.

    ids ──embed──► (b,l,e)   x_t ──up-proj (e→d, tanh, d→d)──► + time embedding(t)
        [+ self-cond projection (e→d) of the previous x0 estimate, when ``self_condition``] ──► LayerNorm, dropout
        ──► backbone stack (b,l,d) ──► down-proj (d→d, tanh, d→e) ──► predicted x0 (b,l,e)
    logits(h) = h @ word_embedding.T   (the rounding head, tied to the embedding)
    token_cross_entropy(h, ids)         -log softmax(logits(h))[ids] through ``tied_cross_entropy``

The layout follows DiffuSeq's TransformerNetModel; only the backbone changes with the config.
Both diffusion processes use this one network: the Gaussian process feeds it noisy embeddings, the
masked process feeds it ``embed(ids)`` with [MASK] ids at masked positions and reads ``logits``.

Self-conditioning (``self_condition: true``; Chen et al., Analog Bits): ``forward`` takes the
previous x0 estimate ``self_cond (b, l, e)`` (None = zeros) through its own projection. The word
embedding can start from all-MiniLM-L6-v2's vectors (``embedding_init: minilm``, see
``models.pretrained_embedding``) and be frozen (``freeze_embedding``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .backbones import BackboneConfig, TransformerBackbone, build_backbone, count_parameters


class _TiedCrossEntropy(torch.autograd.Function):
    """Cross-entropy of ``h @ weight.T`` against ``target``, with one (n, v) buffer instead of four.

    ``F.cross_entropy(h @ weight.T, target)`` keeps the logits and their log-softmax, and its
    backward fills a dense one-hot gradient and then a second (n, v) tensor. Here the forward keeps
    only the log-softmax; the backward takes its softmax, subtracts the one-hot with a scatter of
    n elements, and folds the per-row upstream gradient into the (n, e) operands of the two
    products instead of into the (n, v) buffer.
    """

    @staticmethod
    def forward(ctx, h, weight, target):
        log_probs = torch.log_softmax(h @ weight.t(), dim=-1)  # (n, v)
        ce = -log_probs.gather(1, target[:, None]).squeeze(1)  # (n,)
        ctx.save_for_backward(h, weight, target, log_probs)
        return ce

    @staticmethod
    def backward(ctx, grad_ce):
        h, weight, target, log_probs = ctx.saved_tensors
        # softmax of the log-softmax is the softmax; torch's softmax kernel, because its elementwise
        # exp slows down about 20x on log-probabilities below -87 (results under float's normal range)
        probs = torch.softmax(log_probs, dim=-1)  # (n, v)
        probs.scatter_add_(1, target[:, None], probs.new_full((target.shape[0], 1), -1.0))  # d ce / d logits
        g = grad_ce.to(probs.dtype)[:, None]  # (n, 1)
        grad_h = (probs @ weight) * g if ctx.needs_input_grad[0] else None  # (n, e)
        # (e, v) product then a transposed view: the faster of the two layouts for this shape
        grad_w = ((h * g).t() @ probs).t() if ctx.needs_input_grad[1] else None  # (v, e)
        return grad_h, grad_w, None


def tied_cross_entropy(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T, target, reduction="none")`` for h (n, e), weight (v, e),
    target (n,) long -> (n,), with less memory traffic (see ``_TiedCrossEntropy``).

    Under autocast (GPU bf16/fp16) it falls back to the plain form, whose dtype rules autocast knows.
    """
    if torch.is_autocast_enabled(h.device.type):
        return nn.functional.cross_entropy(h @ weight.t(), target, reduction="none")
    return _TiedCrossEntropy.apply(h, weight, target)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: t (b,) -> (b, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (b, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (b, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


EMBEDDING_INITS = ("normal", "minilm")


@dataclass
class DenoiserConfig:
    vocab_size: int = 0            # set from the tokenizer
    emb_dim: int = 128             # DiffuSeq's hidden_t_dim / embedding width
    diffusion_steps: int = 2000    # T: timesteps are rescaled to [0, 1000) as DiffuSeq's rescale_timesteps
    dropout: float = 0.1
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(bidirectional=True))
    self_condition: bool = False   # the network also sees its previous x0 estimate (Analog Bits)
    embedding_init: str = "normal"  # normal: N(0, 1) as DiffuSeq | minilm: all-MiniLM-L6-v2 word vectors
    freeze_embedding: bool = False  # keep the (pretrained) embedding and the tied head fixed

    def validate(self) -> None:
        if self.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (> 0)")
        if self.embedding_init not in EMBEDDING_INITS:
            raise ValueError(f"model.embedding_init must be one of {EMBEDDING_INITS}, got {self.embedding_init!r}")
        self.backbone.validate()


class Denoiser(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        e, d = cfg.emb_dim, cfg.backbone.d_model
        self.emb_dim = e
        self.word_embedding = nn.Embedding(cfg.vocab_size, e)  # N(0, 1) init, as DiffuSeq
        self.time_embed = nn.Sequential(nn.Linear(e, 4 * e), nn.SiLU(), nn.Linear(4 * e, d))
        self.up_proj = nn.Sequential(nn.Linear(e, d), nn.Tanh(), nn.Linear(d, d))
        self.in_norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.backbone = build_backbone(cfg.backbone)
        self.down_proj = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, e))
        # zero init: a self-conditioned network starts as the plain one
        self.self_cond_proj = nn.Linear(e, d, bias=False) if cfg.self_condition else None
        if self.self_cond_proj is not None:
            nn.init.zeros_(self.self_cond_proj.weight)
        self.word_embedding.weight.requires_grad_(not cfg.freeze_embedding)

    def set_word_embedding(self, weight: torch.Tensor) -> None:
        """Start the word embedding (and so the tied head) from ``weight (v, e)``."""
        if tuple(weight.shape) != tuple(self.word_embedding.weight.shape):
            raise ValueError(f"set_word_embedding: weight must have shape {tuple(self.word_embedding.weight.shape)}, "
                             f"got {tuple(weight.shape)}")
        with torch.no_grad():
            self.word_embedding.weight.copy_(weight)

    # the diffusion process talks to the model through these three calls
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embedding(input_ids)  # (b, l, e)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.word_embedding.weight.t()  # (b, l, v)

    def token_cross_entropy(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """-log p(ids | h) under the tied head: h (n, e), ids (n,) -> (n,)."""
        return tied_cross_entropy(h, self.word_embedding.weight, ids)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                self_cond: torch.Tensor | None = None) -> torch.Tensor:
        if x_t.ndim != 3 or x_t.shape[-1] != self.emb_dim:
            raise ValueError(f"x_t must have shape (b, l, {self.emb_dim}), got {tuple(x_t.shape)}")
        if t.shape != x_t.shape[:1]:
            raise ValueError(f"t must have shape (b,) = ({x_t.shape[0]},), got {tuple(t.shape)}")
        t_scaled = t.float() * (1000.0 / self.cfg.diffusion_steps)  # (b,)
        temb = self.time_embed(timestep_embedding(t_scaled, self.emb_dim))  # (b, d)
        h = self.up_proj(x_t) + temb[:, None, :]  # (b, l, d)
        if self_cond is not None:
            if self.self_cond_proj is None:
                raise ValueError("self_cond given to a denoiser built without model.self_condition")
            if self_cond.shape != x_t.shape:
                raise ValueError(f"self_cond must have x_t's shape {tuple(x_t.shape)}, got {tuple(self_cond.shape)}")
            h = h + self.self_cond_proj(self_cond)  # (b, l, d); None stands for zeros, which add nothing
        if isinstance(self.backbone, TransformerBackbone):  # DiffuSeq: positions join before the LayerNorm
            h = self.drop(self.in_norm(self.backbone.add_positions(h)))  # (b, l, d)
            h = self.backbone.encode(h, mask)  # (b, l, d)
        else:  # state-space stacks carry order themselves (a hybrid's attention may rotate)
            h = self.backbone(self.drop(self.in_norm(h)), mask)  # (b, l, d)
        return self.down_proj(h)  # (b, l, e)

    def parameter_report(self) -> dict[str, int]:
        return {
            "embedding": count_parameters(self.word_embedding),
            "backbone": count_parameters(self.backbone),
            "other": count_parameters(self) - count_parameters(self.word_embedding) - count_parameters(self.backbone),
            "total": count_parameters(self),
        }
