"""The per-step pieces of the masked sampler (`MaskedSampler`), each a short function over tensors:
how many positions commit, which proposals are banned, the length the first step predicts, and the
length beam's offsets and copy test.

Glossary: b batch, l length, v vocab, N open positions (one logits row each), B length-beam width.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["ban_neighbour_tokens", "ban_repeated_bigrams", "beam_length_offsets", "commit_counts",
           "copy_the_source", "favour_source_words", "gumbel_perturbed", "length_ends", "predicted_length",
           "resolve_adjacent_repeats", "shift", "top_per_row"]


def commit_counts(n_target: torch.Tensor, k: int, steps: int) -> torch.Tensor:
    """Target positions holding tokens after step k (K..1): ``round(n_target * (K - k + 1) / K)``; all at k = 1."""
    return torch.div(n_target * (steps - k + 1) * 2 + steps, 2 * steps, rounding_mode="floor")  # (b,)


def top_per_row(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``(b, l)`` bool: the ``counts[i]`` highest scores of row i (ties: lower position first)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (b, l)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))  # (b, l)
    return rank < counts[:, None]


def beam_length_offsets(beam: int) -> torch.Tensor:
    """``(beam,)`` long: the length offsets of a length beam, nearest first: 0, -1, +1, -2, +2, ..."""
    j = torch.arange(beam)
    return (j + 1) // 2 * torch.where(j % 2 == 1, -1, 1)


def predicted_length(logits: torch.Tensor, target: torch.Tensor, end_ids: Sequence[int],
                     end_bias: float) -> torch.Tensor:
    """``(b,)`` long: ``round(sum_i P(x_i not in end_ids))`` over each row's ``target (b, l)`` positions,
    from the first step's ``logits (N, v)`` over them (row-major order; banned tokens at -inf), with
    ``end_bias`` added to the end tokens' logits."""
    ends = [int(i) for i in end_ids]
    if end_bias:
        logits = logits.clone()  # (N, v) the caller's rows are its proposals: bias a copy
        logits[:, ends] += end_bias
    p_end = torch.softmax(logits, dim=-1)[:, ends].sum(-1)  # (N,)
    not_end = torch.zeros(target.shape, device=target.device)  # (b, l)
    not_end[target] = 1.0 - p_end
    return not_end.sum(-1).round().long()


def length_ends(target: torch.Tensor, n: torch.Tensor, end_ids: Sequence[int]) -> torch.Tensor:
    """``(b, l)`` long: end-of-text at each row's n-th target position (``n (b,)`` clamped to
    ``[1, n_target - 1]``), padding after it, -1 elsewhere."""
    end_of_text, padding = map(int, end_ids)
    n = torch.minimum(n.clamp_min(1), target.sum(-1) - 1)  # (b,)
    rank = target.long().cumsum(-1) - 1  # (b, l) index within the target span
    out = torch.full(target.shape, -1, dtype=torch.long, device=target.device)
    out[target & (rank == n[:, None])] = end_of_text
    out[target & (rank > n[:, None])] = padding
    return out


