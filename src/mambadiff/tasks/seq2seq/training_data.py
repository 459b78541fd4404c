"""The training pairs a seq2seq data config describes, for the diffusion and the autoregressive
paraphrasers alike: the data's own (the first ``max_train``), a teacher's outputs (``distill``:
sequence-level knowledge distillation, Kim & Rush 2016) joined to them or in their place, and each
pair reversed too with ``both_directions``."""
from __future__ import annotations

import logging
from pathlib import Path

from mambadiff.data.errors import DataError
from mambadiff.data.seq2seq import Seq2SeqDataset, load_seq2seq_split
from mambadiff.data.tokenizer import TextTokenizer

from .config import Seq2SeqDataConfig

__all__ = ["distilled_pairs", "training_split"]

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


def training_split(folder: str | Path, tok: TextTokenizer, d: Seq2SeqDataConfig, layout: str) -> Seq2SeqDataset:
    """The training set of data config ``d`` from ``folder``'s train split, laid out as ``layout``."""
    return load_seq2seq_split(folder, "train", tok, d.seq_len, layout=layout, on_overflow=d.on_overflow,
                              limit=d.max_train or None, both_directions=d.both_directions,
                              distilled=distilled_pairs(d.distill) if d.distill else None,
                              distill_mode=d.distill_mode)
