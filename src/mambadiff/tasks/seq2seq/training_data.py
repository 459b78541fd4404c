"""The training pairs a seq2seq data config describes, for the diffusion and the autoregressive
paraphrasers alike: the data's own (the first ``max_train``), a teacher's outputs (``distill``:
sequence-level knowledge distillation, Kim & Rush 2016) joined to them or in their place, and each
pair reversed too with ``both_directions``."""
from __future__ import annotations

import logging
from pathlib import Path

from typing import Sequence

from mambadiff.data.errors import DataError
from mambadiff.data.seq2seq import Seq2SeqDataset, read_seq2seq_jsonl, resolve_split_path
from mambadiff.data.tokenizer import TextTokenizer

from .config import Seq2SeqDataConfig

__all__ = ["distilled_pairs", "training_pairs", "training_split", "with_reversed_pairs"]

log = logging.getLogger(__name__)


def distilled_pairs(path: str | Path) -> list[tuple[str, str]]:
    """``(source, output)`` of each row of a file that `mambadiff generate` or `mambadiff ar generate`
    wrote (read strictly: a bad row is a DataError naming the file, line and field); rows whose output
    is empty are left out, with a warning giving their count."""
    from mambadiff.metrics.io import read_predictions

    if not Path(path).is_file():
        raise DataError("file not found (data.distill: a file of generated outputs for the training sources)",
                        file=path)
    records = read_predictions(path, verbose=False)
    pairs = [(r.source, r.recover) for r in records if r.recover.strip()]
    if len(pairs) < len(records):
        log.warning("%s: %d of %d rows have an empty output and are left out of training", path,
                    len(records) - len(pairs), len(records))
    if not pairs:
        raise DataError("every output is empty: nothing to train on", file=path)
    return pairs


def with_reversed_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` followed by each pair reversed (target -> source), for a symmetric relation such as
    paraphrase: a reversed pair that the list already holds, or one whose sides are equal, is not
    added twice."""
    have = set(pairs)
    reversed_pairs = []
    for src, trg in pairs:
        if (trg, src) not in have:
            have.add((trg, src))
            reversed_pairs.append((trg, src))
    return [*pairs, *reversed_pairs]


def training_pairs(own: Sequence[tuple[str, str]], d: Seq2SeqDataConfig) -> list[tuple[str, str]]:
    """The (source, target) pairs data config ``d`` trains on, from the data's own ``own``: its first
    ``max_train``, the distilled pairs joined or in their place, then each reversed with
    ``both_directions``."""
    pairs = list(own[: d.max_train] if d.max_train else own)
    if d.distill:
        distilled = distilled_pairs(d.distill)
        pairs = distilled if d.distill_mode == "replace" else [*pairs, *distilled]
    return with_reversed_pairs(pairs) if d.both_directions else pairs


def training_split(folder: str | Path, tok: TextTokenizer, d: Seq2SeqDataConfig, layout: str) -> Seq2SeqDataset:
    """The training set of data config ``d`` from ``folder``'s train split, laid out as ``layout``."""
    path = resolve_split_path(folder, "train")
    return Seq2SeqDataset(training_pairs(read_seq2seq_jsonl(path), d), tok, seq_len=d.seq_len, layout=layout,
                          on_overflow=d.on_overflow, path=path)
