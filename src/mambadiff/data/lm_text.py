"""Documents for language modelling, read from a plain-text file or the text field of a jsonl file
(gzip or not: IMDB's ``train.jsonl.gz`` is one review a line).

    text    the whole file is one document (Tiny Shakespeare)
    jsonl   one document per line: a JSON object whose ``text_field`` is a string
    auto    jsonl for ``*.jsonl`` / ``*.jsonl.gz``, else text

Bad input is a `DataError` naming the file, the line and the field.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .classification.readers import read_bytes
from .errors import DataError

__all__ = ["LM_FORMATS", "read_documents", "resolve_format"]

LM_FORMATS = ("auto", "text", "jsonl")


def resolve_format(path: str | os.PathLike, fmt: str) -> str:
    if fmt not in LM_FORMATS:
        raise ValueError(f"data.format must be one of {'|'.join(LM_FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    name = Path(path).name.lower()
    return "jsonl" if name.endswith((".jsonl", ".jsonl.gz")) else "text"


def _decode(raw: bytes, path: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"not UTF-8 text (byte {e.start})", file=path, line=line) from None


def _jsonl_documents(text: str, path: str, text_field: str) -> list[str]:
    docs = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"not a JSON object: {e.msg}", file=path, line=n) from None
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", file=path, line=n)
        if text_field not in row:
            raise DataError(f"missing (fields: {', '.join(map(str, row)) or 'none'})", file=path, line=n,
                            field=text_field)
        value = row[text_field]
        if not isinstance(value, str):
            raise DataError(f"expected a string, got {type(value).__name__}", file=path, line=n, field=text_field)
        docs.append(value)
    return docs


def read_documents(path: str | os.PathLike, fmt: str = "auto", text_field: str = "text") -> list[str]:
    """The documents of ``path`` (see the module docstring); an error when it holds no text."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError("no such file", file=path)
    if os.path.isdir(path):
        raise DataError("is a folder, not a text file", file=path)
    text = _decode(read_bytes(path), path)
    docs = _jsonl_documents(text, path, text_field) if resolve_format(path, fmt) == "jsonl" else [text]
    if not any(docs):
        raise DataError("holds no text", file=path)
    return docs
