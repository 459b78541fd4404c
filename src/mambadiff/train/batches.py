"""What a task sees of the training loop: the ``Task`` protocol, the ``StepContext`` of a micro-batch,
the endless deterministic order of examples (``EpochOrder``) and ``seed_everything``.

Glossary: b batch (the global batch of one step, or this rank's slice of it).
"""
from __future__ import annotations

import random
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

__all__ = ["Task", "StepContext", "EpochOrder", "seed_everything"]


class StepContext:
    """What a task needs to know about the current micro-batch."""

    def __init__(self, seed: int, step: int, micro: int, global_batch: int, offset: int, device):
        self.seed, self.step, self.micro = seed, step, micro
        self.global_batch = global_batch  # examples in this step across ranks (one micro-batch slot)
        self.offset = offset              # where this rank's micro-batch starts within it
        self.device = device

    def generator(self) -> torch.Generator:
        """A CPU generator seeded by (seed, step, micro): identical on every rank."""
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.step * 7919 + self.micro) % (2**63 - 1))
        return g

    def slice(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the global micro-batch."""
        return x[self.offset:self.offset + self.local_batch]

    local_batch: int = 0
    log_metrics: bool = True  # False: this step's metrics are not logged (a task may skip log-only work)


class Task(Protocol):
    def num_train_examples(self) -> int: ...
    def get_batch(self, indices: list[int], device) -> dict[str, Any]: ...
    def loss(self, model: nn.Module, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]: ...
    def evaluate(self, model: nn.Module) -> dict[str, float]: ...
    def count_tokens(self, batch: dict) -> int: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class EpochOrder:
    """Endless deterministic order of example indices: epoch e is a permutation seeded by (seed, e)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        if n <= 0:
            raise ValueError("the training set is empty")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.cursor = 0, 0
        self._perm = self._make_perm()

    def _make_perm(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 9973 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._perm = self._make_perm()
            m = min(k - len(out), self.n - self.cursor)
            out.extend(self._perm[self.cursor:self.cursor + m])
            self.cursor += m
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "n": self.n}

    def check_same_data(self, s: dict) -> None:
        """ValueError when the saved order ran over another number of examples (other data: its
        positions mean nothing here). Orders saved before the count was recorded pass."""
        n = s.get("n")
        if n is not None and n != self.n:
            raise ValueError(f"the checkpoint was trained on {n:,} examples, the data now gives {self.n:,}: "
                             f"resume with the data the run started with")

    def load_state_dict(self, s: dict) -> None:
        self.check_same_data(s)
        self.epoch, self.cursor = s["epoch"], s["cursor"]
        self._perm = self._make_perm()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
