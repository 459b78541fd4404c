"""Masked (absorbing-state) diffusion: forward process, weighted loss, confidence-ordered sampler."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mambadiff.diffusion.masked import MaskedDiffusion
from mambadiff.diffusion.samplers import MaskedSampler, MaskedSamplerConfig, MaskedTokens
from mambadiff.diffusion.samplers.token_rules import ban_repeated_bigrams, commit_counts, copy_the_source, top_per_row

MASK = 4
V, E = 30, 8


def sample_masked(d, model, ids, mask, *, forbidden_ids=(), special_ids=(), end_ids=(), self_condition=False,
                  generator=None, length_offset=None, **config):
    """`MaskedSampler` in one call, config from ``config`` and token roles from the id keywords; with
    ``length_offset``, every decoded row (b * B rows for a (b, B) offset)."""
    tokens = MaskedTokens(tuple(forbidden_ids), tuple(special_ids), tuple(end_ids))
    sampler = MaskedSampler(d, MaskedSamplerConfig(**config), tokens, self_condition)
    return sampler.decode_all(model, ids, mask, generator, length_offset=length_offset)


def sample_length_beam(d, model, ids, mask, *, length_beam, avoid_copy=False, **kw):
    """The length beam: `MaskedSampler` with predict_length and ``length_beam``, one output row per row."""
    tokens = MaskedTokens(tuple(kw.pop("forbidden_ids", ())), tuple(kw.pop("special_ids", ())),
                          tuple(kw.pop("end_ids", ())))
    generator, self_condition = kw.pop("generator", None), kw.pop("self_condition", False)
    config = MaskedSamplerConfig(predict_length=True, length_beam=length_beam, beam_avoid_copy=avoid_copy, **kw)
    return MaskedSampler(d, config, tokens, self_condition).sample(model, ids, mask, generator)


class TableModel(nn.Module):
    """A stand-in denoiser: its output at position i is a fixed row (no dependence on the input), so
    confidences are known in advance; records every call's ``self_cond``."""

    def __init__(self, l, seed=0, scale=3.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb_dim = E
        self.weight = nn.Parameter(torch.randn(V, E, generator=g))
        self.out = nn.Parameter(scale * torch.randn(l, E, generator=g))
        self.calls = []

    def embed(self, ids):
        return self.weight[ids]

    def forward(self, x, t, mask=None, self_cond=None):
        self.calls.append(self_cond)
        return self.out.expand(x.shape[0], -1, -1) + 0.0 * x

    def logits(self, h):
        return h @ self.weight.t()

    def token_cross_entropy(self, h, ids):
        return F.cross_entropy(self.logits(h), ids, reduction="none")


def batch(b=3, l=12, src=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (b, l), generator=g)
    mask = torch.zeros(b, l, dtype=torch.long)
    mask[:, src:] = 1
    return ids, mask


def test_source_never_masked_and_rate_follows_t():
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=400, l=20, src=6)
    for t_val in (0, 30, 99):
        t = torch.full((400,), t_val)
        x_t, masked = d.q_sample(ids, mask, t, torch.Generator().manual_seed(t_val))
        assert torch.equal(x_t[:, :6], ids[:, :6]) and not masked[:, :6].any()
        assert torch.equal(x_t == MASK, masked)
        frac = masked[:, 6:].double().mean().item()
        assert abs(frac - (t_val + 1) / 100) < 0.01  # 5,600 draws: 4 sigma of the binomial < 0.01
    assert masked[:, 6:].all()  # t = T - 1 masks every target token


def test_loss_only_on_masked_target_positions():
    d = MaskedDiffusion(50, MASK, "uniform")
    ids, mask = batch()
    model = TableModel(ids.shape[1])
    t = torch.tensor([10, 25, 40])
    x_t, masked = d.q_sample(ids, mask, t, torch.Generator().manual_seed(7))
    loss = d.training_losses(model, ids, mask, t, generator=torch.Generator().manual_seed(7))["loss"].sum()
    loss.backward()
    grad_rows = model.out.grad.abs().sum(-1) > 0  # (l,) positions that got gradient
    assert torch.equal(grad_rows, masked.any(0))
    assert not grad_rows[:4].any()


