"""Data: tokenizers, DiffuSeq seq2seq jsonl, the built-in paraphrase corpus, the QQP converter.

Import the submodules directly for the full API; the names below are the common entry points.
"""
from .builtin_corpus import generate_paraphrase_corpus, write_builtin_corpus
from .errors import DataError
from .qqp import convert_qqp
from .seq2seq import (
    Seq2SeqDataset,
    build_example,
    collate,
    load_seq2seq_split,
    read_seq2seq_jsonl,
    source_length,
    truncated_lengths,
)
from .tokenizer import (
    TextTokenizer,
    bert_tokenizer,
    build_tokenizer,
    load_tokenizer,
    train_tokenizer,
)

__all__ = [
    "DataError",
    "TextTokenizer",
    "bert_tokenizer",
    "train_tokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "Seq2SeqDataset",
    "build_example",
    "collate",
    "load_seq2seq_split",
    "read_seq2seq_jsonl",
    "source_length",
    "truncated_lengths",
    "generate_paraphrase_corpus",
    "write_builtin_corpus",
    "convert_qqp",
]
