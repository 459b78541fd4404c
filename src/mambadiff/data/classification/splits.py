"""Stratified train / valid / test splits of classification examples."""

from __future__ import annotations

import math
import random
from typing import Sequence

from .rows import ClassificationData, Example, as_examples

__all__ = ["stratified_split", "resolve_splits"]


def stratified_split(
    examples: ClassificationData | Sequence[Example],
    fractions: Sequence[float] = (0.98, 0.01, 0.01),
    seed: int = 0,
) -> tuple[list[Example], ...]:
    """Split into ``len(fractions)`` parts, stratified by label, deterministic for a given `seed`.

    For each label its examples are shuffled (``random.Random`` seeded by `seed` and the label)
    and cut at ``round(cumulative_fraction * count)``, so every part keeps the label proportions
    up to rounding (a label with few examples may have none in a small part). Within a part the
    examples keep their original order (shuffle for training in the DataLoader).
    """
    examples = as_examples(examples)
    fracs = [float(f) for f in fractions]
    if not fracs or any(not math.isfinite(f) or f < 0 for f in fracs) or abs(sum(fracs) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    by_label: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_label.setdefault(ex[1], []).append(i)
    cum = [sum(fracs[: k + 1]) for k in range(len(fracs))]
    parts: list[list[int]] = [[] for _ in fracs]
    for label in sorted(by_label):
        idx = by_label[label]
        random.Random(f"{seed}:{label}").shuffle(idx)
        n = len(idx)
        cuts = [0] + [round(c * n) for c in cum[:-1]] + [n]
        for k in range(len(fracs)):
            parts[k].extend(idx[cuts[k] : cuts[k + 1]])
    return tuple([examples[i] for i in sorted(p)] for p in parts)


def resolve_splits(
    train: ClassificationData | Sequence[Example],
    valid: ClassificationData | Sequence[Example] | None = None,
    test: ClassificationData | Sequence[Example] | None = None,
    *,
    fractions: Sequence[float] = (0.98, 0.01, 0.01),
    seed: int = 0,
) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, valid, test), carving the missing ones out of `train` with `stratified_split`.

    `fractions` are (train, valid, test); the fractions of the splits that were given are left
    out and the rest renormalised (e.g. only `valid` missing -> train/valid split
    ``0.98/0.01`` renormalised to ``0.99/0.01``).
    """
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, valid, test), got {tuple(fractions)}")
    train_ex = list(as_examples(train))
    valid_ex = None if valid is None else list(as_examples(valid))
    test_ex = None if test is None else list(as_examples(test))
    if valid_ex is not None and test_ex is not None:
        return train_ex, valid_ex, test_ex
    f_train, f_valid, f_test = (float(f) for f in fractions)
    if valid_ex is None and test_ex is None:
        tr, va, te = stratified_split(train_ex, (f_train, f_valid, f_test), seed)
        return tr, va, te
    f_missing = f_valid if valid_ex is None else f_test
    total = f_train + f_missing
    if total <= 0:
        raise ValueError(f"fractions {tuple(fractions)} leave nothing to split")
    tr, carved = stratified_split(train_ex, (f_train / total, f_missing / total), seed)
    if valid_ex is None:
        assert test_ex is not None
        return tr, carved, test_ex
    return tr, valid_ex, carved