@pytest.mark.parametrize("weighting", ["rdm", "elbo", "uniform"])
def test_weighting_matches_its_formula(weighting):
    T = 40
    d = MaskedDiffusion(T, MASK, weighting)
    ids, mask = batch(b=4, l=16, src=5, seed=3)
    model = TableModel(16, seed=1)
    t = torch.tensor([3, 17, 29, 39])
    out = d.training_losses(model, ids, mask, t, generator=torch.Generator().manual_seed(11))
    _, masked = d.q_sample(ids, mask, t, torch.Generator().manual_seed(11))
    ce = F.cross_entropy(model.logits(model.out).expand(4, -1, -1).reshape(-1, V), ids.reshape(-1),
                         reduction="none").view(4, 16)
    ce_sum = (ce * masked).sum(-1).double()
    n_masked = masked.sum(-1).double().clamp_min(1)
    if weighting == "elbo":
        want = T / (t.double() + 1) * ce_sum / mask.sum(-1)
    elif weighting == "rdm":
        want = (1 - t.double() / T) * ce_sum / n_masked
    else:
        want = ce_sum / n_masked
    torch.testing.assert_close(out["loss"].double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["ce"].double(), ce_sum / n_masked, rtol=1e-5, atol=1e-6)


def test_elbo_weighting_is_unbiased_for_the_mean_target_ce():
    T = 20
    d = MaskedDiffusion(T, MASK, "elbo")
    ids, mask = batch(b=1, l=16, src=4, seed=5)
    model = TableModel(16, seed=2)
    ce = F.cross_entropy(model.logits(model.out), ids[0], reduction="none")[4:].mean()
    n = 4000
    ids_n, mask_n = ids.expand(n, -1), mask.expand(n, -1)
    t = torch.randint(0, T, (n,), generator=torch.Generator().manual_seed(0))
    est = d.training_losses(model, ids_n, mask_n, t, generator=torch.Generator().manual_seed(1))["loss"]
    assert abs(est.mean().item() - ce.item()) < 4 * est.std().item() / n ** 0.5


def test_top_per_row_and_commit_counts():
    scores = torch.tensor([[0.1, 0.9, 0.5, -torch.inf], [3.0, 2.0, 1.0, 0.0]])
    keep = top_per_row(scores, torch.tensor([2, 1]))
    assert keep.tolist() == [[False, True, True, False], [True, False, False, False]]
    n = torch.tensor([0, 1, 7, 20])
    assert torch.equal(commit_counts(n, 1, 5), n)
    counts = [commit_counts(n, k, 5) for k in range(5, 0, -1)]
    assert all(bool((a <= b).all()) for a, b in zip(counts, counts[1:]))


@pytest.mark.parametrize("remask", [False, True])
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_sampler_unmasks_every_target_position_in_k_steps(steps, remask):
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=3, l=12, src=4)
    model = TableModel(12)
    out = sample_masked(d, model, ids, mask, steps=steps, remask=remask, temperature=1.0,
                        generator=torch.Generator().manual_seed(0))
    assert len(model.calls) == steps
    assert torch.equal(out.token_ids[:, :4], ids[:, :4])  # the source is untouched
    assert not (out.token_ids[:, 4:] == MASK).any()
    assert (out.committed_at[:, 4:] >= 1).all() and (out.committed_at[:, :4] == 0).all()


def test_sampler_commits_in_confidence_order():
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=2, l=16, src=4)
    model = TableModel(16, seed=4)
    out = sample_masked(d, model, ids, mask, steps=12)
    logits = model.logits(model.out).detach()
    logits[:, MASK] = -torch.inf  # [MASK] is never proposed
    log_probs = torch.log_softmax(logits, -1)  # (l, v), the same at every step
    conf = log_probs.max(-1).values[4:]  # argmax confidence per target position
    order = out.committed_at[0, 4:]  # larger k = committed earlier
    for i in range(12):
        for j in range(12):
            if order[i] > order[j]:
                assert conf[i] >= conf[j]
    assert torch.equal(out.token_ids[0, 4:], log_probs.argmax(-1)[4:])  # argmax decoding at temperature 0


def test_sampler_is_deterministic_under_a_seed():
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=4, l=16, src=4)
    model = TableModel(16, scale=0.3)  # flat distributions: draws differ between seeds
    runs = [sample_masked(d, model, ids, mask, steps=5, temperature=1.0, generator=torch.Generator().manual_seed(s))
            for s in (1, 1, 2)]
    assert torch.equal(runs[0].token_ids, runs[1].token_ids)
    assert not torch.equal(runs[0].token_ids, runs[2].token_ids)


