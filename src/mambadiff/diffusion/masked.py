"""Discrete masked (absorbing-state) diffusion for seq2seq: MDLM (Sahoo et al. 2024) / RDM (Zheng et al. 2023).

Glossary: b batch, l length, e embedding width, v vocab, t diffusion step in [0, T), N selected positions,
K sampling steps.

Batch convention as the Gaussian process (``process.py``): ``input_ids (b, l)`` hold source and target,
``input_mask (b, l)`` is 1 on TARGET positions. Only target positions are ever masked; the source is
the clean condition. Target-side [PAD]s are target tokens, so the model decides the output length.

Forward process: at step t every target token is replaced by [MASK] independently with probability
``rate(t) = (t + 1) / T`` (linear in t; t = T - 1 masks every target token).

Network: the denoiser of ``models.denoiser`` run on token ids: ``h = model(model.embed(x_t), t)``,
logits ``model.logits(h)`` through the tied head. Self-conditioning feeds the previous ``h`` back as
``self_cond`` (the estimate of x0 in embedding space, whose tied logits are the prediction).

Loss, per example, with ``CE_i = -log p(ids_i | x_t)`` over the masked target positions ``M``,
``n_target`` target positions and ``|M|`` masked ones:

* ``elbo`` (MDLM's continuous-time bound for the linear schedule): ``T / (t + 1) * sum_M CE / n_target``,
  an unbiased estimate of the mean target CE;
* ``rdm`` (RDM's linear reweighting, which emphasises the low-noise steps):
  ``(1 - t / T) * sum_M CE / max(|M|, 1)``;
* ``uniform``: ``sum_M CE / max(|M|, 1)``.

Sampling (``sample_masked``): all target positions start as [MASK]; step ``k = K .. 1`` runs the
network at the step whose masking rate is ``k / K``, proposes a token for every masked position
(argmax, or a draw at ``temperature``) with its log-probability as confidence, and commits the most
confident proposals so that ``round(n_target * (K - k + 1) / K)`` positions hold tokens (RDM's top-k
reparameterised decoding). With ``remask`` the committed tokens compete again, by the confidence they
were committed with, against the new proposals: losers go back to [MASK]. After the last step every
target position holds a token. Without ``remask`` and self-conditioning, a row whose count does not
grow at step k keeps its tokens whatever the network says, so the network runs only on the rows that
commit (a row of n < K words runs n of the K steps); the result is the same as running every row. ``forbid_adjacent_repeat`` removes from a position's proposals the
non-special tokens its committed neighbours hold. ``forbid_repeat_bigram`` removes the tokens that
would, with a committed neighbour, form a word pair the committed target already holds elsewhere
("what is origin of origin of hindu?": filling a fixed length repeats phrases at a distance).

Length beam (`sample_length_beam`, B lengths, with ``predict_length``; Mask-Predict's length beam,
Ghazvininejad et al. 2019): every row is decoded B times, with the predicted length n moved by 0, -1, +1, -2, +2, ...,
and the candidate whose words have the highest mean log-probability (at the step that committed
them) is kept. A length guessed one word too long is filled with a repeated phrase at low
confidence; the shorter candidate wins then. A verbatim copy of the source is often the most
confident candidate; with ``avoid_copy`` the beam never moves to one: candidates at a moved length
whose words repeat the source's word for word (special tokens aside) rank below every other candidate,
so an output is a copy only where the predicted length itself gave one (or every length did). The
first step, which predicts the length from the all-[MASK] target, is the same for every candidate:
it runs once per row, and the row is copied B times after it.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from .process import check_ids_and_mask

WEIGHTINGS = ("rdm", "elbo", "uniform")


class MaskedSampleOutput(NamedTuple):
    token_ids: torch.Tensor  # (b, l) source as given, target positions generated
    committed_at: torch.Tensor  # (b, l) long: the step k (K..1) that committed the final token; 0 on the source
    word_log_prob: torch.Tensor  # (b,) mean log-probability the generated words were committed with (the
    # positions predict_length fixes to end tokens excluded; -inf for a row without words)


class MaskedDiffusion:
    """Absorbing-state diffusion over target tokens; holds only T, the [MASK] id and the weighting."""

    def __init__(self, num_timesteps: int, mask_id: int, weighting: str = "rdm"):
        if int(num_timesteps) < 1:
            raise ValueError(f"MaskedDiffusion: num_timesteps must be >= 1, got {num_timesteps}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"MaskedDiffusion: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.num_timesteps = int(num_timesteps)
        self.mask_id = int(mask_id)
        self.weighting = weighting

    # ------------------------------------------------------------------ forward process
    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a target token is masked at step ``t (b,)``: ``(t + 1) / T``."""
        return (t.double() + 1.0) / self.num_timesteps  # (b,)

    def timestep_for_rate(self, rate: float) -> int:
        """The step whose masking rate is ``rate`` in (0, 1] (rounded up to the grid)."""
        return min(self.num_timesteps - 1, max(0, int(-(-rate * self.num_timesteps // 1)) - 1))

    def q_sample(self, input_ids: torch.Tensor, input_mask: torch.Tensor, t: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t (b, l), masked (b, l) bool)``: target tokens replaced by [MASK] with prob ``rate(t)``."""
        check_ids_and_mask(input_ids, input_mask, None, "MaskedDiffusion.q_sample")
        self._check_t(t, input_ids.shape[0], "q_sample")
        u = torch.rand(input_ids.shape, generator=generator, dtype=torch.float64,
                       device=generator.device if generator is not None else "cpu").to(input_ids.device)  # (b, l)
        rate = self.mask_rate(t).to(input_ids.device)[:, None]  # (b, 1)
        masked = input_mask.bool() & (u < rate)  # (b, l)
        return torch.where(masked, torch.full_like(input_ids, self.mask_id), input_ids), masked

    def _check_t(self, t, batch: int, who: str) -> None:
        if not torch.is_tensor(t) or t.shape != (batch,) or t.dtype not in (torch.long, torch.int32):
            raise ValueError(f"{who}: t must be an integer tensor of shape ({batch},), got "
                             f"{getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}")
        if batch and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"{who}: t must lie in [0, {self.num_timesteps}), got {t.tolist()}")

    # ------------------------------------------------------------------ loss
    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """The per-example factor of the weighting (see the module docstring): ``(b,)``."""
        if self.weighting == "elbo":
            return 1.0 / self.mask_rate(t)
        if self.weighting == "rdm":
            return 1.0 - t.double() / self.num_timesteps
        return torch.ones_like(t, dtype=torch.float64)

    def training_losses(self, model, input_ids: torch.Tensor, input_mask: torch.Tensor, t: torch.Tensor,
                        generator: torch.Generator | None = None, self_condition: bool = False,
                        attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"loss", "ce", "mask_frac"}``, each ``(b,)``: the weighted loss that is optimised, the mean CE
        over masked target positions (logged) and the fraction of target positions masked.

        ``self_condition``: first run the network without gradient, then again with its output as
        ``self_cond`` (the caller decides on which steps; zeros, i.e. None, on the others).
        """
        x_t, masked = self.q_sample(input_ids, input_mask, t, generator)  # (b, l), (b, l)
        x_emb = model.embed(x_t)  # (b, l, e)
        self_cond = None
        if self_condition:
            with torch.no_grad():
                self_cond = model(x_emb.detach(), t, mask=attention_mask).detach()  # (b, l, e)
        h = model(x_emb, t, mask=attention_mask, self_cond=self_cond)  # (b, l, e)
        ce_sum, n_masked = masked_cross_entropy_sum(model, h, input_ids, masked)  # (b,), (b,)
        n_target = input_mask.bool().sum(-1).to(ce_sum.dtype).clamp_min(1.0)  # (b,)
        w = self.loss_weight(t).to(ce_sum.dtype)  # (b,)
        per_masked = ce_sum / n_masked.clamp_min(1.0)  # (b,)
        loss = w * ce_sum / n_target if self.weighting == "elbo" else w * per_masked
        return {"loss": loss, "ce": per_masked, "mask_frac": n_masked / n_target}


def masked_cross_entropy_sum(model, h: torch.Tensor, ids: torch.Tensor, where: torch.Tensor):
    """Sum per example of the tied-head CE at positions ``where`` (only those go through the head),
    and their count: ``(b,)``, ``(b,)``."""
    keep = where.bool()  # (b, l)
    ce = model.token_cross_entropy(h[keep], ids[keep])  # (N,)
    rows = torch.arange(h.shape[0], device=h.device).unsqueeze(1).expand_as(keep)[keep]  # (N,)
    total = ce.new_zeros(h.shape[0]).index_add(0, rows, ce)  # (b,)
    return total, keep.sum(-1).to(ce.dtype)


# ---------------------------------------------------------------------- sampler
def commit_counts(n_target: torch.Tensor, k: int, steps: int) -> torch.Tensor:
    """Target positions holding tokens after step k (K..1): ``round(n_target * (K - k + 1) / K)``; all at k = 1."""
    return torch.div(n_target * (steps - k + 1) * 2 + steps, 2 * steps, rounding_mode="floor")  # (b,)


def top_per_row(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``(b, l)`` bool: the ``counts[i]`` highest scores of row i (ties: lower position first)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (b, l)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))  # (b, l)
    return rank < counts[:, None]


@torch.no_grad()
def sample_masked(diffusion: MaskedDiffusion, model, input_ids: torch.Tensor, input_mask: torch.Tensor, *,
                  steps: int, temperature: float = 0.0, remask: bool = False,
                  forbid_adjacent_repeat: bool = False, forbid_repeat_bigram: bool = False,
                  forbidden_ids: Sequence[int] = (), special_ids: Sequence[int] = (), self_condition: bool = False,
                  top_k: int = 0, end_ids: Sequence[int] = (), end_bias: float = 0.0, end_defer: float = 0.0,
                  predict_length: bool = False, length_offset: torch.Tensor | None = None,
                  generator: torch.Generator | None = None,
                  attention_mask: torch.Tensor | None = None) -> MaskedSampleOutput:
    """K-step confidence-ordered unmasking of the target positions (see the module docstring).

    ``forbidden_ids``: tokens never proposed ([MASK] always is); ``special_ids``: tokens exempt from
    ``forbid_adjacent_repeat`` and ``forbid_repeat_bigram`` ([PAD], [SEP] may repeat; pairs holding one
    are never banned). Proposals committed in the same step are not checked against each other's pairs
    (a step commits about n_target / K tokens, more when ``remask`` drops some). ``self_condition``:
    feed each step's network output into the next step. ``top_k``: draws at ``temperature > 0`` come from the k most likely tokens
    only (0: the whole vocabulary). ``end_ids`` ([SEP], [PAD]: the tokens that end the text) get
    ``end_bias`` added to their logits (negative: longer outputs), and a proposal of one of them commits
    with its confidence lowered by ``end_defer``, so the words are placed before the end is.
    ``predict_length`` (``end_ids = (end-of-text, padding)``, i.e. ([SEP], [PAD])): the first step fixes each
    row's length at ``n = round(sum_i P(x_i not an end token))`` over its target positions (after
    ``end_bias``); the n-th target position gets end-of-text, later ones padding, and the first n hold
    words only. ``length_offset (b,)`` (long) moves each row's n before it is clamped to
    ``[1, n_target - 1]``; a ``(b, B)`` offset decodes every row B times, its n moved by each of its B
    offsets, and returns b * B rows (row i's copies together, i * B + j): the first step, which fixes
    the lengths, runs once per row (`sample_length_beam`).
    Deterministic given ``generator`` (used only when ``temperature > 0``).
    """
    check_ids_and_mask(input_ids, input_mask, attention_mask, "sample_masked")
    if int(steps) < 1:
        raise ValueError(f"sample_masked: steps must be >= 1, got {steps}")
    if temperature < 0:
        raise ValueError(f"sample_masked: temperature must be >= 0, got {temperature}")
    if predict_length and len(end_ids) != 2:
        raise ValueError(f"sample_masked: predict_length needs end_ids = (end-of-text, padding), got {end_ids!r}")
    if top_k != 0 and top_k < 3:  # 3: a position and a resolve round ban at most 2 neighbour tokens
        raise ValueError(f"sample_masked: top_k must be 0 (all tokens) or >= 3, got {top_k}")
    if length_offset is not None and not predict_length:
        raise ValueError("sample_masked: length_offset needs predict_length")
    if length_offset is not None and (length_offset.dim() not in (1, 2) or length_offset.shape[0] != input_ids.shape[0]
                                      or length_offset.dim() == 2 and length_offset.shape[1] < 1):
        raise ValueError(f"sample_masked: length_offset must have shape (b,) or (b, B) with b = {input_ids.shape[0]}, "
                         f"got {tuple(length_offset.shape)}")
    steps = int(steps)
    device = input_ids.device
    target = input_mask.bool()  # (b, l)
    b, l = input_ids.shape
    mask_id = diffusion.mask_id
    x = torch.where(target, torch.full_like(input_ids, mask_id), input_ids)  # (b, l)
    committed = torch.zeros_like(target)  # (b, l) target positions that hold a token
    confidence = torch.full((b, l), -torch.inf, device=device)  # (b, l) log-prob a token was committed with
    committed_at = torch.zeros_like(input_ids)  # (b, l)
    n_target = target.sum(-1)  # (b,)
    n_free = n_target  # (b,) target positions the steps unmask (all of them unless predict_length fixes ends)
    banned = torch.tensor(sorted({mask_id, *map(int, forbidden_ids)}), device=device, dtype=torch.long)
    exempt = torch.tensor(sorted(set(map(int, special_ids))), device=device, dtype=torch.long)
    ends = torch.tensor(sorted(set(map(int, end_ids))), device=device, dtype=torch.long)

    def confidence_of(rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Commit priority ``(P,)`` of proposing ``tokens (P,)`` at logits rows ``rows (P,)``: the
        log-probability, less ``end_defer`` for end tokens."""
        logp = logits[rows, tokens] - lse[rows]  # (P,)
        return logp - end_defer * torch.isin(tokens, ends) if end_defer else logp

    self_cond = None
    every_row = remask or self_condition  # rows that commit nothing still change (remask) or feed the next step
    for k in range(steps, 0, -1):
        t = torch.full((b,), diffusion.timestep_for_rate(k / steps), dtype=torch.long, device=device)  # (b,)
        want = commit_counts(n_free, k, steps) + (n_target - n_free)  # (b,) positions holding tokens after step k
        # a row whose count does not grow at step k keeps its tokens whatever the network says: skip it
        first_of_length = predict_length and k == steps  # every row: this step fixes the lengths
        active = (torch.ones_like(target[:, 0]) if every_row or first_of_length
                  else want > committed.sum(-1))  # (b,) bool
        if not bool(active.any()):
            continue
        rows_active = active.nonzero(as_tuple=True)[0]  # (b_a,)
        pick = (lambda v: v) if len(rows_active) == b else (lambda v: None if v is None else v[rows_active])
        h = model(model.embed(pick(x)), pick(t), mask=pick(attention_mask), self_cond=self_cond)  # (b_a, l, e)
        if self_condition:
            self_cond = h
        hidden = h[target] if first_of_length else h[pick(target & ~committed)]  # (N, e) the open positions
        if first_of_length:  # nothing is committed yet: every target position is open
            target_logits = model.logits(hidden).float()  # (N_t, v) once, for the length and the proposals
            target_logits[:, banned] = -torch.inf
            position_row = torch.full((b, l), -1, dtype=torch.long, device=device)  # (b, l) row in target_logits
            position_row[target] = torch.arange(target_logits.shape[0], device=device)
            n = predicted_length(target_logits, target, end_ids, end_bias)  # (b,)
            if length_offset is not None and length_offset.dim() == 2:  # B copies of every row from here on
                copies = length_offset.shape[1]
                expand = lambda v: None if v is None else v.repeat_interleave(copies, dim=0)  # noqa: E731
                x, target, position_row = expand(x), expand(target), expand(position_row)  # (b * B, l)
                confidence, committed_at, n_target = expand(confidence), expand(committed_at), expand(n_target)
                attention_mask, self_cond, n = expand(attention_mask), expand(self_cond), expand(n)
                b = b * copies
                active = torch.ones_like(target[:, 0])  # (b * B,) every copy takes this step's proposals
            if length_offset is not None:
                n = n + length_offset.reshape(-1).to(n)  # (b,) row i's copies together, i * B + j
            fixed = length_ends(target, n, end_ids)  # (b, l)
            x = torch.where(fixed >= 0, fixed, x)
            committed = fixed >= 0
            confidence = torch.where(committed, torch.full_like(confidence, torch.inf), confidence)  # never remasked
            committed_at = torch.where(committed, torch.full_like(committed_at, k), committed_at)
            n_free = n_target - committed.sum(-1)
            want = commit_counts(n_free, k, steps) + (n_target - n_free)
            logits = target_logits[position_row[target & ~committed]]  # (N, v) the open positions', in open_pos order
        else:
            logits = model.logits(hidden).float()  # (N, v)
            logits[:, banned] = -torch.inf
        open_pos = target & ~committed & active[:, None]  # (b, l) positions that got a proposal
        if predict_length:  # the open positions are the words
            logits[:, ends] = -torch.inf
        elif end_bias and ends.numel():
            logits[:, ends] += end_bias
        lse = torch.logsumexp(logits, dim=-1)  # (N,) log p(token) = logit - lse
        if temperature > 0:  # Gumbel-max: argmax of the perturbed scores is a draw at this temperature
            perturbed = gumbel_perturbed(logits, temperature, top_k, generator)  # (N, v)
        else:  # argmax of the logits; the bans below never touch a chosen token's logit
            perturbed = logits
        if forbid_adjacent_repeat:
            ban_neighbour_tokens(perturbed, x, committed, open_pos, exempt)
        if forbid_repeat_bigram:
            ban_repeated_bigrams(perturbed, x, committed, open_pos, exempt)
        proposal = perturbed.argmax(-1)  # (N,)
        rows_n = torch.arange(proposal.shape[0], device=device)  # (N,)
        scores = torch.full((b, l), -torch.inf, device=device)  # (b, l)
        scores[open_pos] = confidence_of(rows_n, proposal)
        if remask:  # committed tokens compete again with the confidence they were committed with
            candidates = torch.where(committed, confidence, scores)  # (b, l)
            keep = top_per_row(candidates, want) & target  # (b, l)
        else:
            keep = committed | (top_per_row(scores, want - committed.sum(-1)) & open_pos)  # (b, l)
        dropped = committed & ~keep  # (b, l) remasked
        x = torch.where(dropped, torch.full_like(x, mask_id), x)
        confidence = torch.where(dropped, torch.full_like(confidence, -torch.inf), confidence)
        new = keep & ~committed  # (b, l)
        tokens = torch.full_like(x, mask_id)  # (b, l)
        tokens[open_pos] = proposal
        if forbid_adjacent_repeat:
            tokens, scores = resolve_adjacent_repeats(tokens, scores, new, x, keep & committed, open_pos,
                                                      perturbed, confidence_of, exempt)
        x = torch.where(new, tokens, x)
        confidence = torch.where(new, scores, confidence)
        committed_at = torch.where(new, torch.full_like(committed_at, k), committed_at)
        committed = keep
    words = target & torch.isfinite(confidence)  # (b, l) generated words (fixed ends hold +inf)
    n_words = words.sum(-1)  # (b,)
    word_log_prob = torch.where(words, confidence, torch.zeros_like(confidence)).sum(-1) / n_words.clamp_min(1)
    word_log_prob = torch.where(n_words > 0, word_log_prob, torch.full_like(word_log_prob, -torch.inf))  # (b,)
    return MaskedSampleOutput(x, committed_at, word_log_prob)


def beam_length_offsets(beam: int) -> torch.Tensor:
    """``(beam,)`` long: the length offsets of a length beam, nearest first: 0, -1, +1, -2, +2, ..."""
    j = torch.arange(beam)
    return (j + 1) // 2 * torch.where(j % 2 == 1, -1, 1)


def sample_length_beam(diffusion: MaskedDiffusion, model, input_ids: torch.Tensor, input_mask: torch.Tensor, *,
                       length_beam: int, attention_mask: torch.Tensor | None = None, avoid_copy: bool = False,
                       **sampler) -> MaskedSampleOutput:
    """`sample_masked` with ``predict_length`` on ``length_beam`` copies of every row, the predicted
    length moved by `beam_length_offsets`; per row the copy with the highest ``word_log_prob`` is
    returned (ties: the smaller offset); with ``avoid_copy``, candidates at a moved length (offset != 0)
    that `copy_the_source` rank below all others. ``sampler``: the other `sample_masked` keywords.
    One length (``length_beam`` 1) is `sample_masked` itself."""
    if isinstance(length_beam, bool) or not isinstance(length_beam, int) or length_beam < 1:
        raise ValueError(f"sample_length_beam: length_beam must be an int >= 1, got {length_beam!r}")
    b, beam = input_ids.shape[0], length_beam
    offsets = beam_length_offsets(beam).to(input_ids.device).expand(b, beam)  # (b, B)
    out = sample_masked(diffusion, model, input_ids, input_mask, predict_length=True, length_offset=offsets,
                        attention_mask=attention_mask, **sampler)  # b * B rows, row i's copies together
    score = out.word_log_prob.view(b, beam)  # (b, B)
    if avoid_copy:  # a copy at a moved length keeps its order among such copies, behind everything else
        copies = copy_the_source(out.token_ids, input_mask.repeat_interleave(beam, dim=0),
                                 sampler.get("special_ids", ())).view(b, beam)  # (b, B)
        moved = offsets != 0  # (b, B)
        score = torch.where(copies & moved, score - 1e9, score)
    best = score.argmax(-1)  # (b,) first maximum: the nearest length wins ties
    pick = torch.arange(b, device=input_ids.device) * beam + best  # (b,) rows of the copies
    return MaskedSampleOutput(out.token_ids[pick], out.committed_at[pick], out.word_log_prob[pick])


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
            nb_tok = _shift(tokens, offset, -1)  # (b, l) the neighbour's proposal
            nb_pending = _shift(pending.long(), offset, 0).bool()
            nb_score = _shift(scores, offset, -torch.inf)
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


def _shift(t: torch.Tensor, offset: int, fill) -> torch.Tensor:
    """``out[:, i] = t[:, i + offset]`` (``fill`` outside): the neighbour at ``offset`` of every position."""
    out = torch.full_like(t, fill)
    if offset < 0:
        out[:, -offset:] = t[:, :offset]
    else:
        out[:, :-offset] = t[:, offset:]
    return out
