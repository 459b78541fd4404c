"""Synthetic selectivity data: the answers really are what the task says, and generation is seeded."""
import pytest
import torch

from mambadiff.data.synthetic import (IGNORE_INDEX, NOISE, induction_heads, make_synthetic, query_token,
                                      selective_copy, trigger_token)


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


@pytest.mark.parametrize("task", ["selective_copy", "induction"])
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