def test_forbid_adjacent_repeat_and_forbidden_ids():
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=2, l=14, src=4)
    model = TableModel(14)
    with torch.no_grad():  # every position prefers token 9, then token 10
        model.out.copy_(model.weight[9] * 3 + model.weight[10] * 2)
    plain = sample_masked(d, model, ids, mask, steps=4).token_ids[:, 4:]
    assert (plain[:, 1:] == plain[:, :-1]).any()
    out = sample_masked(d, model, ids, mask, steps=4, forbid_adjacent_repeat=True, forbidden_ids=(0,)).token_ids[:, 4:]
    assert not (out[:, 1:] == out[:, :-1]).any()
    assert not ((out == 0) | (out == MASK)).any()


def test_sampler_feeds_each_estimate_into_the_next_step():
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch()
    model = TableModel(12)
    sample_masked(d, model, ids, mask, steps=4, self_condition=True)
    assert model.calls[0] is None and all(c is not None for c in model.calls[1:])
    torch.testing.assert_close(model.calls[1], model.out.expand(3, -1, -1), rtol=0, atol=0)


def test_training_self_condition_runs_a_no_grad_first_pass():
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch()
    model = TableModel(12)
    t = torch.tensor([5, 50, 90])
    d.training_losses(model, ids, mask, t, generator=torch.Generator().manual_seed(0))
    assert model.calls == [None]
    model.calls.clear()
    d.training_losses(model, ids, mask, t, generator=torch.Generator().manual_seed(0), self_condition=True)
    assert model.calls[0] is None and model.calls[1] is not None and not model.calls[1].requires_grad
    torch.testing.assert_close(model.calls[1], model.out.detach().expand(3, -1, -1), rtol=0, atol=0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="weighting"):
        MaskedDiffusion(10, MASK, "nope")
    d = MaskedDiffusion(10, MASK)
    ids, mask = batch()
    with pytest.raises(ValueError, match="t must lie"):
        d.q_sample(ids, mask, torch.tensor([0, 1, 10]))
    with pytest.raises(ValueError, match="steps"):
        sample_masked(d, TableModel(12), ids, mask, steps=0)


@pytest.mark.parametrize("top_k", [0, 3])
def test_gumbel_draws_follow_the_tempered_softmax_of_the_top_k(top_k):
    from mambadiff.diffusion.samplers.token_rules import gumbel_perturbed
    logits = torch.tensor([2.0, 0.5, 1.5, -1.0, 1.0, 0.0])
    n, temperature = 40_000, 0.7
    draws = gumbel_perturbed(logits.expand(n, -1).clone(), temperature, top_k,
                             torch.Generator().manual_seed(0)).argmax(-1)  # (n,)
    freq = torch.bincount(draws, minlength=6).double() / n
    allowed = torch.ones(6, dtype=torch.bool) if top_k == 0 else torch.zeros(6, dtype=torch.bool)
    if top_k:
        allowed[logits.topk(top_k).indices] = True
    want = torch.softmax(torch.where(allowed, logits.double() / temperature, -torch.inf), -1)
    torch.testing.assert_close(freq, want, rtol=0, atol=0.01)  # 4 binomial sigmas at n = 40,000
    assert (freq[~allowed] == 0).all()


def test_end_bias_sets_the_output_length_and_end_defer_commits_words_first():
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=3, l=16, src=4)
    model = TableModel(16, seed=2, scale=1.0)
    ends = (5, 6)
    kw = dict(steps=6, end_ids=ends, special_ids=ends, forbid_adjacent_repeat=True)
    with torch.no_grad():  # half of the target positions prefer an end token
        model.out[10:] = 3 * model.weight[5]
    plain = sample_masked(d, model, ids, mask, **kw).token_ids[:, 4:]
    is_end = lambda t: (t == 5) | (t == 6)  # noqa: E731
    assert is_end(plain).any() and (~is_end(plain)).any()
    longer = sample_masked(d, model, ids, mask, end_bias=-100.0, **kw).token_ids[:, 4:]
    assert not is_end(longer).any()
    shorter = sample_masked(d, model, ids, mask, end_bias=100.0, **kw).token_ids[:, 4:]
    assert is_end(shorter).all()
    # the logits are the same at every step, so each position proposes the same token throughout:
    # with a large end_defer every end token is committed after (at a smaller k than) every word
    out = sample_masked(d, model, ids, mask, end_defer=1e6, **kw)
    k, tok = out.committed_at[:, 4:], out.token_ids[:, 4:]
    assert torch.equal(tok, plain)  # deferring changes the order, not these proposals
    for r in range(3):
        assert k[r][is_end(tok[r])].max() <= k[r][~is_end(tok[r])].min()
    base_k = sample_masked(d, model, ids, mask, **kw).committed_at[:, 4:]
    assert any(base_k[r][is_end(tok[r])].max() > base_k[r][~is_end(tok[r])].min() for r in range(3))


