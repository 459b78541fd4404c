"""Streaming (recurrent) inference of a unidirectional state-space classifier: token by token with
``step()``, in memory constant in the sequence length.

Glossary: b batch, l length, d model width, c classes.
"""
from __future__ import annotations

import torch

from mambadiff.models.backbones import ResidualStack
from mambadiff.models.classifier import SequenceClassifier


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
