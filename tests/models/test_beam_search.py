"""Beam search and the cache reordering it rests on: a reordered cache decodes as the reordered prompts
do (every backbone), beam 1 is greedy, a wide beam finds the brute-force optimum, batched prompts
search as each alone, banned tokens never appear."""
from collections import namedtuple
from dataclasses import dataclass
from itertools import product

import sys
from pathlib import Path

import pytest
import torch

from mambadiff.models import beam_search as beam_search_module
from mambadiff.models.beam_search import beam_search
from mambadiff.models.decoding import DecodeCache, reorder_cache
from mambadiff.models.generation import generate
from mambadiff.models.lm import CausalLM, CausalLMConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_backbones import V, backbone  # noqa: E402

BACKBONES = {
    "mamba": backbone("mamba"),
    "mamba2": backbone("mamba2"),
    "s4d": backbone("s4d"),
    "s4": backbone("s4"),
    "h3": backbone("h3"),
    "transformer-learned": backbone("transformer", max_len=32),
    "transformer-sinusoidal": backbone("transformer", pos_encoding="sinusoidal"),
    "transformer-rotary": backbone("transformer", pos_encoding="rotary"),
    "lstm": backbone("lstm"),
    "mamba2-hybrid": backbone("mamba2", attn_layers=[1]),
}
SMOKE = ["mamba", "mamba2", "s4d", "transformer-rotary", "lstm", "mamba2-hybrid"]


def model(name: str, vocab: int = V, head_std: float = 0.5, seed: int = 0) -> CausalLM:
    """A float64 model whose next tokens depend on the context: small embeddings (std 0.02) keep the
    residual stream to the layers' outputs, and an untied head of std ``head_std`` makes the next-token
    distributions far from uniform, so that greedy, beam and exhaustive search can disagree."""
    torch.manual_seed(seed)
    m = CausalLM(CausalLMConfig(vocab_size=vocab, tie_embeddings=False, backbone=BACKBONES[name]))
    m = m.to(torch.float64).eval()
    with torch.no_grad():  # off the init, so that every parameter matters
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
        m.head.weight.normal_(std=head_std)
    return m


# ------------------------------------------------------------------ reorder_cache


@pytest.mark.parametrize("name", list(BACKBONES))
def test_a_reordered_cache_decodes_as_the_reordered_prompts(name):
    torch.set_num_threads(1)
    m = model(name)
    ids = torch.randint(1, V, (2, 5), generator=torch.Generator().manual_seed(1))  # (b, l)
    lengths = torch.tensor([5, 3])  # unequal prompts: row 1 is right-padded
    index = torch.tensor([1, 0, 1])
    tokens = [torch.tensor([4, 7, 9]), torch.tensor([2, 2, 11])]  # rows 0 and 2 share a parent, then part
    _, cache = m.prefill(ids, lengths, capacity=5 + len(tokens))
    reordered = reorder_cache(cache, index)
    _, direct = m.prefill(ids[index], lengths[index], capacity=5 + len(tokens))
    for token in tokens:
        got, want = m.step(token, reordered), m.step(token, direct)  # (3, v) each
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    assert reordered.positions.tolist() == [3 + 2, 5 + 2, 3 + 2]
    # the original cache was neither moved nor written by the reordered one's steps
    assert cache.positions.tolist() == [5, 3]
    torch.testing.assert_close(m.step(torch.tensor([4, 7]), cache),
                               m.step(torch.tensor([4, 7]), m.prefill(ids, lengths, capacity=7)[1]),
                               atol=1e-10, rtol=0)


Pair = namedtuple("Pair", "a b")


@dataclass
class Inner:
    x: torch.Tensor
    extra: dict


@dataclass
class Outer:
    inner: Inner
    pair: Pair
    items: tuple
    size: int
    nothing: None = None


