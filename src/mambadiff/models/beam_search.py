"""Beam search from any model with ``prefill`` and ``step`` (``CausalLM``): for each prompt, the
continuation with the best summed log-probability divided by ``length ** length_penalty``.

Glossary: b batch (prompts), k beam size, v vocab, l prompt length, t tokens generated so far.

The prompts run once through the parallel path (``prefill``); the cache is then grown to b * k rows
(prompt i's beams are rows i*k .. i*k + k-1) with ``reorder_cache``. Each step:

    log_softmax of each beam's next-token logits, plus the beam's summed log-probability  (b, k, v)
    the 2k best of prompt i's k * v candidates, best first                                  (b, 2k)
    an eos among the k best ends its hypothesis: set aside as finished (the prompt keeps its k best)
    the k best that are not eos become the beams; the cache rows follow their parent beams

At most k of the 2k candidates are eos (one per beam), so k that go on are always among them. Only an
eos among the step's k best finishes a hypothesis, as in the usual formulation: with beam_size 1 this
is greedy decoding, stop token included, whenever ``length_penalty <= 0`` (with a positive penalty a
longer hypothesis may still beat the greedy one, and the search looks for it).

A hypothesis's length counts its generated tokens, the eos included. A prompt is done when it has k
finished hypotheses and the best of them can't be beaten: a live beam's sum only falls, and its length
grows to at most ``max_new_tokens``, which bounds its best normalized score. At ``max_new_tokens`` the
beams still running compete with the finished hypotheses (at length ``max_new_tokens``). Finished
hypotheses end with the eos, as in ``generate``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .decoding import reorder_cache
from .generation import ban_repeated_ngrams, pad_prompts

__all__ = ["beam_search"]

NEG_INF = float("-inf")


def beam_search(model, prompt_ids, beam_size: int, max_new_tokens: int, eos_id: int, *,
                length_penalty: float = 1.0, lengths=None, pad_id: int = 0,
                banned_ids: Sequence[int] = (), no_repeat_ngram: int = 0) -> list[list[int]]:
    """The best continuation of each prompt, at most ``max_new_tokens`` tokens (see the module docstring).

    ``prompt_ids``: a list of token-id lists, or a right-padded (b, l) tensor with ``lengths (b,)``.
    ``eos_id`` ends a hypothesis (returned as its last token). ``length_penalty`` α: hypotheses are
    ranked by sum(log p) / length ** α (0: the plain sum, which favours short ones). ``banned_ids``:
    tokens never generated (e.g. [PAD], [CLS], [MASK]). ``no_repeat_ngram`` n: no beam generates an
    n-gram twice (``generation.ban_repeated_ngrams``; 0: off). ``pad_id`` is fed to the rows whose results
    are no longer read (a finished prompt's, a beam with no live candidate). The model runs in eval
    mode, without grad; its training mode is restored after."""
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    ids, lengths = pad_prompts(prompt_ids, lengths, device)  # (b, l), (b,)
    if max_new_tokens == 0:
        return [[] for _ in range(ids.shape[0])]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _search(model, ids, lengths, beam_size, max_new_tokens, int(eos_id), float(length_penalty),
                           [int(i) for i in banned_ids], int(pad_id), int(no_repeat_ngram))
    finally:
        model.train(was_training)


def _search(model, ids: torch.Tensor, lengths: torch.Tensor, k: int, max_new_tokens: int, eos_id: int,
            length_penalty: float, banned: list[int], pad_id: int, no_repeat_ngram: int) -> list[list[int]]:
    """The search loop over right-padded prompts ``ids (b, l)``; see the module docstring."""
    b, device = ids.shape[0], ids.device
    # the last new token is never fed back: the caches need l + max_new_tokens - 1 positions
    logits, cache = model.prefill(ids, lengths, capacity=ids.shape[1] + max_new_tokens - 1)  # (b, v)
    v = logits.shape[-1]
    _check_ids(v, eos_id, pad_id, banned)
    banned_t = torch.tensor(banned, dtype=torch.long, device=device)  # (n_banned,)
    first_rows = torch.arange(b, device=device) * k  # (b,) row of each prompt's beam 0
    rows = torch.arange(b, device=device).repeat_interleave(k)  # (b*k,) each prompt's row, once per beam
    cache = reorder_cache(cache, rows)
    logits = logits.index_select(0, rows)  # (b*k, v)
    dtype = torch.promote_types(logits.dtype, torch.float32)  # sums of log-probs: never in half precision
    # a prompt's k beams start identical: only beam 0 may extend, else step 1 picks one token k times
    scores = torch.full((b, k), NEG_INF, dtype=dtype, device=device)  # (b, k) summed log-probs
    scores[:, 0] = 0.0
    history = torch.zeros(b * k, 0, dtype=torch.long, device=device)  # (b*k, t) each beam's tokens
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]  # per prompt, best first
    done = [False] * b  # per prompt: stopped, its finished hypotheses final
    for t in range(max_new_tokens):
        log_probs = logits.to(dtype).log_softmax(-1)  # (b*k, v)
        log_probs[:, banned_t] = NEG_INF
        log_probs = ban_repeated_ngrams(log_probs, history, no_repeat_ngram)  # (b*k, v)
        total = scores[:, :, None] + log_probs.view(b, k, v)  # (b, k, v)
        parent, token, new_scores, ended = _select(total, k, eos_id)  # (b, k) each
        for i, beam, total_score in ended:
            if not done[i]:
                tokens = history[i * k + beam].tolist() + [eos_id]
                _keep(finished[i], total_score / (t + 1) ** length_penalty, tokens, k)
        parent_rows = (parent + first_rows[:, None]).view(-1)  # (b*k,) the row each new beam continues
        history = torch.cat([history[parent_rows], token.view(-1, 1)], dim=1)  # (b*k, t+1)
        scores = new_scores
        if t == max_new_tokens - 1:
            break  # the running beams now compete at their full length (below)
        best_sums = scores.max(dim=1).values.tolist()  # (b,) the best running beam of each prompt
        done = [done[i] or _can_stop(finished[i], best_sums[i], t + 1, max_new_tokens, length_penalty, k)
                for i in range(b)]
        if all(done):
            break
        if not torch.equal(parent_rows, torch.arange(b * k, device=device)):  # a copy only when beams moved
            cache = reorder_cache(cache, parent_rows)
        stopped = torch.tensor(done, device=device)[:, None]  # (b, 1)
        unread = (scores == NEG_INF) | stopped  # (b, k) dead beams and stopped prompts: their results go unread
        logits = model.step(token.masked_fill(unread, pad_id).view(-1), cache)  # (b*k, v)
    return [_best(finished[i], history[i * k:(i + 1) * k], scores[i], length_penalty, not done[i])
            for i in range(b)]


def _check_ids(v: int, eos_id: int, pad_id: int, banned: list[int]) -> None:
    for name, value in (("eos_id", eos_id), ("pad_id", pad_id)):
        if not 0 <= value < v:
            raise ValueError(f"{name} must lie in [0, vocab_size={v}), got {value}")
    if any(not 0 <= i < v for i in banned):
        raise ValueError(f"banned_ids must lie in [0, vocab_size={v}), got {sorted(set(banned))}")
    if len(set(banned)) == v:
        raise ValueError("banned_ids bans the whole vocabulary: nothing can be generated")


def _select(total: torch.Tensor, k: int, eos_id: int):
    """From ``total (b, k, v)``, every one-token extension's summed log-probability: the parent beam,
    token and sum of the k best extensions that are not eos (b, k) each (sum -inf: no such candidate),
    and the finished ones, a list of (prompt, parent beam, sum) for each eos among the k best."""
    b, _, v = total.shape
    top, flat = total.reshape(b, k * v).topk(min(2 * k, k * v), dim=-1)  # (b, 2k) best first
    parent, token = flat // v, flat % v  # (b, 2k)
    finite = top > NEG_INF  # (b, 2k) a banned token or a dead beam is no candidate
    ends = (token == eos_id) & finite  # (b, 2k)
    ends[:, k:] = False  # an eos finishes a hypothesis only among the step's k best
    live = (token != eos_id) & finite  # (b, 2k)
    # a stable sort puts the live candidates first, still best first: the first k of them go on
    order = (~live).to(torch.int32).sort(dim=-1, stable=True).indices[:, :k]  # (b, k)
    sums = top.gather(1, order).masked_fill(~live.gather(1, order), NEG_INF)  # (b, k)
    ended = [(i, int(parent[i, j]), float(top[i, j])) for i, j in ends.nonzero().tolist()]
    return parent.gather(1, order), token.gather(1, order), sums, ended


def _keep(finished: list[tuple[float, list[int]]], score: float, tokens: list[int], k: int) -> None:
    """Add a finished hypothesis to a prompt's list, best first (ties: the earlier one), keeping k."""
    finished.append((score, tokens))
    finished.sort(key=lambda hyp: -hyp[0])  # stable: an equal score found later ranks after
    del finished[k:]


def _can_stop(finished: list[tuple[float, list[int]]], best_sum: float, length: int, max_new_tokens: int,
              length_penalty: float, k: int) -> bool:
    """Whether a prompt is done: no live beam (``best_sum`` -inf), or k finished hypotheses whose best
    no live beam can beat. A live beam's sum (<= 0) only falls as it grows, so no hypothesis it leads
    to scores above its sum over the length penalty at max_new_tokens (a positive penalty favours
    length) or at length + 1 (a penalty <= 0 favours brevity): a bound, not an estimate at
    the current length, which can stop before a longer hypothesis wins."""
    if best_sum == NEG_INF:
        return True
    if len(finished) < k:
        return False
    longest = max_new_tokens if length_penalty > 0 else length + 1
    return finished[0][0] >= best_sum / longest ** length_penalty


def _best(finished: list[tuple[float, list[int]]], beams: torch.Tensor, sums: torch.Tensor,
          length_penalty: float, with_live: bool) -> list[int]:
    """A prompt's best hypothesis: the finished ones, and (``with_live``: the search ran to
    max_new_tokens) its live beams ``beams (k, t)`` with sums ``sums (k,)`` at length t."""
    pool = list(finished)
    if with_live:
        t = beams.shape[1]
        pool += [(s / t ** length_penalty, row) for s, row in zip(sums.tolist(), beams.tolist()) if s > NEG_INF]
    return max(pool, key=lambda hyp: hyp[0])[1]  # the first of equal scores: a finished one
