"""The masked (absorbing-state) sampler: confidence-ordered unmasking of the target, with its length beam.

Glossary: b batch, l length, e embedding width, v vocab, K sampling steps, N open positions (one logits
row each), B length-beam width.

`MaskedSampler`: all target positions start as [MASK]; step ``k = K .. 1`` runs the
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

Length beam (``length_beam`` B, with ``predict_length``; Mask-Predict's length beam,
Ghazvininejad et al. 2019): every row is decoded B times, with the predicted length n moved by 0, -1, +1, -2, +2, ...,
and the candidate whose words have the highest mean log-probability (at the step that committed
them) is kept. A length guessed one word too long is filled with a repeated phrase at low
confidence; the shorter candidate wins then. A verbatim copy of the source is often the most
confident candidate; with ``beam_avoid_copy`` the beam never moves to one: candidates at a moved length
whose words repeat the source's word for word (special tokens aside) rank below every other candidate,
so an output is a copy only where the predicted length itself gave one (or every length did). With
``beam_avoid_repeat``, candidates that repeat a word pair rank below all others: a phrase repeated to
fill the slots says that length is wrong. The
first step, which predicts the length from the all-[MASK] target, is the same for every candidate:
it runs once per row, and the row is copied B times after it.

Pieces: `prepare` places [MASK] on the target and, with ``predict_length``, runs the first network call
once per row, fixes each row's length and copies the row B times (the beam); every `step` then
proposes (`propose`: draws, end-token handling, bans) and commits (`commit`); `finish` picks the
beam's best copy per row. The per-step rules live in ``token_rules.py``.

Guidance (``guidance`` w > 0, for a model trained with ``diffusion.source_dropout``): each network call
also runs the rows with their source words masked, and the proposals and their confidences come from
``(1 + w) log p(. | source) - w log p(. | no source)`` (``diffusion/masked.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Sequence

import torch

from ...options import Options, option
from ..masked import MaskedDiffusion, without_source
from ..process import check_ids_and_mask
from .base import Sampler
from .token_rules import (ban_neighbour_tokens, ban_repeated_bigrams, beam_length_offsets, commit_counts,
                          copy_the_source, favour_source_words, gumbel_perturbed, length_ends, predicted_length,
                          repeats_a_word_pair, resolve_adjacent_repeats, top_per_row)


@dataclass
class MaskedSamplerConfig(Options):
    """``sample.masked``: the sampler of ``diffusion.process: masked``."""

    prefix = "sample.masked."
    steps: int = option(20, "Confidence-ordered unmasking steps K.", minimum=1)
    temperature: float = option(0.0, "Token draw temperature (0: argmax, then every sample is the same: MBR over "
                                     "samples needs > 0).", minimum=0.0)
    top_k: int = option(0, "Draws at temperature > 0 come from the k most likely tokens (0: all; else >= 3).",
                        minimum=0)
    remask: bool = option(False, "Committed tokens compete again with new proposals, by the confidence they were "
                                 "committed with (RDM); losers go back to [MASK].")
    forbid_adjacent_repeat: bool = option(False, "A position never proposes a (non-special) token its committed "
                                                 "neighbour holds.", off_flag="allow-adjacent-repeat")
    forbid_repeat_bigram: bool = option(False, "No (non-special) word pair twice in an output (\"origin of origin "
                                               "of\").", off_flag="allow-repeat-bigram")
    end_bias: float = option(0.0, "Added to the logits of the end tokens [SEP] / [PAD] (negative: longer outputs).")
    end_defer: float = option(0.0, "Lowers the commit confidence of an end-token proposal, so words are placed "
                                   "before the end is.", minimum=0.0)
    predict_length: bool = option(False, "The first step fixes each output's length (then no [PAD] among the "
                                         "words).")
    length_beam: int = option(1, "With predict_length: lengths tried per sample (n, n-1, n+1, ...); the one whose "
                                 "words have the highest mean log-probability is kept (Mask-Predict).", minimum=1)
    beam_avoid_copy: bool = option(False, "The length beam never moves to a verbatim copy of the source (it keeps "
                                          "one only where the predicted length gave it).", off_flag="beam-allow-copy")
    beam_avoid_repeat: bool = option(False, "The length beam keeps a candidate that repeats a word pair (\"sex with "
                                            "sex with\") only where every length does: a phrase repeated to fill the "
                                            "slots says the length is wrong.", off_flag="beam-allow-repeat")
    source_bonus: float = option(0.0, "Added to the logits of the words the row's source holds before proposals "
                                      "and confidences are taken: a prior that a paraphrase keeps most of its "
                                      "source's words (0: none).")
    guidance: float = option(0.0, "Classifier-free guidance weight w on the source: (1 + w) log p(.|source) - w "
                                  "log p(.|no source), at twice the network cost; needs a model trained with "
                                  "diffusion.source_dropout > 0.", minimum=0.0)

    def check(self) -> None:
        if self.top_k != 0 and self.top_k < 3:  # 3: a position and a resolve round ban at most 2 neighbour tokens
            raise ValueError(f"{self.prefix}top_k must be 0 (all tokens) or >= 3, got {self.top_k}")
        if self.length_beam > 1 and not self.predict_length:
            raise ValueError(f"{self.prefix}length_beam {self.length_beam} needs {self.prefix}predict_length: true "
                             "(the lengths it tries are moved from the predicted one)")


@dataclass(frozen=True)
class MaskedTokens:
    """The token ids the sampler treats specially: ``forbidden`` are never proposed ([MASK] never is);
    ``special`` are exempt from the repeat bans; ``ends`` = (end-of-text, padding) decide the length."""

    forbidden: tuple[int, ...] = ()
    special: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()

    @classmethod
    def from_tokenizer(cls, tok) -> MaskedTokens:
        return cls((tok.unk_id,), (tok.pad_id, tok.sep_id, tok.cls_id), (tok.sep_id, tok.pad_id))


class MaskedSampleOutput(NamedTuple):
    token_ids: torch.Tensor  # (b, l) source as given, target positions generated
    committed_at: torch.Tensor  # (b, l) long: the step k (K..1) that committed the final token; 0 on the source
    word_log_prob: torch.Tensor  # (b,) mean log-probability the generated words were committed with (the
    # positions predict_length fixes to end tokens excluded; -inf for a row without words)


@dataclass
class MaskedState:
    """Where the masked sampler is; every ``(b, l)`` tensor has b * B rows once a beam is expanded."""

    x: torch.Tensor  # (b, l) current tokens ([MASK] where open)
    target: torch.Tensor  # (b, l) bool, True where generated
    input_mask: torch.Tensor  # (b0, l) as given (before any beam expansion)
    committed: torch.Tensor  # (b, l) bool target positions that hold a token
    confidence: torch.Tensor  # (b, l) log-prob a token was committed with (+inf: fixed end tokens)
    committed_at: torch.Tensor  # (b, l) long
    n_target: torch.Tensor  # (b,)
    n_free: torch.Tensor  # (b,) target positions the steps unmask (all unless predict_length fixed ends)
    attention_mask: torch.Tensor | None
    generator: torch.Generator | None
    k: int  # the next step (K..1); 0 when done
    self_cond: torch.Tensor | None = None  # (b, l, e) the last network output (self-conditioning)
    first_logits: torch.Tensor | None = None  # (N_t, v) the first step's target logits, not yet used
    position_row: torch.Tensor | None = None  # (b, l) row of each target position in first_logits
    length_offset: torch.Tensor | None = None  # (b0,) or (b0, B) offsets the lengths were moved by


class MaskedSampler(Sampler):
    """K-step confidence-ordered unmasking (see the module docstring); deterministic given the generator
    (used only when ``temperature > 0``). ``self_condition``: feed each step's network output into the next."""

    name = "masked"

    def __init__(self, diffusion: MaskedDiffusion, config: MaskedSamplerConfig, tokens: MaskedTokens = MaskedTokens(),
                 self_condition: bool = False):
        if config.predict_length and len(tokens.ends) != 2:
            raise ValueError(f"masked sampler: predict_length needs end tokens (end-of-text, padding), "
                             f"got {tokens.ends!r}")
        self.diffusion, self.config, self.tokens = diffusion, config, tokens
        self.self_condition = bool(self_condition)
        # rows that commit nothing still change (remask) or feed the next step (self-conditioning)
        self.every_row = config.remask or self.self_condition

    @property
    def num_steps(self) -> int:
        return self.config.steps

    def _ids(self, values: Sequence[int], device) -> torch.Tensor:
        return torch.tensor(sorted(set(map(int, values))), device=device, dtype=torch.long)

    def prepare(self, model, input_ids, input_mask, generator=None, attention_mask=None,
                length_offset: torch.Tensor | None = None) -> MaskedState:
        """[MASK] on the target. With ``predict_length``, also the first network call and the lengths
        (`fix_lengths`). ``length_offset`` ``(b,)`` moves each predicted length; ``(b, B)`` decodes every
        row B times (row i's copies together, i * B + j); default: the beam's offsets when
        ``length_beam`` > 1."""
        check_ids_and_mask(input_ids, input_mask, attention_mask, "masked sampler")
        cfg = self.config
        if length_offset is None and cfg.length_beam > 1:
            length_offset = beam_length_offsets(cfg.length_beam).to(input_ids.device).expand(
                input_ids.shape[0], cfg.length_beam)  # (b, B)
        if length_offset is not None and not cfg.predict_length:
            raise ValueError("masked sampler: length_offset needs predict_length")
        if length_offset is not None and (length_offset.dim() not in (1, 2) or length_offset.shape[0] != input_ids.shape[0]
                                          or length_offset.dim() == 2 and length_offset.shape[1] < 1):
            raise ValueError(f"masked sampler: length_offset must have shape (b,) or (b, B) with b = "
                             f"{input_ids.shape[0]}, got {tuple(length_offset.shape)}")
        target = input_mask.bool()  # (b, l)
        b, l = input_ids.shape
        x = torch.where(target, torch.full_like(input_ids, self.diffusion.mask_id), input_ids)  # (b, l)
        n_target = target.sum(-1)  # (b,)
        state = MaskedState(x, target, input_mask, torch.zeros_like(target),
                            torch.full((b, l), -torch.inf, device=input_ids.device), torch.zeros_like(input_ids),
                            n_target, n_target, attention_mask, generator, cfg.steps, length_offset=length_offset)
        if cfg.predict_length:
            self.fix_lengths(model, state)
        return state

    def network_logits(self, model, state: MaskedState, k: int, rows: torch.Tensor | None, positions: torch.Tensor):
        """Float logits ``(N, v)`` at ``positions (b, l)`` of the network run on ``rows`` (None: all) at
        step ``k``; banned tokens at -inf."""
        t = torch.full((state.x.shape[0],), self.diffusion.timestep_for_rate(k / self.config.steps), dtype=torch.long,
                       device=state.x.device)  # (b,)
        pick = (lambda v: v) if rows is None else (lambda v: None if v is None else v[rows])  # noqa: E731
        x, mask, self_cond = pick(state.x), pick(state.attention_mask), state.self_cond  # (b_a, l), ...
        w = self.config.guidance
        if w:  # the unconditional rows after the conditional ones: one network call for both
            null = without_source(x, pick(state.target), self.diffusion.mask_id,
                                  self._ids(self.tokens.special, x.device))  # (b_a, l)
            twice = lambda v: None if v is None else torch.cat([v, v])  # noqa: E731
            x, t, mask, self_cond = torch.cat([x, null]), twice(pick(t)), twice(mask), twice(self_cond)
        else:
            t = pick(t)
        h = model(model.embed(x), t, mask=mask, self_cond=self_cond)  # (b_a or 2 b_a, l, e)
        at = pick(positions)  # (b_a, l) bool
        logits = model.logits(h[:at.shape[0]][at]).float()  # (N, v)
        if w:
            unconditional = model.logits(h[at.shape[0]:][at]).float()  # (N, v)
            logits = (1 + w) * logits.log_softmax(-1) - w * unconditional.log_softmax(-1)
            h = h[:at.shape[0]]
        if self.self_condition:
            state.self_cond = h
        logits[:, self._ids((self.diffusion.mask_id, *self.tokens.forbidden), logits.device)] = -torch.inf
        return logits

    def fix_lengths(self, model, state: MaskedState) -> None:
        """The first step's network call (every target position open), each row's length from it, the
        beam's row copies, and the end tokens placed; the logits wait in ``state`` for the first step."""
        target = state.target
        b, l = target.shape
        logits = self.network_logits(model, state, state.k, None, target)  # (N_t, v) once: the length and the proposals
        position_row = torch.full((b, l), -1, dtype=torch.long, device=target.device)  # (b, l) row in logits
        position_row[target] = torch.arange(logits.shape[0], device=target.device)
        n = predicted_length(logits, target, self.tokens.ends, self.config.end_bias)  # (b,)
        offset = state.length_offset
        if offset is not None and offset.dim() == 2:  # B copies of every row from here on
            expand = lambda v: None if v is None else v.repeat_interleave(offset.shape[1], dim=0)  # noqa: E731
            for name in ("x", "target", "confidence", "committed_at", "n_target", "attention_mask", "self_cond"):
                setattr(state, name, expand(getattr(state, name)))  # (b * B, ...)
            position_row, n = expand(position_row), expand(n)
        if offset is not None:
            n = n + offset.reshape(-1).to(n)  # (b,) row i's copies together, i * B + j
        fixed = length_ends(state.target, n, self.tokens.ends)  # (b, l)
        state.x = torch.where(fixed >= 0, fixed, state.x)
        state.committed = fixed >= 0
        state.confidence = torch.where(state.committed, torch.full_like(state.confidence, torch.inf),
                                       state.confidence)  # never remasked
        state.committed_at = torch.where(state.committed, torch.full_like(state.committed_at, state.k),
                                         state.committed_at)
        state.n_free = state.n_target - state.committed.sum(-1)
        state.first_logits, state.position_row = logits, position_row

    def done(self, state: MaskedState) -> bool:
        return state.k < 1

    def step(self, model, state: MaskedState) -> None:
        """Step k: the rows whose committed count grows run the network (all rows with remask,
        self-conditioning or the first step's logits waiting), propose, and commit."""
        k, steps = state.k, self.config.steps
        want = commit_counts(state.n_free, k, steps) + (state.n_target - state.n_free)  # (b,) held after step k
        state.k -= 1
        first = state.first_logits is not None
        active = (torch.ones_like(state.target[:, 0]) if self.every_row or first
                  else want > state.committed.sum(-1))  # (b,) bool
        if not bool(active.any()):  # a row whose count does not grow keeps its tokens whatever the network says
            return
        open_pos = state.target & ~state.committed & active[:, None]  # (b, l) positions that get a proposal
        if first:
            logits = state.first_logits[state.position_row[state.target & ~state.committed]]  # (N, v)
            state.first_logits = state.position_row = None
        else:
            rows = active.nonzero(as_tuple=True)[0]  # (b_a,)
            logits = self.network_logits(model, state, k, None if len(rows) == active.shape[0] else rows,
                                         state.target & ~state.committed)  # (N, v)
        self.commit(state, k, want, open_pos, logits, *self.propose(state, open_pos, logits))

    def propose(self, state: MaskedState, open_pos: torch.Tensor, logits: torch.Tensor):
        """``(perturbed (N, v), proposal (N,), priority)``: the scores the proposals are the argmax of
        (Gumbel-perturbed at temperature > 0; bans at -inf), the proposals, and ``priority(rows, tokens)``
        (their commit confidence: log-probability, less ``end_defer`` for end tokens). Edits ``logits``."""
        cfg = self.config
        ends = self._ids(self.tokens.ends, logits.device)
        if cfg.predict_length:  # the open positions are the words
            logits[:, ends] = -torch.inf
        elif cfg.end_bias and ends.numel():
            logits[:, ends] += cfg.end_bias
        if cfg.source_bonus:
            favour_source_words(logits, state.x, state.target, open_pos, self._ids(self.tokens.special, logits.device),
                                cfg.source_bonus)
        lse = torch.logsumexp(logits, dim=-1)  # (N,) log p(token) = logit - lse
        if cfg.temperature > 0:  # Gumbel-max: argmax of the perturbed scores is a draw at this temperature
            perturbed = gumbel_perturbed(logits, cfg.temperature, cfg.top_k, state.generator)  # (N, v)
        else:  # argmax of the logits; the bans below never touch a chosen token's logit
            perturbed = logits
        exempt = self._ids(self.tokens.special, logits.device)
        if cfg.forbid_adjacent_repeat:
            ban_neighbour_tokens(perturbed, state.x, state.committed, open_pos, exempt)
        if cfg.forbid_repeat_bigram:
            ban_repeated_bigrams(perturbed, state.x, state.committed, open_pos, exempt)
        return perturbed, perturbed.argmax(-1), partial(commit_priority, logits, lse, ends, cfg.end_defer)

    def commit(self, state: MaskedState, k: int, want: torch.Tensor, open_pos: torch.Tensor, logits: torch.Tensor,
               perturbed: torch.Tensor, proposal: torch.Tensor, priority) -> None:
        """Keep the most confident proposals so that ``want (b,)`` positions hold tokens (with ``remask``
        the committed tokens compete again), resolve adjacent repeats among the new ones, and write them."""
        x, committed = state.x, state.committed
        scores = torch.full(x.shape, -torch.inf, device=x.device)  # (b, l)
        scores[open_pos] = priority(torch.arange(proposal.shape[0], device=x.device), proposal)
        if self.config.remask:  # committed tokens compete again with the confidence they were committed with
            keep = top_per_row(torch.where(committed, state.confidence, scores), want) & state.target  # (b, l)
        else:
            keep = committed | (top_per_row(scores, want - committed.sum(-1)) & open_pos)  # (b, l)
        dropped = committed & ~keep  # (b, l) remasked
        x = torch.where(dropped, torch.full_like(x, self.diffusion.mask_id), x)
        confidence = torch.where(dropped, torch.full_like(state.confidence, -torch.inf), state.confidence)
        new = keep & ~committed  # (b, l)
        tokens = torch.full_like(x, self.diffusion.mask_id)  # (b, l)
        tokens[open_pos] = proposal
        if self.config.forbid_adjacent_repeat:
            tokens, scores = resolve_adjacent_repeats(tokens, scores, new, x, keep & committed, open_pos, perturbed,
                                                      priority, self._ids(self.tokens.special, x.device))
        state.x = torch.where(new, tokens, x)
        state.confidence = torch.where(new, scores, confidence)
        state.committed_at = torch.where(new, torch.full_like(state.committed_at, k), state.committed_at)
        state.committed = keep

    def decoded(self, state: MaskedState) -> MaskedSampleOutput:
        """Every decoded row (b * B with a beam), with the mean log-probability of its words."""
        words = state.target & torch.isfinite(state.confidence)  # (b, l) generated words (fixed ends hold +inf)
        n_words = words.sum(-1)  # (b,)
        word_log_prob = (torch.where(words, state.confidence, torch.zeros_like(state.confidence)).sum(-1)
                         / n_words.clamp_min(1))  # (b,)
        word_log_prob = torch.where(n_words > 0, word_log_prob, torch.full_like(word_log_prob, -torch.inf))
        return MaskedSampleOutput(state.x, state.committed_at, word_log_prob)

    def finish(self, model, state: MaskedState) -> MaskedSampleOutput:
        """The decoded rows; with ``length_beam`` > 1, per row the copy with the highest ``word_log_prob``
        (ties: the smaller offset), copies of the source at a moved length last with ``beam_avoid_copy``."""
        out = self.decoded(state)
        offsets = state.length_offset
        if self.config.length_beam == 1 or offsets is None or offsets.dim() != 2:
            return out
        b, beam = offsets.shape
        score = out.word_log_prob.view(b, beam)  # (b, B)
        if self.config.beam_avoid_copy:  # a copy at a moved length keeps its order among such copies, last
            copies = copy_the_source(out.token_ids, state.input_mask.repeat_interleave(beam, dim=0),
                                     self.tokens.special).view(b, beam)  # (b, B)
            score = torch.where(copies & (offsets != 0), score - 1e9, score)
        if self.config.beam_avoid_repeat:  # below every candidate without a repeated pair (and a moved copy)
            repeats = repeats_a_word_pair(out.token_ids, state.target, self.tokens.special).view(b, beam)  # (b, B)
            score = torch.where(repeats, score - 2e9, score)
        pick = torch.arange(b, device=score.device) * beam + score.argmax(-1)  # (b,) first maximum wins ties
        return MaskedSampleOutput(out.token_ids[pick], out.committed_at[pick], out.word_log_prob[pick])

    def decode_all(self, model, input_ids, input_mask, generator=None, attention_mask=None,
                   length_offset: torch.Tensor | None = None) -> MaskedSampleOutput:
        """Every decoded row for explicit ``length_offset`` (see `prepare`): b * B rows for a (b, B) offset."""
        with torch.no_grad():
            state = self.prepare(model, input_ids, input_mask, generator, attention_mask, length_offset)
            self.run(model, state)
            return self.decoded(state)


def commit_priority(logits: torch.Tensor, lse: torch.Tensor, ends: torch.Tensor, end_defer: float,
                    rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Commit priority ``(P,)`` of proposing ``tokens (P,)`` at ``logits (N, v)`` rows ``rows (P,)``: the
    log-probability (``lse (N,)`` the rows' logsumexp), less ``end_defer`` for end tokens."""
    logp = logits[rows, tokens] - lse[rows]  # (P,)
    return logp - end_defer * torch.isin(tokens, ends) if end_defer else logp
