"""Synthetic selectivity tasks of the Mamba paper (Gu & Dao 2023, section 4.1): selective copying
and induction heads. Time-invariant models (S4D) cannot solve them with a fixed kernel; a selective
(input-dependent) model can.

Glossary: n examples, l sequence length, k answer tokens per example, v vocabulary size.

Both generators are vectorised and deterministic: the same arguments (seed included) give the same
tensors on every machine (a CPU ``torch.Generator`` draws everything). Every example puts its answers
at the *last* ``k`` positions, and ``targets`` holds ``IGNORE_INDEX`` everywhere else, so a causal
model is trained with ``cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)``.

Selective copying vocabulary (``vocab_size = num_symbols + 2``)::

    0                    NOISE   the filler token between data tokens
    1 .. num_symbols     data symbols
    num_symbols + 1      QUERY   the marker at each of the last k positions ("emit the next one")

    inputs  (n, l): [ body of length l - k: k data tokens at random, strictly increasing positions,
                      NOISE elsewhere ] + [ QUERY] * k
    targets (n, l): IGNORE_INDEX over the body; at the j-th QUERY the j-th data token of the body.

Induction heads vocabulary (``vocab_size = num_symbols + 1``)::

    0 .. num_symbols - 1 ordinary symbols
    num_symbols          TRIGGER

    inputs  (n, l): uniform random symbols, TRIGGER once at a random position p in [0, l - 3], the
                    token after it (position p + 1 <= l - 2) is the target symbol, and TRIGGER again at
                    the last position l - 1. TRIGGER occurs exactly twice.
    targets (n, l): IGNORE_INDEX except at l - 1, which holds inputs[p + 1] (k = 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
NOISE = 0

TASKS = ("selective_copy", "induction")


@dataclass
class SyntheticData:
    """A generated set: ``inputs`` and ``targets`` are int64 (n, l); answers are the last ``num_answers``."""

    inputs: torch.Tensor  # (n, l)
    targets: torch.Tensor  # (n, l), IGNORE_INDEX off the answer positions
    vocab_size: int
    num_answers: int  # k: answers sit at positions l - k .. l - 1
    num_symbols: int  # distinct answer symbols (chance accuracy is 1 / num_symbols)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def answers(self) -> torch.Tensor:
        return self.targets[:, -self.num_answers:]  # (n, k)


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _generator(seed: int) -> torch.Generator:
    _check_int("seed", seed, 0)
    return torch.Generator().manual_seed(seed)


def selective_copy_vocab_size(num_symbols: int) -> int:
    return num_symbols + 2


def query_token(num_symbols: int) -> int:
    """The QUERY marker id of a selective-copying vocabulary with ``num_symbols`` data symbols."""
    return num_symbols + 1


def selective_copy(num_examples: int, seq_len: int = 64, num_tokens: int = 8, num_symbols: int = 16,
                   seed: int = 0) -> SyntheticData:
    """Selective copying: ``num_tokens`` data tokens scattered among NOISE, then ``num_tokens`` QUERY markers.

    ``seq_len`` is the total length (body + queries); the body (``seq_len - num_tokens`` positions)
    must have room for the data tokens.
    """
    _check_int("num_examples", num_examples, 1)
    _check_int("num_tokens", num_tokens, 1)
    _check_int("num_symbols", num_symbols, 1)
    _check_int("seq_len", seq_len, 2 * num_tokens)
    g = _generator(seed)
    n, k, body = num_examples, num_tokens, seq_len - num_tokens
    # k distinct body positions per row, in increasing order: the k smallest of a random permutation
    pos = torch.rand(n, body, generator=g).argsort(dim=1)[:, :k].sort(dim=1).values  # (n, k)
    data = torch.randint(1, num_symbols + 1, (n, k), generator=g)  # (n, k) data symbols 1..num_symbols
    inputs = torch.full((n, seq_len), NOISE, dtype=torch.long)  # (n, l)
    inputs[:, :body].scatter_(1, pos, data)
    inputs[:, body:] = query_token(num_symbols)
    targets = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)  # (n, l)
    targets[:, body:] = data
    return SyntheticData(inputs, targets, selective_copy_vocab_size(num_symbols), k, num_symbols)


def induction_vocab_size(num_symbols: int) -> int:
    return num_symbols + 1


def trigger_token(num_symbols: int) -> int:
    """The TRIGGER id of an induction-heads vocabulary with ``num_symbols`` ordinary symbols."""
    return num_symbols


def induction_heads(num_examples: int, seq_len: int = 64, num_symbols: int = 16,
                    seed: int = 0) -> SyntheticData:
    """Induction heads: recall the symbol that followed the first TRIGGER when TRIGGER comes again at the end."""
    _check_int("num_examples", num_examples, 1)
    _check_int("num_symbols", num_symbols, 2)
    _check_int("seq_len", seq_len, 3)
    g = _generator(seed)
    n, l = num_examples, seq_len
    trig = trigger_token(num_symbols)
    inputs = torch.randint(0, num_symbols, (n, l), generator=g)  # (n, l) never TRIGGER
    p = torch.randint(0, l - 2, (n,), generator=g)  # (n,) first TRIGGER in [0, l - 3]
    rows = torch.arange(n)  # (n,)
    inputs[rows, p] = trig
    inputs[:, -1] = trig
    targets = torch.full((n, l), IGNORE_INDEX, dtype=torch.long)  # (n, l)
    targets[:, -1] = inputs[rows, p + 1]
    return SyntheticData(inputs, targets, induction_vocab_size(num_symbols), 1, num_symbols)


def make_synthetic(task: str, num_examples: int, seq_len: int, seed: int, num_tokens: int = 8,
                   num_symbols: int = 16) -> SyntheticData:
    """Dispatch by task name (``selective_copy`` | ``induction``); ``num_tokens`` is for selective copying."""
    if task == "selective_copy":
        return selective_copy(num_examples, seq_len, num_tokens, num_symbols, seed)
    if task == "induction":
        return induction_heads(num_examples, seq_len, num_symbols, seed)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