def copy_the_source(token_ids: torch.Tensor, input_mask: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    """``(b,)`` bool: the target positions of ``token_ids (b, l)`` (``input_mask`` 1) hold the source's
    tokens word for word, ``special_ids`` left out on both sides."""
    target = input_mask.bool()  # (b, l)
    word = ~torch.isin(token_ids, torch.tensor(list(special_ids), dtype=token_ids.dtype, device=token_ids.device))
    rows = token_ids.tolist()
    out = []
    for ids, tgt, keep in zip(rows, target.tolist(), word.tolist()):
        source = [i for i, t, k in zip(ids, tgt, keep) if k and not t]
        output = [i for i, t, k in zip(ids, tgt, keep) if k and t]
        out.append(source == output)
    return torch.tensor(out, dtype=torch.bool, device=token_ids.device)


def favour_source_words(logits: torch.Tensor, x: torch.Tensor, target: torch.Tensor, open_pos: torch.Tensor,
                        special: torch.Tensor, bonus: float) -> None:
    """Add ``bonus`` in place to the logits ``(N, v)`` of the open positions ``open_pos (b, l)`` (row-major,
    one logits row each) at the tokens their row's source holds (``x (b, l)`` where ``target`` is 0;
    ``special (s,)`` left out): a prior that a paraphrase keeps most of its source's words."""
    source = ~target & ~torch.isin(x, special)  # (b, l) source words
    count = torch.zeros(x.shape[0], logits.shape[1], device=x.device)  # (b, v) source occurrences per token
    count.scatter_add_(1, x, source.to(count.dtype))
    logits += bonus * (count > 0)[open_pos.nonzero(as_tuple=True)[0]]  # (N, v)


def repeats_a_word_pair(token_ids: torch.Tensor, target: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    """``(b,)`` bool: some pair of adjacent (non-special) target tokens of ``token_ids (b, l)`` occurs
    twice in its row (``target (b, l)`` bool): a repeated phrase, "sex with sex with"."""
    special = torch.tensor(list(special_ids), dtype=token_ids.dtype, device=token_ids.device)
    word = target.bool() & ~torch.isin(token_ids, special)  # (b, l)
    both = word[:, :-1] & word[:, 1:]  # (b, l - 1) pairs of adjacent words
    v = int(token_ids.max()) + 1 if token_ids.numel() else 1
    pairs = token_ids[:, :-1] * v + token_ids[:, 1:]  # (b, l - 1) one id per pair
    # pairs that are not two words get distinct negative ids, so only real pairs can be equal
    filler = -1 - torch.arange(pairs.shape[1], device=pairs.device).expand_as(pairs)  # (b, l - 1)
    ordered = torch.where(both, pairs, filler).sort(dim=-1).values  # (b, l - 1)
    return (ordered[:, 1:] == ordered[:, :-1]).any(-1)


def gumbel_perturbed(logits: torch.Tensor, temperature: float, top_k: int,
                     generator: torch.Generator | None) -> torch.Tensor:
    """``logits (N, v) / temperature`` plus Gumbel noise (a new tensor): its row argmax is a draw from
    ``softmax(logits / temperature)``, restricted to the ``top_k`` largest logits (others -inf) when
    ``0 < top_k < v``. The noise is drawn on the generator's device, for the same draws anywhere."""
    n, v = logits.shape
    gen_device = generator.device if generator is not None else "cpu"

    def gumbel(shape) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, device=gen_device).to(logits.device)
        return -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))

    if 0 < top_k < v:
        values, index = logits.topk(top_k, dim=-1)  # (N, k)
        out = torch.full_like(logits, -torch.inf)  # (N, v)
        return out.scatter_(1, index, values / temperature + gumbel(values.shape))
    return logits / temperature + gumbel(logits.shape)


def ban_neighbour_tokens(scores: torch.Tensor, x: torch.Tensor, committed: torch.Tensor,
                         rows_of: torch.Tensor, exempt: torch.Tensor) -> None:
    """In place: row r of ``scores (N, v)`` belongs to the r-th True position of ``rows_of (b, l)``; set
    -inf for the (non-``exempt``) tokens that ``x`` holds at the ``committed`` positions next to it."""
    rows, cols = rows_of.nonzero(as_tuple=True)  # (N,), (N,) in scores' row order
    l = x.shape[1]
    for offset in (-1, 1):
        nb = (cols + offset).clamp(0, l - 1)  # (N,)
        inside = (cols + offset >= 0) & (cols + offset < l)
        tok = x[rows, nb]  # (N,)
        ok = inside & committed[rows, nb] & ~torch.isin(tok, exempt)  # (N,)
        idx = ok.nonzero(as_tuple=True)[0]
        scores[idx, tok[idx]] = -torch.inf