@pytest.mark.parametrize("remask", [False, True])
def test_predict_length_fixes_the_end_at_the_first_step(remask):
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=3, l=16, src=4)
    model = TableModel(16, seed=5, scale=1.0)
    sep, pad = 5, 6
    with torch.no_grad():  # the tail prefers the end tokens, the middle is uncertain
        model.out[9:] = 2 * model.weight[pad]
        model.out[7:9] = model.weight[sep]
    out = sample_masked(d, model, ids, mask, steps=5, end_ids=(sep, pad), predict_length=True, remask=remask,
                        forbid_adjacent_repeat=True, special_ids=(sep, pad), temperature=1.0,
                        generator=torch.Generator().manual_seed(0))
    logits = model.logits(model.out).detach()[4:]  # (12, v) the same at every step and row
    logits[:, MASK] = -torch.inf
    n = round(float((1 - torch.softmax(logits, -1)[:, [sep, pad]].sum(-1)).sum()))
    assert 1 <= n < 11
    tgt = out.token_ids[:, 4:]  # (3, 12)
    assert (tgt[:, n] == sep).all() and (tgt[:, n + 1:] == pad).all()
    assert not ((tgt[:, :n] == sep) | (tgt[:, :n] == pad) | (tgt[:, :n] == MASK)).any()
    assert (out.committed_at[:, 4 + n:] == 5).all()  # the ends are committed at the first step
    with pytest.raises(ValueError, match="predict_length needs end tokens"):
        sample_masked(d, model, ids, mask, steps=2, end_ids=(sep,), predict_length=True)


class FixedLogits(nn.Module):
    """A stand-in denoiser whose logits at position i are the fixed row ``table[i]`` (``logits(h) = h``)."""

    def __init__(self, table):
        super().__init__()
        self.table = table  # (l, V)

    def embed(self, ids):
        return torch.zeros(*ids.shape, V)

    def forward(self, x, t, mask=None, self_cond=None):
        return self.table.expand(x.shape[0], -1, -1) + 0.0 * x

    def logits(self, h):
        return h


def bigrams(row):
    return [tuple(p) for p in zip(row[:-1].tolist(), row[1:].tolist())]


def test_forbid_repeat_bigram_leaves_no_word_pair_twice():
    d = MaskedDiffusion(100, MASK)
    l, src = 14, 4
    ids, mask = batch(b=2, l=l, src=src)
    table = torch.zeros(l, V)
    for i in range(l):  # first choice alternates 9 10 9 10 ...; second choice 11 + i % 3; the rest far behind
        table[i, 9 + i % 2] = 5.0
        table[i, 11 + i % 3] = 4.0 - 0.1 * i
    model = FixedLogits(table)
    plain = sample_masked(d, model, ids, mask, steps=l - src).token_ids[:, src:]
    assert len(set(bigrams(plain[0]))) < len(bigrams(plain[0]))  # the plain sampler repeats (9, 10)
    # one commit per step: every proposal sees all the pairs committed before it
    out = sample_masked(d, model, ids, mask, steps=l - src, forbid_repeat_bigram=True).token_ids[:, src:]
    for row in out:
        assert len(set(bigrams(row))) == len(bigrams(row)), row
    assert not (out == MASK).any()
    # a pair holding an exempt token may repeat: with 9 exempt, the plain output comes back
    exempt = sample_masked(d, model, ids, mask, steps=l - src, forbid_repeat_bigram=True,
                           special_ids=(9,)).token_ids[:, src:]
    assert torch.equal(exempt, plain)