def test_reorder_cache_walks_any_nesting_and_copies():
    rows = torch.arange(3.0)  # (b,) row i holds i
    state = Outer(Inner(rows[:, None].repeat(1, 2), {"t": rows.clone()}), Pair(rows.clone(), [rows.clone()]),
                  (rows.clone(), 7), size=4)
    cache = DecodeCache(layers=[state], positions=torch.tensor([5, 6, 7]), capacity=9)
    out = reorder_cache(cache, torch.tensor([2, 2, 0, 1]))
    got = out.layers[0]
    assert isinstance(got, Outer) and isinstance(got.pair, Pair) and isinstance(got.items, tuple)
    assert got.inner.x.tolist() == [[2, 2], [2, 2], [0, 0], [1, 1]]
    assert got.inner.extra["t"].tolist() == got.pair.a.tolist() == got.pair.b[0].tolist() == [2, 2, 0, 1]
    assert got.items[0].tolist() == [2, 2, 0, 1] and got.items[1] == 7 and got.size == 4 and got.nothing is None
    assert out.positions.tolist() == [7, 7, 5, 6] and out.capacity == 9
    got.inner.x[0] = -1  # repeated rows are copies, not views of one another or of the original
    assert got.inner.x[1].tolist() == [2, 2] and state.inner.x[2].tolist() == [2, 2]
    lstm = DecodeCache(layers=[torch.arange(6.0).view(2, 3, 1)], positions=torch.tensor([1, 2, 3]), batch_dim=1)
    assert reorder_cache(lstm, torch.tensor([2, 0])).layers[0][:, :, 0].tolist() == [[2, 0], [5, 3]]
    with pytest.raises(ValueError, match="index"):
        reorder_cache(cache, torch.tensor([3]))


# ------------------------------------------------------------------ beam search


@pytest.mark.parametrize("name", ["mamba2", "transformer-learned", "mamba2-hybrid"])
def test_beam_1_is_greedy(name):
    m = model(name)
    prompts = [[1, 2, 3], [4], [5, 6]]
    free = generate(m, prompts, 6)
    # an eos that greedy meets after its first token in some row: it cuts that row short
    eos = next(row[j] for row in free for j in range(1, len(row)) if row[j] not in row[:j])
    greedy = generate(m, prompts, 6, stop_ids=[eos])
    assert any(1 < len(row) < 6 for row in greedy)
    assert beam_search(m, prompts, 1, 6, eos, length_penalty=0.0) == greedy
    # an eos greedy never picks: beam 1 is greedy under any length penalty
    never = next(tok for tok in range(V) if all(tok not in row for row in free))
    assert beam_search(m, prompts, 1, 6, never, length_penalty=1.0) == free


def exhaustive_best(m: CausalLM, prompt: list[int], vocab: int, max_new: int, eos: int,
                    length_penalty: float) -> tuple[list[int], float, float]:
    """The best continuation over every hypothesis (eos-ended, or max_new tokens without eos), each
    scored with the parallel forward; also the runner-up's score (the margin the search must resolve)."""
    full = torch.tensor([prompt + list(seq) for seq in product(range(vocab), repeat=max_new)])  # (n, l)
    log_probs = m(full).log_softmax(-1)[:, len(prompt) - 1:-1]  # (n, max_new, v) at each new token
    new = full[:, len(prompt):]  # (n, max_new)
    token_lp = log_probs.gather(-1, new[..., None])[..., 0].cumsum(-1)  # (n, max_new) prefix sums
    scores = {}
    for seq, sums in zip(new.tolist(), token_lp.tolist()):
        for n in range(1, max_new + 1):
            hyp = tuple(seq[:n])
            if eos in hyp[:-1]:
                break
            if hyp[-1] == eos or n == max_new:
                scores[hyp] = sums[n - 1] / n ** length_penalty
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return list(ranked[0][0]), ranked[0][1], ranked[1][1]


# (backbone, eos): eos ids for which the optimum ends with eos (at one token, or two) for some
# penalties and runs to max_new tokens for others (checked below), so that both kinds compete
EXHAUSTIVE = [("mamba", 3), ("transformer-learned", 1), ("mamba2-hybrid", 3)]


