"""The data of a classification run: the labelled files, the train / valid / test splits, the
tokenizer and the encoded datasets; `load_eval_data` encodes another labelled file for a trained run.

``data.train`` is required, ``data.valid`` / ``data.test`` optional; a missing split is carved out of the
training file with a stratified split (``data.split`` = train/valid/test fractions, ``data.split_seed``).
The valid and test files are read with the training file's label map, so ids agree and an unknown label
is an error naming the file, line and column. Relative data paths are resolved against the current
working directory: the shipped configs (``sentiment140-mamba``, ``sst2-mamba``, ``imdb-mamba``) expect
to be run from the repository root, where ``../shared/data`` sits beside it.

Long Range Arena (``lra-listops``, ``lra-text``; ``mambadiff.data.lra``): ``data.format: listops`` reads
LRA's ListOps TSV; with ``data.listops.generate`` and no ``data.train``, the ListOps generator writes
the splits into ``data.listops.root/<a folder named by the generator settings>`` (reused when present)
and ``data.train/valid/test`` are set to them. ``data.tokenizer: listops | bytes`` are fixed
vocabularies (ListOps tokens; UTF-8 bytes) with no [CLS]/[SEP]: ``data.max_len`` is then L itself.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mambadiff.data.classification import (ClassificationData, ClassificationDataset, detect_format,
                                           load_classification, resolve_splits)
from mambadiff.data.errors import DataError
from mambadiff.data.lra import (FIXED_TOKENIZERS, fixed_tokenizer, generate_listops_splits, is_fixed_tokenizer_dir,
                                load_fixed_tokenizer, read_listops_tsv)
from mambadiff.data.tokenizer import TextTokenizer, build_tokenizer, load_tokenizer

from .config import ClassifyConfig, ClassifyDataConfig


def _missing_file_error(path: str, key: str) -> DataError:
    return DataError(f"{key}: no such file (relative paths are resolved against the current directory "
                     f"{os.getcwd()}; the shipped configs expect to be run from the repository root)", file=path)


def _load_file(d: ClassifyDataConfig, path: str, key: str, *, label_map=None, label_names=None,
               format: str | None = None, text_column: str | None = None,
               label_column: str | None = None, verbose: bool = True) -> ClassificationData:
    if not Path(path).is_file():
        raise _missing_file_error(path, key)
    fmt = format or d.format
    if fmt == "listops":  # LRA's TSV: labels are the digits 0-9, no cleaning
        return read_listops_tsv(path, on_bad_row=d.on_bad_row, verbose=verbose)
    if fmt == "auto":
        fmt = detect_format(path)
    same_format = format is None or format in (d.format, "auto")
    kwargs: dict[str, Any] = dict(
        format=fmt, label_map=label_map if label_map is not None else d.label_map,
        label_names=label_names if label_names is not None else d.label_names,
        clean=d.clean.to_text_clean(), on_bad_row=d.on_bad_row, verbose=verbose,
        text_column=text_column if text_column is not None else (d.text_column if same_format else None),
        label_column=label_column if label_column is not None else (d.label_column if same_format else None))
    if d.encoding is not None:
        kwargs["encoding"] = d.encoding
    if fmt == "sentiment140":
        kwargs["drop_neutral"] = d.drop_neutral
    return load_classification(path, **kwargs)


@dataclass
class ClassifySplits:
    train: list
    valid: list
    test: list
    label_names: list[str]
    label_map: dict[str, int]


def load_splits(cfg: ClassifyConfig, verbose: bool = True) -> ClassifySplits:
    d = cfg.data
    if not d.train and d.listops.generate:  # generated ListOps splits (reused when present)
        paths = generate_listops_splits(d.listops, verbose=verbose)
        d.train, d.format = str(paths["train"]), "listops"
        d.valid = d.valid or (str(paths["valid"]) if d.listops.n_valid else None)
        d.test = d.test or (str(paths["test"]) if d.listops.n_test else None)
        if verbose:
            print(f"data: generated ListOps splits in {paths['train'].parent}")
    if not d.train:
        raise ValueError("data.train must be set (a training file)")
    train = _load_file(d, d.train, "data.train", verbose=verbose)
    # valid/test are read with the training labels so the ids agree
    other = dict(label_map=train.label_map, label_names=train.label_names, verbose=verbose)
    valid = _load_file(d, d.valid, "data.valid", **other) if d.valid else None
    test = _load_file(d, d.test, "data.test", **other) if d.test else None
    tr, va, te = resolve_splits(train, valid, test, fractions=tuple(d.split), seed=d.split_seed)
    tr = seeded_subset(tr, d.max_train, d.split_seed)
    te = seeded_subset(te, d.max_test, d.split_seed)
    if not tr:
        raise DataError("no training examples left after the split", file=d.train)
    return ClassifySplits(tr, va, te, list(train.label_names), dict(train.label_map))


def seeded_subset(examples: list, size: int, seed: int) -> list:
    """``size`` of ``examples`` drawn with ``seed``, in their original order; all of them when ``size`` is 0
    or not smaller."""
    if not size or len(examples) <= size:
        return examples
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), size))]


def prepare_tokenizer(cfg: ClassifyConfig, train_texts: Iterable[str]) -> TextTokenizer:
    saved = Path(cfg.run_dir) / "tokenizer"
    if saved.is_dir():
        return load_run_tokenizer(saved)
    if cfg.data.tokenizer in FIXED_TOKENIZERS:
        tok = fixed_tokenizer(cfg.data.tokenizer)
        tok.save(saved)
        return tok
    texts = list(train_texts) if cfg.data.tokenizer == "trained" else None
    tok = build_tokenizer(cfg.data.tokenizer, texts, cfg.data.vocab_size)
    tok.save(saved)
    return tok


def load_run_tokenizer(directory: str | Path):
    """A run's saved tokenizer: a fixed one (listops, bytes) or a ``TextTokenizer``."""
    return load_fixed_tokenizer(directory) if is_fixed_tokenizer_dir(directory) else load_tokenizer(directory)


def encode_examples(examples, tok, max_len: int) -> ClassificationDataset:
    """Examples as token ids: [CLS] text [SEP] for WordPiece tokenizers; bare ids for the fixed ones
    (a ListOps source or a text's bytes, truncated to max_len)."""
    return ClassificationDataset(examples, tok, max_len, add_special_tokens=hasattr(tok, "cls_id"))


def load_eval_data(cfg: ClassifyConfig, tok: TextTokenizer, path: str, format: str | None = None,
                   text_column: str | None = None, label_column: str | None = None,
                   verbose: bool = True) -> ClassificationDataset:
    """A labelled file encoded for a trained classifier: the run's label map, cleaning and max_len."""
    data = _load_file(cfg.data, path, "--data", label_map=cfg.data.label_map, label_names=cfg.data.label_names,
                      format=format, text_column=text_column, label_column=label_column, verbose=verbose)
    return encode_examples(data, tok, cfg.data.max_len)