def test_repeat_bigram_ban_on_a_hand_made_row():
    # committed: 7 8 _ 7 _ 3 3   (position 2 and 4 open; 3 exempt)
    x = torch.tensor([[7, 8, MASK, 7, MASK, 3, 3]])
    committed = torch.tensor([[1, 1, 0, 1, 0, 1, 1]], dtype=torch.bool)
    open_pos = ~committed
    scores = torch.zeros(2, V)
    scores[1, :] = -torch.inf
    scores[1, 8] = 1.0  # position 4's only finite token is the one the ban removes
    ban_repeated_bigrams(scores, x, committed, open_pos, torch.tensor([3]))
    # (7, 8) is committed: position 4 (after a 7) may not propose 8; position 2 (between 8 and 7) forms
    # (8, w) and (w, 7), neither committed anywhere: free
    assert torch.isfinite(scores[0]).all()
    assert scores[1, 8] == 1.0  # banning 8 would leave nothing: the row is kept
    scores = torch.zeros(2, V)
    ban_repeated_bigrams(scores, x, committed, open_pos, torch.tensor([3]))
    assert torch.isinf(scores[1, 8]) and torch.isfinite(scores[1]).sum() == V - 1
    assert torch.isfinite(scores[0]).all()  # (3, 3) pairs are exempt; nothing else matches


# ---------------------------------------------------------------------- length offset and length beam
SEP, PAD = 5, 6


def length_kw(**extra):
    return dict(steps=4, end_ids=(SEP, PAD), special_ids=(SEP, PAD), predict_length=True, **extra)


def beam_kw(**extra):
    """`sample_length_beam`'s keywords: those of `length_kw` less predict_length, which it sets itself."""
    kw = length_kw(**extra)
    del kw["predict_length"]
    return kw


def output_length(tokens, src=4):
    """Words before [SEP] in each row's target ``(b,)``."""
    return (tokens[:, src:] == SEP).long().argmax(-1)


def test_length_offset_moves_the_predicted_length_within_bounds():
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=4, l=16, src=4)
    model = TableModel(16, seed=5, scale=1.0)
    with torch.no_grad():
        model.out[9:] = 2 * model.weight[PAD]
    n = output_length(sample_masked(d, model, ids, mask, **length_kw()).token_ids)
    assert (n == n[0]).all() and 2 <= int(n[0]) <= 9
    offsets = torch.tensor([-1, 0, 1, 100])
    moved = output_length(sample_masked(d, model, ids, mask, length_offset=offsets, **length_kw()).token_ids)
    assert moved.tolist() == [n[0] - 1, n[0], n[0] + 1, 11]  # 11: n_target - 1, the last position is [SEP]
    with pytest.raises(ValueError, match="needs predict_length"):
        sample_masked(d, model, ids, mask, steps=2, length_offset=offsets)
    with pytest.raises(ValueError, match="length_beam must be an int >= 1"):
        sample_length_beam(d, model, ids, mask, length_beam=0, **beam_kw())


def test_word_log_prob_is_the_mean_log_probability_of_the_words():
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=2, l=16, src=4)
    table = torch.randn(16, V, generator=torch.Generator().manual_seed(3))
    table[10:, PAD] = 8.0  # the tail ends the text
    out = sample_masked(d, FixedLogits(table), ids, mask, **length_kw())
    logp = table.clone()
    logp[:, [MASK, SEP, PAD]] = -torch.inf  # word positions propose words only
    logp = torch.log_softmax(logp, -1)
    for r in range(2):
        n = int(output_length(out.token_ids)[r])
        words = out.token_ids[r, 4:4 + n]
        want = logp[4:4 + n].gather(1, words[:, None]).mean()
        torch.testing.assert_close(out.word_log_prob[r], want, rtol=1e-5, atol=1e-6)