def ban_repeated_bigrams(scores: torch.Tensor, x: torch.Tensor, committed: torch.Tensor,
                         rows_of: torch.Tensor, exempt: torch.Tensor) -> None:
    """In place: row r of ``scores (N, v)`` belongs to the r-th True position ``(i, c)`` of ``rows_of
    (b, l)``; set -inf for every token w such that ``(x[i, c-1], w)`` or ``(w, x[i, c+1])``, with that
    neighbour ``committed``, is a pair of adjacent ``committed`` positions of row i already. Pairs with
    an ``exempt`` token are never banned."""
    rows, cols = rows_of.nonzero(as_tuple=True)  # (N,), (N,) in scores' row order
    l = x.shape[1]
    if l < 2 or rows.numel() == 0:
        return
    word = committed & ~torch.isin(x, exempt)  # (b, l) committed non-exempt tokens
    pair = word[:, :-1] & word[:, 1:]  # (b, l-1) committed pairs (x[:, j], x[:, j+1])
    ban_rows, ban_tokens = [], []  # (N_ban,) score rows and the tokens banned there
    for offset in (-1, 1):
        # offset -1: the left neighbour u is the pair's first token and w its second; +1: w first, v second
        nb = (cols + offset).clamp(0, l - 1)  # (N,)
        has_nb = (cols + offset >= 0) & (cols + offset < l) & word[rows, nb]  # (N,)
        nb_tok = x[rows, nb]  # (N,)
        same_side = x[rows, :-1] if offset < 0 else x[rows, 1:]  # (N, l-1) the neighbour's side of each pair
        other_side = x[rows, 1:] if offset < 0 else x[rows, :-1]  # (N, l-1) the token that would repeat
        hit = pair[rows] & (same_side == nb_tok[:, None]) & has_nb[:, None]  # (N, l-1)
        n_idx, j = hit.nonzero(as_tuple=True)
        ban_rows.append(n_idx)
        ban_tokens.append(other_side[n_idx, j])
    n_idx, tok = torch.cat(ban_rows), torch.cat(ban_tokens)
    if n_idx.numel() == 0:
        return
    touched = torch.unique(n_idx)  # (R,)
    before = scores[touched].clone()  # (R, v)
    scores[n_idx, tok] = -torch.inf
    # a row with nothing left (top_k draws keep few finite scores) keeps its proposals: a word, not [MASK]
    empty = torch.isinf(scores[touched]).all(-1) & ~torch.isinf(before).all(-1)  # (R,)
    scores[touched[empty]] = before[empty]


def resolve_adjacent_repeats(tokens, scores, new, x, fixed, open_pos, perturbed, confidence_of, exempt):
    """Tokens for the ``new`` positions of one step with no (non-exempt) token equal to a neighbour's.

    Rounds: a new position whose proposal equals a neighbouring new position's of higher priority
    (higher score; ties: the left one) waits; the others commit. Waiting positions propose again with
    the committed neighbours' tokens banned. Each round commits at least the top position of every
    row, so this ends. tokens / scores / new / x / fixed / open_pos ``(b, l)``; perturbed ``(N, v)`` in
    ``open_pos`` order; ``confidence_of(rows, tokens)`` the commit priority of proposals. Returns
    (tokens, scores) ``(b, l)``.
    """
    b, l = tokens.shape
    row_of = torch.full((b, l), -1, dtype=torch.long, device=tokens.device)  # (b, l) row in perturbed
    row_of[open_pos] = torch.arange(int(open_pos.sum()), device=tokens.device)
    x, fixed, pending = x.clone(), fixed.clone(), new.clone()
    tokens, scores = tokens.clone(), scores.clone()
    while bool(pending.any()):
        lose = torch.zeros_like(pending)
        for offset in (-1, 1):
            nb_tok = shift(tokens, offset, -1)  # (b, l) the neighbour's proposal
            nb_pending = shift(pending.long(), offset, 0).bool()
            nb_score = shift(scores, offset, -torch.inf)
            nb_first = (nb_score > scores) | ((nb_score == scores) & (offset < 0))  # neighbour has priority
            clash = pending & nb_pending & (nb_tok == tokens) & ~torch.isin(tokens, exempt) & nb_first
            lose |= clash
        win = pending & ~lose  # (b, l)
        x = torch.where(win, tokens, x)
        fixed |= win
        pending &= ~win
        if not bool(pending.any()):
            break
        rows = row_of[pending]  # (P,)
        again = perturbed[rows].clone()  # (P, v)
        ban_neighbour_tokens(again, x, fixed, pending, exempt)
        choice = again.argmax(-1)  # (P,)
        tokens[pending] = choice
        scores[pending] = confidence_of(rows, choice)
    return tokens, scores


def shift(t: torch.Tensor, offset: int, fill) -> torch.Tensor:
    """``out[:, i] = t[:, i + offset]`` (``fill`` outside): the neighbour at ``offset`` of every position."""
    out = torch.full_like(t, fill)
    if offset < 0:
        out[:, -offset:] = t[:, :offset]
    else:
        out[:, :-offset] = t[:, offset:]
    return out