@pytest.mark.parametrize("name, eos", EXHAUSTIVE)
@pytest.mark.parametrize("length_penalty", [0.0, 0.5, 1.0])
def test_a_wide_beam_finds_the_exhaustive_optimum(name, eos, length_penalty):
    vocab, max_new = 5, 3
    m = model(name, vocab=vocab, head_std=1.0)
    prompts = [[1, 2, 3, 0], [2]]
    # k = v ** max_new keeps every hypothesis: the search is exhaustive, up to the ranking rules
    found = beam_search(m, prompts, vocab ** max_new, max_new, eos, length_penalty=length_penalty)
    for prompt, got in zip(prompts, found):
        best, score, runner_up = exhaustive_best(m, prompt, vocab, max_new, eos, length_penalty)
        assert score - runner_up > 1e-9  # a unique optimum (fixed seeds)
        assert got == best


def test_the_exhaustive_problems_mix_eos_and_full_length_optima():
    vocab, max_new = 5, 3
    lengths = set()
    for name, eos in EXHAUSTIVE:
        m = model(name, vocab=vocab, head_std=1.0)
        for prompt, penalty in product(([1, 2, 3, 0], [2]), (0.0, 0.5, 1.0)):
            best = exhaustive_best(m, prompt, vocab, max_new, eos, penalty)[0]
            lengths.add((len(best), best[-1] == eos))
    assert {(1, True), (2, True), (3, False)} <= lengths


def rescoring_beam_search(m: CausalLM, prompt: list[int], k: int, max_new: int, eos: int,
                          length_penalty: float) -> list[int]:
    """The same search without a cache or early stopping: every step scores each hypothesis with the
    parallel forward over prompt + hypothesis, and all max_new steps run. A prompt that beam_search
    stops early must come out the same (its stopping rule only drops hypotheses that can't win)."""
    beams, finished = [([], 0.0)], []
    for t in range(max_new):
        log_probs = m(torch.tensor([prompt + hyp for hyp, _ in beams])).log_softmax(-1)[:, -1]  # (k, v)
        candidates = sorted(((total + log_probs[j, tok].item(), hyp + [tok])
                             for j, (hyp, total) in enumerate(beams) for tok in range(log_probs.shape[1])),
                            key=lambda c: -c[0])
        finished += [(total / (t + 1) ** length_penalty, hyp) for total, hyp in candidates[:k] if hyp[-1] == eos]
        beams = [(hyp, total) for total, hyp in candidates if hyp[-1] != eos][:k]
    pool = finished + [(total / max_new ** length_penalty, hyp) for hyp, total in beams]
    return max(pool, key=lambda c: c[0])[1]


# (backbone, eos, length penalty, whether some prompt stops before max_new): the early stops are checked
# against the full search; the cases that run to max_new are those where a looser bound (the running
# beams' best at their current length) would have stopped too early and returned a worse hypothesis
RESCORED = [("mamba", 12, 0.0, True), ("mamba", 12, 1.0, True), ("h3", 2, 1.0, True),
            ("transformer-learned", 7, 0.0, True), ("transformer-learned", 7, 2.0, False),
            ("lstm", 6, 1.0, False), ("mamba2", 1, 1.0, True), ("mamba2-hybrid", 6, 0.0, True),
            ("mamba2-hybrid", 2, 1.0, True), ("s4d", 9, 2.0, False)]


@pytest.mark.parametrize("name, eos, length_penalty, stops_early", RESCORED)
def test_beam_search_equals_rescoring_every_hypothesis(name, eos, length_penalty, stops_early, monkeypatch):
    # the beams move between cache rows at every step: a beam decoding from another's state, or a
    # stop before the best hypothesis is found, shows here
    stops = []

    def can_stop(*args):
        stopped = can_stop_as_shipped(*args)
        stops.append(stopped)
        return stopped

    can_stop_as_shipped = beam_search_module._can_stop
    monkeypatch.setattr(beam_search_module, "_can_stop", can_stop)
    m = model(name, head_std=1.0)
    prompts = [[1, 2, 3, 4, 5], [6], [7, 8]]
    found = beam_search(m, prompts, 3, 7, eos, length_penalty=length_penalty)
    assert any(stops) == stops_early
    assert found == [rescoring_beam_search(m, p, 3, 7, eos, length_penalty) for p in prompts]