def test_length_beam_drops_a_word_the_model_is_unsure_of():
    d = MaskedDiffusion(100, MASK)
    l, src = 16, 4
    ids, mask = batch(b=2, l=l, src=src)
    table = torch.zeros(l, V)
    for i in range(4):  # target positions 0-3: sure of distinct words
        table[src + i, 10 + i] = 12.0
    table[src + 4, 7:] = 1.0  # position 4: a word, but which one is a guess (ends at 0: P(word) ~ 1)
    table[src + 5:, SEP] = 12.0  # then the end
    plain = sample_masked(d, FixedLogits(table), ids, mask, **length_kw())
    assert output_length(plain.token_ids).tolist() == [5, 5]  # round(sum P(word)) = 5
    beam = sample_length_beam(d, FixedLogits(table), ids, mask, length_beam=3, **beam_kw())
    assert output_length(beam.token_ids).tolist() == [4, 4]
    assert torch.equal(beam.token_ids[:, src:src + 4], torch.arange(10, 14).expand(2, -1))
    assert (beam.word_log_prob > plain.word_log_prob).all()
    one = sample_length_beam(d, FixedLogits(table), ids, mask, length_beam=1, **beam_kw())
    assert torch.equal(one.token_ids, plain.token_ids)


class RowLogits(nn.Module):
    """A stand-in denoiser with a logits table per example (``tables (n, l, V)``): the example is named by
    its first source token (7 + n), so copies of a row (the length beam's) share its table; committed
    tokens shift the logits (``logits(h) = h``)."""

    def __init__(self, tables):
        super().__init__()
        self.tables = tables

    def embed(self, ids):
        return F.one_hot(ids, V).float()  # (b, l, V)

    def forward(self, x, t, mask=None, self_cond=None):
        example = x[:, 0].argmax(-1) - 7  # (b,)
        return self.tables[example] + 1.5 * x

    def logits(self, h):
        return h


@pytest.mark.parametrize("beam", [2, 3, 5])
def test_length_beam_keeps_each_rows_best_of_the_offsets(beam):
    """The beam equals decoding every offset on its own and keeping, per row, the highest word_log_prob."""
    d = MaskedDiffusion(100, MASK)
    b, l, src = 8, 16, 4
    ids, mask = batch(b=b, l=l, src=src, seed=1)
    ids[:, 0] = 7 + torch.arange(b)
    tables = torch.randn(b, l, V, generator=torch.Generator().manual_seed(4))
    tables[:, 11:, PAD] += 6.0
    model = RowLogits(tables)
    kw = length_kw(forbid_adjacent_repeat=True)
    out = sample_length_beam(d, model, ids, mask, length_beam=beam, **beam_kw(forbid_adjacent_repeat=True))
    offsets = [0, -1, 1, -2, 2][:beam]
    each = [sample_masked(d, model, ids, mask, length_offset=torch.full((b,), o), **kw) for o in offsets]
    scores = torch.stack([e.word_log_prob for e in each], 1)  # (b, B)
    best = scores.argmax(1)
    assert len(set(best.tolist())) > 1  # the rows keep different lengths
    for r in range(b):
        assert torch.equal(out.token_ids[r], each[int(best[r])].token_ids[r])
        torch.testing.assert_close(out.word_log_prob[r], scores[r].max())


def test_copy_the_source_compares_words_without_specials():
    mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]] * 4)
    ids = torch.tensor([[SEP, 10, 11, SEP, 10, 11, SEP, PAD],   # a copy
                        [SEP, 10, 11, SEP, 10, SEP, PAD, PAD],  # a prefix of the source
                        [SEP, 10, 11, SEP, 11, 10, SEP, PAD],   # the same words in another order
                        [SEP, 10, 11, SEP, 10, 11, 12, SEP]])   # one word more
    assert copy_the_source(ids, mask, (SEP, PAD)).tolist() == [True, False, False, False]


def test_beam_avoid_copy_never_moves_to_a_copy():
    d = MaskedDiffusion(100, MASK)
    l, src = 16, 4
    ids, mask = batch(b=2, l=l, src=src)
    ids[:, :src] = torch.arange(10, 14)  # the source's words
    table = torch.zeros(l, V)
    for i in range(4):  # target positions 0-3: sure of the source's words
        table[src + i, 10 + i] = 12.0
    table[src + 4, 7:] = 1.0  # position 4: some word
    table[src + 5:, SEP] = 12.0
    kw = beam_kw(length_beam=3)
    copied = sample_length_beam(d, FixedLogits(table), ids, mask, **kw)
    assert output_length(copied.token_ids).tolist() == [4, 4]  # the copy is the most confident length
    assert copy_the_source(copied.token_ids, mask, (SEP, PAD)).all()
    avoided = sample_length_beam(d, FixedLogits(table), ids, mask, avoid_copy=True, **kw)
    assert output_length(avoided.token_ids).tolist() == [5, 5]  # the next best length, not a copy
    assert not copy_the_source(avoided.token_ids, mask, (SEP, PAD)).any()
    # the predicted length itself gives the copy: it stays (the beam only never moves to one)
    table[src + 4, 7:] = 0.0
    table[src + 4, SEP] = 12.0
    kept = sample_length_beam(d, FixedLogits(table), ids, mask, avoid_copy=True, **kw)
    assert output_length(kept.token_ids).tolist() == [4, 4]
    assert copy_the_source(kept.token_ids, mask, (SEP, PAD)).all()


