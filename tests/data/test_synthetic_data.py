"""Synthetic recall data: the answers really are what the task says, and generation is seeded."""
import pytest
import torch

from mambadiff.data.synthetic import (IGNORE_INDEX, NOISE, induction_heads, make_synthetic, mqar,
                                      mqar_vocab_size, query_token, selective_copy, trigger_token)


@pytest.mark.parametrize("seq_len,k,v", [(16, 4, 3), (64, 8, 8), (40, 20, 16)])
def test_selective_copy_answers_are_the_data_tokens_in_order(seq_len, k, v):
    d = selective_copy(200, seq_len=seq_len, num_tokens=k, num_symbols=v, seed=1)
    assert d.inputs.shape == d.targets.shape == (200, seq_len)
    assert d.inputs.dtype == d.targets.dtype == torch.long
    assert d.vocab_size == v + 2 and d.num_answers == k and d.num_symbols == v
    assert int(d.inputs.min()) >= 0 and int(d.inputs.max()) < d.vocab_size
    body = d.inputs[:, :seq_len - k]
    # the last k positions are QUERY markers and the body has no QUERY
    assert (d.inputs[:, -k:] == query_token(v)).all()
    assert not (body == query_token(v)).any()
    # exactly k data tokens in the body, and reading them left to right gives the answers
    assert ((body != NOISE).sum(1) == k).all()
    for row in range(200):
        data = body[row][body[row] != NOISE]
        assert torch.equal(data, d.answers[row])
    assert ((d.answers >= 1) & (d.answers <= v)).all()
    assert (d.targets[:, :seq_len - k] == IGNORE_INDEX).all()


def test_selective_copy_positions_and_symbols_vary():
    d = selective_copy(500, seq_len=64, num_tokens=8, num_symbols=8, seed=0)
    body = d.inputs[:, :56] != NOISE  # (n, body)
    assert body.any(0).all()  # every body position holds data in some example
    assert len(set(d.answers.flatten().tolist())) == 8


@pytest.mark.parametrize("seq_len,v", [(3, 2), (16, 4), (64, 16)])
def test_induction_trigger_twice_and_target_follows_first_trigger(seq_len, v):
    d = induction_heads(300, seq_len=seq_len, num_symbols=v, seed=2)
    trig = trigger_token(v)
    assert d.vocab_size == v + 1 and d.num_answers == 1 and d.num_symbols == v
    assert int(d.inputs.min()) >= 0 and int(d.inputs.max()) <= trig
    assert ((d.inputs == trig).sum(1) == 2).all()
    assert (d.inputs[:, -1] == trig).all()
    first = (d.inputs == trig).int().argmax(1)  # (n,) position of the first trigger
    assert (first <= seq_len - 3).all()
    rows = torch.arange(300)
    assert torch.equal(d.targets[:, -1], d.inputs[rows, first + 1])
    assert (d.targets[:, -1] != trig).all()
    assert (d.targets[:, :-1] == IGNORE_INDEX).all()


def test_induction_trigger_position_covers_the_range():
    d = induction_heads(2000, seq_len=10, num_symbols=4, seed=0)
    first = (d.inputs == trigger_token(4)).int().argmax(1)
    assert set(first.tolist()) == set(range(8))


@pytest.mark.parametrize("seq_len,N,k,v", [(64, 8, None, 32), (128, 16, 4, 16), (9, 4, 1, 4), (12, 4, 4, 4)])
def test_mqar_queries_are_answered_by_their_pair(seq_len, N, k, v):
    n = 300
    d = mqar(n, seq_len=seq_len, num_kv_pairs=N, num_queries=k, num_symbols=v, seed=4)
    k = N if k is None else k
    assert d.inputs.shape == d.targets.shape == (n, seq_len) and d.inputs.dtype == torch.long
    assert d.vocab_size == mqar_vocab_size(v) == 2 * v + 1 and d.num_answers == k and d.num_symbols == v
    assert not d.answers_at_end and d.positions.shape == (n, k)
    keys, values = d.inputs[:, 0:2 * N:2], d.inputs[:, 1:2 * N:2]  # (n, N)
    assert ((keys >= 1) & (keys <= v)).all() and ((values > v) & (values <= 2 * v)).all()
    assert (keys.sort(1).values.diff(dim=1) > 0).all()  # a row's keys are distinct
    pos = d.positions
    assert (pos >= 2 * N).all() and (pos < seq_len).all() and (pos.diff(dim=1) > 0).all()
    # the tail is NOISE except the queries, and the targets sit exactly at the queries
    tail = d.inputs[:, 2 * N:]
    assert int((tail != NOISE).sum()) == n * k
    assert int((d.targets != IGNORE_INDEX).sum()) == n * k
    queried = d.inputs.gather(1, pos)  # (n, k)
    assert (queried.sort(1).values.diff(dim=1) > 0).all()  # distinct keys asked
    for row in range(n):
        lookup = dict(zip(keys[row].tolist(), values[row].tolist()))
        assert [lookup[q] for q in queried[row].tolist()] == d.answers[row].tolist()
    assert torch.equal(d.answers, d.targets.gather(1, pos))


def test_mqar_covers_keys_values_and_positions():
    d = mqar(3000, seq_len=24, num_kv_pairs=4, num_queries=2, num_symbols=6, seed=0)
    assert set(d.inputs[:, 0:8:2].flatten().tolist()) == set(range(1, 7))
    assert set(d.answers.flatten().tolist()) == set(range(7, 13))
    assert set(d.positions.flatten().tolist()) == set(range(8, 24))
    # every pair is asked about equally often (the queried pair index is uniform)
    pair_of = (d.inputs[:, 0:8:2].unsqueeze(1) == d.inputs.gather(1, d.positions).unsqueeze(-1)).float().argmax(-1)
    counts = torch.bincount(pair_of.flatten(), minlength=4).float()  # (N,)
    assert float(counts.min() / counts.max()) > 0.9


def test_mqar_bad_arguments():
    with pytest.raises(ValueError, match="seq_len"):
        mqar(10, seq_len=23, num_kv_pairs=8)  # needs 2 N + k = 24
    with pytest.raises(ValueError, match="num_queries"):
        mqar(10, seq_len=64, num_kv_pairs=4, num_queries=5)
    with pytest.raises(ValueError, match="num_symbols"):
        mqar(10, seq_len=64, num_kv_pairs=8, num_symbols=7)
    with pytest.raises(ValueError, match="num_kv_pairs"):
        mqar(10, num_kv_pairs=0)


@pytest.mark.parametrize("task", ["selective_copy", "induction", "mqar"])
def test_determinism_by_seed(task):
    a = make_synthetic(task, 50, 32, seed=7)
    b = make_synthetic(task, 50, 32, seed=7)
    c = make_synthetic(task, 50, 32, seed=8)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_generation_ignores_global_rng():
    torch.manual_seed(0)
    a = selective_copy(20, 32, 4, 8, seed=3)
    torch.manual_seed(123)
    b = selective_copy(20, 32, 4, 8, seed=3)
    assert torch.equal(a.inputs, b.inputs)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="seq_len"):
        selective_copy(10, seq_len=15, num_tokens=8)
    with pytest.raises(ValueError, match="num_examples"):
        induction_heads(0)
    with pytest.raises(ValueError, match="seq_len"):
        induction_heads(10, seq_len=2)
    with pytest.raises(ValueError, match="seed"):
        selective_copy(10, seed=-1)
    with pytest.raises(ValueError, match="task"):
        make_synthetic("copy", 10, 32, 0)
