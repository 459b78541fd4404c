"""Classification examples as a torch Dataset: encoding, padding collate, length-bucketed batches.

Dimension letters: b batch, l length (tokens, including [CLS]/[SEP] when added).
"""

from __future__ import annotations

import math
import random
import re
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from .rows import ClassificationData, Example, as_examples

__all__ = ["ClassificationDataset", "collate_classification", "LengthBucketBatchSampler"]


class ClassificationDataset(Dataset):
    """Token ids for ``(text, label)`` examples, encoded once at construction.

    Each item is ``{"input_ids": (l,) long, "attention_mask": (l,) bool (all True), "label": () long}``
    with ``[CLS] tokens [SEP]`` when `add_special_tokens` (the default), truncated to `max_len`
    tokens in total (the [SEP] is kept). `tokenizer` is any object with ``encode(text) -> list[int]``
    (no special tokens), ``pad_id`` and, when `add_special_tokens`, ``cls_id`` and ``sep_id``; an
    ``encode_batch(texts)`` method, if present, is used for speed. With `pretruncate` (default)
    a long text is first cut at a whitespace after ``8 * max_len`` characters and only re-encoded
    whole if the cut text gives too few tokens: exact for tokenizers that never merge across
    whitespace (WordPiece/BERT, byte-level BPE) and ~5x faster on IMDB; pass ``False`` for
    others. The tokenizer is not kept, so
    the dataset pickles cheaply into DataLoader workers. Use `collate` as the DataLoader's
    ``collate_fn``: it right-pads to the longest item of the batch, or to `max_len` when
    `pad_to_max_len`.
    """

    def __init__(
        self,
        examples: ClassificationData | Sequence[Example],
        tokenizer: Any,
        max_len: int = 64,
        *,
        add_special_tokens: bool = True,
        pad_to_max_len: bool = False,
        pretruncate: bool = True,
    ) -> None:
        examples = as_examples(examples)
        required = ["encode", "pad_id"] + (["cls_id", "sep_id"] if add_special_tokens else [])
        missing = [a for a in required if not hasattr(tokenizer, a)]
        if missing:
            raise ValueError(f"tokenizer ({type(tokenizer).__name__}) lacks {missing}")
        min_len = 3 if add_special_tokens else 1
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < min_len:
            raise ValueError(f"max_len must be an int >= {min_len}, got {max_len!r}")
        self.max_len = max_len
        self.add_special_tokens = add_special_tokens
        self.pad_to_max_len = pad_to_max_len
        self.pad_id = int(tokenizer.pad_id)

        texts: list[str] = []
        labels: list[int] = []
        for i, ex in enumerate(examples):
            if not (isinstance(ex, (tuple, list)) and len(ex) == 2):
                raise ValueError(f"examples[{i}] must be a (text, label_int) pair, got {ex!r:.80}")
            text, label = ex
            if not isinstance(text, str):
                raise ValueError(f"examples[{i}] text must be a str, got {type(text).__name__}")
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise ValueError(f"examples[{i}] label must be an int >= 0, got {label!r}")
            texts.append(text)
            labels.append(label)

        budget = max_len - 2 if add_special_tokens else max_len
        encoded = _encode_truncated(tokenizer, texts, budget, pretruncate)
        self.token_ids: list[list[int]] = []
        for i, ids in enumerate(encoded):
            ids = [int(t) for t in ids[:budget]]
            if add_special_tokens:
                ids = [int(tokenizer.cls_id), *ids, int(tokenizer.sep_id)]
            if not ids:
                raise ValueError(f"examples[{i}] encodes to no tokens ({texts[i][:60]!r}); drop it or add special tokens")
            self.token_ids.append(ids)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def lengths(self) -> list[int]:
        """Token count of each item (for length bucketing)."""
        return [len(ids) for ids in self.token_ids]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.token_ids[index], dtype=torch.long)  # (l,)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids, dtype=torch.bool),  # (l,)
            "label": torch.tensor(self.labels[index], dtype=torch.long),  # ()
        }

    def collate(self, batch: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return collate_classification(batch, pad_id=self.pad_id, pad_to=self.max_len if self.pad_to_max_len else None)


_LAST_SPACE = re.compile(r"\s(?=\S*$)")


def _encode_truncated(tokenizer: Any, texts: list[str], budget: int, pretruncate: bool) -> list[list[int]]:
    """First `budget` token ids of each text (maybe more), encoding as little text as possible."""
    encode_batch = getattr(tokenizer, "encode_batch", None)

    def encode(batch: list[str]) -> list[list[int]]:
        return list(encode_batch(batch)) if callable(encode_batch) else [tokenizer.encode(t) for t in batch]

    if not pretruncate:
        return encode(texts)
    limit = max(256, 8 * budget)
    heads: dict[int, str] = {}
    for i, text in enumerate(texts):
        if len(text) > limit:
            # Cut at the last whitespace before `limit`: the words before it tokenize the same
            # as in the full text.
            m = _LAST_SPACE.search(text, 0, limit)
            if m is not None and m.start() > 0:
                heads[i] = text[: m.start()]
    encoded = encode([heads.get(i, t) for i, t in enumerate(texts)])
    redo = [i for i in heads if len(encoded[i]) < budget]
    for i, ids in zip(redo, encode([texts[i] for i in redo])):
        encoded[i] = ids
    return encoded


def collate_classification(
    batch: Sequence[Mapping[str, torch.Tensor]], pad_id: int, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad items to the longest (or to `pad_to`): input_ids (b, l), attention_mask (b, l) bool
    (True on real tokens), label (b,)."""
    if not batch:
        raise ValueError("collate_classification: empty batch")
    lengths = [int(item["input_ids"].shape[0]) for item in batch]
    longest = max(lengths)
    if pad_to is not None and pad_to < longest:
        raise ValueError(f"collate_classification: pad_to={pad_to} is shorter than the longest item ({longest})")
    width = longest if pad_to is None else pad_to
    input_ids = torch.full((len(batch), width), int(pad_id), dtype=torch.long)  # (b, l)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)  # (b, l)
    for row, (item, n) in enumerate(zip(batch, lengths)):
        input_ids[row, :n] = item["input_ids"]
        mask[row, :n] = True
    labels = torch.stack([torch.as_tensor(item["label"], dtype=torch.long) for item in batch])  # (b,)
    return {"input_ids": input_ids, "attention_mask": mask, "label": labels}


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of indices with similar lengths (less padding), still shuffled.

    Indices are shuffled, cut into pools of ``batch_size * pool_batches``, each pool is sorted by
    length and cut into batches, and the batches are shuffled. Deterministic for a given
    (`seed`, epoch); call `set_epoch` each epoch for a new order.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        pool_batches: int = 50,
        seed: int = 0,
    ) -> None:
        if batch_size < 1 or pool_batches < 1:
            raise ValueError(f"batch_size and pool_batches must be >= 1, got {batch_size}, {pool_batches}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.pool_batches = pool_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        pool = self.batch_size * self.pool_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=lambda i: self.lengths[i])
            batches.extend(chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        n, pool = len(self.lengths), self.batch_size * self.pool_batches
        sizes = [min(pool, n - s) for s in range(0, n, pool)]
        if self.drop_last:
            return sum(size // self.batch_size for size in sizes)
        return sum(math.ceil(size / self.batch_size) for size in sizes)


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------