class ContextModel(TableModel):
    """A stand-in denoiser whose output depends on every input token and on t (so a step run on the
    wrong rows, or skipped where it counts, changes the result); ignores ``self_cond``; records the
    rows of every call."""

    def __init__(self, l, seed=0):
        super().__init__(l, seed)
        g = torch.Generator().manual_seed(seed + 1)
        self.mix = nn.Parameter(torch.randn(E, E, generator=g))
        self.rows_seen = []

    def forward(self, x, t, mask=None, self_cond=None):
        self.rows_seen.append(x.shape[0])
        context = x.mean(1, keepdim=True) @ self.mix  # (b, 1, E) from the whole input
        return self.out[: x.shape[1]] + context + 0.01 * t[:, None, None].to(x.dtype)  # (b, l, E)


@pytest.mark.parametrize("predict_length", [False, True])
def test_rows_that_commit_nothing_skip_the_network_without_changing_the_result(predict_length):
    """A row whose committed count does not grow at a step keeps its tokens, so the sampler runs the
    network only on the rows that commit: the result equals running every row at every step (which
    self_condition forces; the model ignores self_cond) and sampling each row alone."""
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=4, l=16, src=4)
    mask[1, :9] = 0  # rows with 12, 7, 12 and 3 target positions: fewer than the 10 steps skip some
    mask[3, :13] = 0
    kw = dict(steps=10, forbid_adjacent_repeat=True, predict_length=predict_length,
              end_ids=(5, 6) if predict_length else (), special_ids=(5, 6))
    skipping = ContextModel(16)
    out = sample_masked(d, skipping, ids, mask, **kw)
    every = ContextModel(16)
    reference = sample_masked(d, every, ids, mask, self_condition=True, **kw)
    assert torch.equal(out.token_ids, reference.token_ids)
    assert torch.equal(out.committed_at, reference.committed_at)
    torch.testing.assert_close(out.word_log_prob, reference.word_log_prob, rtol=1e-6, atol=1e-6)
    assert every.rows_seen == [4] * 10 and sum(skipping.rows_seen) < 40
    for i in range(4):
        alone = sample_masked(d, ContextModel(16), ids[i:i + 1], mask[i:i + 1], **kw)
        assert torch.equal(alone.token_ids[0], out.token_ids[i])


def test_a_two_dimensional_length_offset_shares_the_first_step():
    """A (b, B) offset decodes each row B times from one first step: the same rows as B separate
    (b,) decodes, row i's copies at i * B + j, with the length-fixing step run on b rows only."""
    d = MaskedDiffusion(100, MASK)
    ids, mask = batch(b=3, l=16, src=4, seed=2)
    offsets = torch.tensor([[0, -1, 1], [0, -2, 2], [1, 0, -1]])
    kw = length_kw(forbid_adjacent_repeat=True)
    model = ContextModel(16, seed=3)
    out = sample_masked(d, model, ids, mask, length_offset=offsets, **kw)
    assert model.rows_seen[0] == 3 and out.token_ids.shape == (9, 16)
    for j in range(3):
        alone = sample_masked(d, ContextModel(16, seed=3), ids, mask, length_offset=offsets[:, j], **kw)
        assert torch.equal(out.token_ids[j::3], alone.token_ids)
        assert torch.equal(out.committed_at[j::3], alone.committed_at)
        torch.testing.assert_close(out.word_log_prob[j::3], alone.word_log_prob, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"length_offset must have shape \(b,\) or \(b, B\)"):
        sample_masked(d, model, ids, mask, length_offset=torch.zeros(2, 3, dtype=torch.long), **kw)
