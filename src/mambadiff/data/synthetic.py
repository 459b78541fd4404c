"""Synthetic recall tasks: selective copying and induction heads of the Mamba paper (Gu & Dao 2023,
section 4.1), and multi-query associative recall (MQAR) of Zoology (Arora et al. 2023, "Zoology:
Measuring and Improving Recall in Efficient Language Models"). Time-invariant models (S4D, S4) cannot
solve them with a fixed kernel; a selective (input-dependent) model or attention can.

Glossary: n examples, l sequence length, k answer tokens per example, v vocabulary size,
N key-value pairs (MQAR).

The generators are vectorised and deterministic: the same arguments (seed included) give the same
tensors on every machine (a CPU ``torch.Generator`` draws everything). ``targets`` holds
``IGNORE_INDEX`` everywhere but the ``k`` answer positions, so a causal model is trained with
``cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)``. Selective copying and induction heads
put their answers at the *last* ``k`` positions; MQAR puts them at its query positions
(``answer_positions``).

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

MQAR vocabulary (``vocab_size = 2 * num_symbols + 1``)::

    0                                  NOISE
    1 .. num_symbols                   keys
    num_symbols + 1 .. 2 * num_symbols values

    inputs  (n, l): [k_1 v_1 k_2 v_2 ... k_N v_N] (N distinct keys, values drawn independently),
                    then l - 2N positions of NOISE except k query positions (distinct, random, in
                    increasing order), each holding one of the N keys (k distinct keys per row).
    targets (n, l): IGNORE_INDEX except at each query position, which holds the value paired with
                    the queried key. The answer is predicted *at* the query token (the model has read
                    the key it must look up).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
NOISE = 0

TASKS = ("selective_copy", "induction", "mqar")


@dataclass
class SyntheticData:
    """A generated set: ``inputs`` and ``targets`` are int64 (n, l); answers are the last ``num_answers``."""

    inputs: torch.Tensor  # (n, l)
    targets: torch.Tensor  # (n, l), IGNORE_INDEX off the answer positions
    vocab_size: int
    num_answers: int  # k answers per example
    num_symbols: int  # distinct answer symbols (chance accuracy is 1 / num_symbols)
    answer_positions: torch.Tensor | None = None  # (n, k) increasing; None: the last k positions

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def answers_at_end(self) -> bool:
        return self.answer_positions is None

    @property
    def positions(self) -> torch.Tensor:
        """Answer positions (n, k), the last k unless ``answer_positions`` says otherwise."""
        if self.answer_positions is not None:
            return self.answer_positions
        l = self.inputs.shape[1]
        return torch.arange(l - self.num_answers, l).expand(len(self), -1)  # (n, k)

    @property
    def answers(self) -> torch.Tensor:
        if self.answer_positions is None:
            return self.targets[:, -self.num_answers:]  # (n, k)
        return self.targets.gather(1, self.answer_positions)  # (n, k)


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


def mqar_vocab_size(num_symbols: int) -> int:
    return 2 * num_symbols + 1


def mqar(num_examples: int, seq_len: int = 64, num_kv_pairs: int = 8, num_queries: int | None = None,
         num_symbols: int = 64, seed: int = 0) -> SyntheticData:
    """Multi-query associative recall: ``num_kv_pairs`` key-value pairs, then ``num_queries`` of the keys
    (default: all of them, in random order) at random positions among NOISE; answer each with its value.

    ``num_symbols`` is the size of both the key and the value alphabet (>= num_kv_pairs, since a row's
    keys are distinct); ``seq_len`` must hold the pairs and the queries (>= 2 N + k).
    """
    _check_int("num_examples", num_examples, 1)
    _check_int("num_kv_pairs", num_kv_pairs, 1)
    num_queries = num_kv_pairs if num_queries is None else num_queries
    _check_int("num_queries", num_queries, 1)
    if num_queries > num_kv_pairs:
        raise ValueError(f"num_queries={num_queries} must be <= num_kv_pairs={num_kv_pairs} "
                         f"(each query asks a distinct key)")
    _check_int("num_symbols", num_symbols, max(2, num_kv_pairs))
    _check_int("seq_len", seq_len, 2 * num_kv_pairs + num_queries)
    g = _generator(seed)
    n, N, k, l = num_examples, num_kv_pairs, num_queries, seq_len
    keys = torch.rand(n, num_symbols, generator=g).argsort(dim=1)[:, :N] + 1  # (n, N) distinct, 1..v_s
    values = torch.randint(num_symbols + 1, 2 * num_symbols + 1, (n, N), generator=g)  # (n, N)
    inputs = torch.full((n, l), NOISE, dtype=torch.long)  # (n, l)
    inputs[:, 0:2 * N:2] = keys
    inputs[:, 1:2 * N:2] = values
    asked = torch.rand(n, N, generator=g).argsort(dim=1)[:, :k]  # (n, k) which pairs are queried
    tail = l - 2 * N
    pos = torch.rand(n, tail, generator=g).argsort(dim=1)[:, :k].sort(dim=1).values + 2 * N  # (n, k)
    inputs.scatter_(1, pos, keys.gather(1, asked))
    targets = torch.full((n, l), IGNORE_INDEX, dtype=torch.long)  # (n, l)
    targets.scatter_(1, pos, values.gather(1, asked))
    return SyntheticData(inputs, targets, mqar_vocab_size(num_symbols), k, num_symbols, answer_positions=pos)


def make_synthetic(task: str, num_examples: int, seq_len: int, seed: int, num_tokens: int = 8,
                   num_symbols: int = 16, num_kv_pairs: int = 8, num_queries: int | None = None) -> SyntheticData:
    """Dispatch by task name (``selective_copy`` | ``induction`` | ``mqar``). ``num_tokens`` is for
    selective copying; ``num_kv_pairs`` (N) and ``num_queries`` (None: N) for MQAR."""
    if task == "selective_copy":
        return selective_copy(num_examples, seq_len, num_tokens, num_symbols, seed)
    if task == "induction":
        return induction_heads(num_examples, seq_len, num_symbols, seed)
    if task == "mqar":
        return mqar(num_examples, seq_len, num_kv_pairs, num_queries, num_symbols, seed)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
