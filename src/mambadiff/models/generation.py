"""Autoregressive generation from any model with ``prefill`` and ``step`` (``CausalLM``): greedy or
sampled (temperature, top-k, nucleus), stop tokens, batches of prompts of unequal length.

Glossary: b batch, l length, v vocab.

Prompts of unequal length are right-padded, each row with its own length; the prompt runs once through
the parallel path (``prefill``), then every row feeds its own last token to ``step``. A row's padding
never reaches its state, so each row generates what it would alone (bitwise up to the batch's float
rounding). A row that meets a stop token is finished (the stop token is the last one it returns) while
the others go on; generation ends when every row is finished or has ``max_new_tokens`` tokens.
``no_repeat_ngram`` n (as transformers' ``no_repeat_ngram_size``, but over the new tokens only: a
paraphrase may repeat its prompt's phrases) bans every token that would complete an n-gram the row
has already generated (`ban_repeated_ngrams`); beam search takes it too.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["ban_repeated_ngrams", "generate", "pad_prompts", "sample_next"]


def pad_prompts(prompts, lengths=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as right-padded ids (b, l) and lengths (b,): a list of token-id lists (any lengths >= 1),
    or a (b, l) tensor with optional ``lengths`` (default: every row full)."""
    if isinstance(prompts, torch.Tensor):
        if prompts.ndim != 2 or prompts.is_floating_point():
            raise ValueError(f"prompt_ids must be an integer tensor (b, l), got {prompts.dtype} {tuple(prompts.shape)}")
        b, l = prompts.shape
        if lengths is None:
            lengths = torch.full((b,), l, dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=prompts.device)  # (b,)
        if lengths.shape != (b,) or (b and (int(lengths.min()) < 1 or int(lengths.max()) > l)):
            raise ValueError(f"lengths must be (b,) = ({b},) values in [1, {l}], got {lengths.tolist()}")
        return prompts.to(device) if device is not None else prompts, lengths.to(prompts.device if device is None else device)
    if lengths is not None:
        raise ValueError("lengths goes with a (b, l) tensor of prompts, not with lists")
    rows = [list(map(int, row)) for row in prompts]
    if not rows or any(len(row) == 0 for row in rows):
        raise ValueError("prompt_ids must be one or more non-empty lists of token ids")
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)  # (b, l)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids.to(device), torch.tensor([len(r) for r in rows], device=device)


def ban_repeated_ngrams(scores: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    """``scores (r, v)`` with -inf at every token that would make the last n tokens of a row of
    ``history (r, t)`` (the tokens generated so far) an n-gram the row already holds; unchanged for
    n < 1 or t < n (no n-gram yet)."""
    t = history.shape[1]
    if n < 1 or t < n or history.shape[0] == 0:
        return scores
    if n == 1:  # every generated token is a 1-gram the row holds
        return scores.scatter(1, history, float("-inf"))
    windows = history.unfold(1, n, 1)  # (r, t - n + 1, n) every n-gram so far
    prefix = history[:, t - n + 1:]  # (r, n - 1) the n-gram the next token completes, less that token
    hit = (windows[:, :, :-1] == prefix[:, None, :]).all(-1)  # (r, t - n + 1)
    rows, at = hit.nonzero(as_tuple=True)  # (h,) each
    banned = scores.clone()
    banned[rows, windows[rows, at, -1]] = float("-inf")
    return banned


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row from ``logits (b, v)``: the argmax for ``temperature == 0``, else a
    draw from softmax(logits / temperature) restricted to the ``top_k`` most likely tokens (0: all) and
    to the smallest set whose probability reaches ``top_p`` (nucleus). Returns (b,) long."""
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got {temperature}, {top_k}, {top_p}")
    if temperature == 0:
        return logits.argmax(-1)  # (b,)
    scores = logits.float() / temperature  # (b, v)
    if 0 < top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]  # (b, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))  # (b, v)
    if top_p < 1:
        probs, order = scores.softmax(-1).sort(dim=-1, descending=True)  # (b, v) each
        outside = probs.cumsum(-1) - probs >= top_p  # (b, v) the mass before a token already reaches top_p
        scores = scores.scatter(-1, order, probs.log().masked_fill(outside, float("-inf")))  # (b, v)
    return torch.multinomial(scores.softmax(-1), 1, generator=generator)[:, 0]  # (b,)


def generate(model, prompt_ids, max_new_tokens: int, *, lengths=None, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, stop_ids: Sequence[int] = (), pad_id: int = 0, banned_ids: Sequence[int] = (),
             no_repeat_ngram: int = 0, generator: torch.Generator | None = None) -> list[list[int]]:
    """Up to ``max_new_tokens`` new tokens for each prompt (see the module docstring).

    ``prompt_ids``: a list of token-id lists, or a right-padded (b, l) tensor with ``lengths (b,)``.
    ``temperature`` 0 is greedy; ``top_k``, ``top_p``, ``generator`` shape and seed the sampling.
    ``stop_ids``: tokens that end a row (returned as its last token). ``pad_id`` is fed to finished
    rows (never returned). ``no_repeat_ngram``: see the module docstring. Returns each row's new tokens.
    The model runs in eval mode, without grad."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    ids, lengths = pad_prompts(prompt_ids, lengths, device)  # (b, l), (b,)
    b = ids.shape[0]
    out: list[list[int]] = [[] for _ in range(b)]
    if max_new_tokens == 0:
        return out
    stops = torch.tensor(sorted(set(map(int, stop_ids))), dtype=torch.long, device=device)  # (stops,)
    banned = torch.tensor(sorted(set(map(int, banned_ids))), dtype=torch.long, device=device)  # (banned,)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # the last new token is never fed back: the caches need l + max_new_tokens - 1 positions
            logits, cache = model.prefill(ids, lengths, capacity=ids.shape[1] + max_new_tokens - 1)  # (b, v)
            done = torch.zeros(b, dtype=torch.bool, device=device)  # (b,)
            history = torch.zeros(b, 0, dtype=torch.long, device=device)  # (b, t) tokens generated so far
            for t in range(max_new_tokens):
                logits = logits.index_fill(-1, banned, float("-inf")) if len(banned) else logits  # (b, v)
                logits = ban_repeated_ngrams(logits, history, no_repeat_ngram)  # (b, v)
                token = sample_next(logits, temperature, top_k, top_p, generator)  # (b,)
                history = torch.cat([history, token[:, None]], dim=1) if no_repeat_ngram else history
                for i in (~done).nonzero()[:, 0].tolist():
                    out[i].append(int(token[i]))
                done = done | torch.isin(token, stops)  # (b,)
                if bool(done.all()) or t == max_new_tokens - 1:
                    break
                logits = model.step(token.masked_fill(done, pad_id), cache)  # (b, v)
    finally:
        model.train(was_training)
    return out