@pytest.mark.parametrize("name", ["mamba2-hybrid", "s4d", "lstm"])
def test_batched_prompts_search_as_each_alone(name):
    m = model(name)
    prompts = [[1, 2, 3, 4, 5], [6], [7, 8]]
    eos = 3
    batched = beam_search(m, prompts, 3, 6, eos)
    assert batched == [beam_search(m, [p], 3, 6, eos)[0] for p in prompts]
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 0, 0, 0, 0], [7, 8, 0, 0, 0]])
    assert m.beam_search(ids, 3, 6, eos, lengths=torch.tensor([5, 1, 2])) == batched


def test_banned_ids_never_appear():
    m = model("mamba2")
    prompts = [[1, 2, 3], [4]]
    eos = 12
    free = beam_search(m, prompts, 4, 6, eos, length_penalty=1.0)
    banned = sorted({tok for row in free for tok in row if tok != eos} | {0})  # everything it chose
    out = beam_search(m, prompts, 4, 6, eos, banned_ids=banned)
    assert out != free
    assert all(tok not in banned for row in out for tok in row)
    only_eos = beam_search(m, prompts, 2, 6, eos, banned_ids=[t for t in range(V) if t != eos])
    assert only_eos == [[eos], [eos]]
    with pytest.raises(ValueError, match="whole vocabulary"):
        beam_search(m, prompts, 2, 6, eos, banned_ids=range(V))
    with pytest.raises(ValueError, match="eos_id"):
        beam_search(m, prompts, 2, 6, V)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(m, prompts, 0, 6, eos)
    assert beam_search(m, prompts, 2, 0, eos) == [[], []]


@pytest.mark.parametrize("name", SMOKE)
def test_beam_search_runs_on_every_backbone(name):
    m = model(name).train()  # beam search runs in eval mode and hands the model back as it was
    prompts = [[1, 2, 3, 4], [5]]
    eos, max_new = 6, 5
    out = m.beam_search(prompts, 3, max_new, eos, banned_ids=[0])
    assert m.training
    for row in out:
        assert 1 <= len(row) <= max_new and all(isinstance(t, int) and 1 <= t < V for t in row)
        assert eos not in row[:-1] and (row[-1] == eos or len(row) == max_new)
    m.eval()
    assert m.beam_search(prompts, 1, max_new, eos, length_penalty=0.0) == generate(m, prompts, max_new,
                                                                                   stop_ids=[eos])


# ------------------------------------------------------------------ repeated n-grams


def has_repeat(row, n):
    grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
    return len(set(grams)) < len(grams)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ban_repeated_ngrams_bans_exactly_the_completing_tokens(n):
    from mambadiff.models.generation import ban_repeated_ngrams
    g = torch.Generator().manual_seed(n)
    for t in range(0, 9):
        history = torch.randint(0, 4, (6, t), generator=g)  # (r, t) a small alphabet: many repeats
        scores = torch.randn(6, 5, generator=g, dtype=torch.float64)
        out = ban_repeated_ngrams(scores, history, n)
        for r in range(6):
            row = history[r].tolist()
            for tok in range(5):  # banned iff appending it repeats an n-gram that did not repeat before
                repeats = t + 1 >= n and tuple(row[t + 1 - n:] + [tok]) in {
                    tuple(row[i:i + n]) for i in range(t - n + 1)}
                assert (out[r, tok] == float("-inf")) == repeats, (row, tok)
                if not repeats:
                    assert out[r, tok] == scores[r, tok]
    assert ban_repeated_ngrams(scores, history, 0) is scores


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_no_repeat_ngram_leaves_no_generated_ngram_twice(search):
    """A model that loops (greedy from a prompt of one token repeats a phrase) stops repeating with the
    ban, and a prompt's own n-grams stay allowed."""
    m = model("mamba2", vocab=8, head_std=2.0)
    prompts = [[t] for t in range(1, 8)] + [[1, 2, 1, 2]]
    run = ((lambda **kw: generate(m, prompts, 16, **kw)) if search == "greedy"
           else (lambda **kw: beam_search(m, prompts, 3, 16, eos_id=0, length_penalty=0.0, **kw)))
    free = run()
    assert any(has_repeat(row, 2) for row in free)  # the model loops without the ban
    banned = run(no_repeat_ngram=2)
    assert not any(has_repeat(row, 2) for row in banned)
    assert banned != free
