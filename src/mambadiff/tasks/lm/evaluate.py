"""Scoring a language model on a token stream: nats per token and bits per byte.

Glossary: b windows in a batch, w window length (``block_size``), v vocab, n tokens in the stream.

The stream is cut into consecutive windows of ``block_size + 1`` tokens that overlap by one, so every
token after the first is predicted exactly once, from the context of its own window (between 0 and
block_size - 1 tokens back, as in training). Bits per byte divide the summed nats by ln 2 and by the
UTF-8 bytes the predicted tokens stand for (``tokenizer.token_bytes``), which makes models with
different tokenizers comparable.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["score_stream"]


@torch.no_grad()
def _window_nats(model: nn.Module, windows: torch.Tensor, token_bytes: torch.Tensor) -> tuple[float, float]:
    """(summed nats, summed target bytes) of ``windows (b, w + 1)``."""
    logits = model(windows[:, :-1])  # (b, w, v)
    targets = windows[:, 1:]  # (b, w)
    nats = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
    return float(nats), float(token_bytes[targets].sum())


@torch.no_grad()
def score_stream(model: nn.Module, stream: torch.Tensor, block_size: int, token_bytes, batch_size: int = 32,
                 device: str | torch.device | None = None) -> dict[str, float]:
    """``{"loss": nats per token, "bpb": bits per byte, "tokens": predicted tokens}`` of ``stream (n,)``."""
    if stream.ndim != 1 or len(stream) < 2:
        raise ValueError(f"need a stream of at least 2 tokens, got shape {tuple(stream.shape)}")
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    table = torch.as_tensor(token_bytes, dtype=torch.float64, device=device)  # (v,)
    n_full = (len(stream) - 1) // block_size
    starts = torch.arange(n_full) * block_size  # (windows,)
    nats = nbytes = 0.0
    try:
        for i in range(0, n_full, batch_size):
            idx = starts[i:i + batch_size, None] + torch.arange(block_size + 1)  # (b, w + 1)
            a, c = _window_nats(model, stream[idx].long().to(device), table)
            nats, nbytes = nats + a, nbytes + c
        rest = stream[n_full * block_size:]  # the last, shorter window
        if len(rest) >= 2:
            a, c = _window_nats(model, rest[None].long().to(device), table)
            nats, nbytes = nats + a, nbytes + c
    finally:
        model.train(was_training)
    tokens = len(stream) - 1
    return {"loss": nats / tokens, "bpb": nats / math.log(2) / max(nbytes, 1.0), "tokens": tokens}
