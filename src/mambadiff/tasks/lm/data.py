"""The text of a language-model run as token streams: documents read, the tokenizer built (or read
back from the run folder), every split encoded into one stream with <eos> between documents.

Glossary: n tokens in a stream.

The validation split is ``data.valid`` when given, else the last ``data.valid_fraction`` of the
training stream (nanoGPT cuts Tiny Shakespeare's characters 90/10 the same way). Characters and BPE
are built from the training split only, so nothing of the validation text leaks into the vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mambadiff.data.errors import DataError
from mambadiff.data.lm_text import read_documents
from mambadiff.data.lm_tokenizers import LMTokenizer, build_lm_tokenizer, load_lm_tokenizer
from mambadiff.fileio import atomic_write_folder

from .config import LMDataConfig

__all__ = ["LMStreams", "encode_documents", "load_streams", "prepare_lm_tokenizer"]


@dataclass
class LMStreams:
    train: torch.Tensor  # (n,) int32 (a quarter of long's memory for long texts)
    valid: torch.Tensor  # (n,) int32
    train_text: list[str]  # the documents the tokenizer is built from


def _ids(tok: LMTokenizer, doc: str) -> np.ndarray:
    if tok.kind == "bytes":  # no Python list per byte: IMDB's reviews are 33 MB
        return np.frombuffer(doc.encode("utf-8", errors="surrogateescape"), dtype=np.uint8)
    return np.asarray(tok.encode(doc), dtype=np.int64)


def encode_documents(tok: LMTokenizer, docs: list[str]) -> torch.Tensor:
    """Documents as one stream (n,) int32, each followed by <eos> (a single document has none after it)."""
    eos = np.array([tok.eos_id], dtype=np.int64)
    parts = [p for doc in docs for p in ((_ids(tok, doc), eos) if len(docs) > 1 else (_ids(tok, doc),))]
    stream = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, dtype=np.int32)
    return torch.from_numpy(stream)


def _split_documents(d: LMDataConfig) -> tuple[list[str], list[str] | None]:
    """(training documents, validation documents or None: cut from the training stream)."""
    train = read_documents(d.train, d.format, d.text_field)
    if d.valid:
        return train, read_documents(d.valid, d.format, d.text_field)
    if len(train) == 1:  # one document (a text file): cut its characters, as nanoGPT does
        cut = int(len(train[0]) * (1 - d.valid_fraction))
        return [train[0][:cut]], [train[0][cut:]]
    cut = max(1, int(len(train) * (1 - d.valid_fraction)))  # whole documents go to one side
    if cut >= len(train):
        raise DataError(f"{len(train)} documents leave none for validation at data.valid_fraction="
                        f"{d.valid_fraction}: give data.valid", file=d.train)
    return train[:cut], train[cut:]


def prepare_lm_tokenizer(d: LMDataConfig, train_docs: list[str], run_dir: str | Path | None,
                         reuse: bool) -> LMTokenizer:
    """The run's tokenizer: read back from ``run_dir/tokenizer`` when ``reuse`` (a resumed run), else
    built from the training documents and written there atomically (when ``run_dir`` is given)."""
    folder = None if run_dir is None else Path(run_dir) / "tokenizer"
    if reuse and folder is not None and folder.is_dir():
        tok = load_lm_tokenizer(folder)
        if tok.kind != d.tokenizer:
            raise ValueError(f"{folder} holds a {tok.kind} tokenizer but the config says data.tokenizer={d.tokenizer}")
        return tok
    tok = build_lm_tokenizer(d.tokenizer, train_docs, d.vocab_size)
    if folder is not None:
        atomic_write_folder(folder, tok.save)
    return tok


def load_streams(d: LMDataConfig, tok_for=None) -> tuple[LMStreams, LMTokenizer]:
    """Read and encode the splits. ``tok_for(train_docs)`` gives the tokenizer (default: built from
    them, not saved). Raises DataError when a split is shorter than one window."""
    train_docs, valid_docs = _split_documents(d)
    tok = tok_for(train_docs) if tok_for is not None else build_lm_tokenizer(d.tokenizer, train_docs, d.vocab_size)
    train = encode_documents(tok, train_docs)  # (n,)
    valid = encode_documents(tok, valid_docs)  # (n,)
    if d.max_train_tokens:
        train = train[: d.max_train_tokens]
    if d.max_valid_tokens:
        valid = valid[: d.max_valid_tokens]
    if len(train) < d.block_size + 1:
        raise DataError(f"the training split has {len(train):,} tokens, fewer than data.block_size + 1 = "
                        f"{d.block_size + 1}", file=d.train)
    if len(valid) < 2:
        raise DataError(f"the validation split has {len(valid)} tokens; it needs at least 2",
                        file=d.valid or d.train)
    return LMStreams(train, valid, train_docs), tok
