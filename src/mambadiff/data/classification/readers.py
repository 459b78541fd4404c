"""Classification file readers: bytes (plain or gzip) -> text -> raw rows, and format detection.

The readers report structural problems (ragged rows, unparsable JSON lines, missing fields) to a
`RowChecker`, which raises or counts them by the ``on_bad_row`` policy; file-level problems (an
unreadable or empty file, a missing header column) always raise `DataError`.

``detect_format`` looks at the content: JSON lines -> ``jsonl``; a ``.tsv`` whose header is
``sentence,label`` -> ``sst2``; a header-less CSV whose first field is a polarity (0/2/4) with 2 or
6 columns -> ``sentiment140``; any other CSV/TSV -> ``csv``. Gzip is recognised by its magic bytes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from typing import Iterator, Sequence

from mambadiff.data.errors import DataError

from .rows import RawRow, RowChecker

__all__ = [
    "read_bytes", "read_head", "decode_text", "csv_records", "column_index", "read_delimited",
    "read_jsonl", "is_tsv_path", "detect_format",
]


def read_bytes(path: str) -> bytes:
    """The whole file, decompressed when it is gzip (told by its magic bytes)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror or e}", file=path) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"gzip file is corrupt: {e}", file=path) from None
    return raw


def read_head(path: str, n: int) -> bytes:
    """The first `n` bytes of the (decompressed) file."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
            f.seek(0)
            if magic == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read(n)
            return f.read(n)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read file: {e}", file=path) from None


def decode_text(raw: bytes, encoding: str, path: str) -> str:
    """Decode keeping undecodable bytes as lone surrogates; rows are checked one by one later."""
    codec = "utf-8" if encoding == "auto" else encoding
    try:
        text = raw.decode(codec, errors="surrogateescape")
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} for {path}") from None
    return text[1:] if text.startswith("\ufeff") else text


def csv_records(text: str, path: str, delimiter: str, quoting: bool) -> Iterator[tuple[int, list[str]]]:
    """``(start_line, fields)`` for every non-blank record."""
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delimiter,
        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
        strict=False,
    )
    prev_end = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            # Name the line where the record starts: an unclosed quote makes the reader run on far past it.
            hint = " (an unclosed quote?)" if "field larger than field limit" in str(e) else ""
            raise DataError(f"CSV parse error in the record starting here: {e}{hint}",
                            file=path, line=prev_end + 1) from None
        start = prev_end + 1
        prev_end = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line: not a row
        yield start, fields


def column_index(columns: Sequence[str], wanted: str | int, path: str, role: str, header: bool) -> tuple[int, str]:
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        if not 0 <= wanted < len(columns):
            raise DataError(
                f"{role} index {wanted} is out of range: the file has {len(columns)} columns",
                file=path,
                line=1,
                field=str(wanted),
            )
        return wanted, str(columns[wanted]).strip()
    stripped = [c.strip() for c in columns]
    if wanted in stripped:
        return stripped.index(wanted), wanted
    raise DataError(
        f"missing {role} {wanted!r}; the {'header has' if header else 'layout has'} columns {list(stripped)}",
        file=path,
        line=1 if header else None,
        field=str(wanted),
    )


def read_delimited(
    checker: RowChecker,
    text: str,
    *,
    delimiter: str,
    quoting: bool,
    text_column: str | int,
    label_column: str | int,
    header: bool | Sequence[str],
) -> None:
    """Generic header CSV/TSV, or a header-less file whose column names are given in `header`."""
    path = checker.path
    records = csv_records(text, path, delimiter, quoting)
    if header is True:
        try:
            _, columns = next(records)
        except StopIteration:
            raise DataError("file is empty (expected a header row)", file=path) from None
    elif header is False:
        columns = []  # indices only; the width is fixed by the first row
    else:
        columns = list(header)
    n_cols: int | None = len(columns) if columns else None
    ti = li = None
    t_name = l_name = ""
    if columns:
        ti, t_name = column_index(columns, text_column, path, "text column", header is True)
        li, l_name = column_index(columns, label_column, path, "label column", header is True)
    for line, fields in records:
        if n_cols is None:  # header-less, unnamed: the first row fixes the width
            n_cols = len(fields)
            names = [f"#{i + 1}" for i in range(n_cols)]  # 1-based column numbers
            ti, t_name = column_index(names, text_column, path, "text column", False)
            li, l_name = column_index(names, label_column, path, "label column", False)
        if len(fields) != n_cols:
            # Name the first column the row lacks (or the first extra one).
            col = columns[len(fields)] if len(fields) < n_cols and columns else f"#{min(len(fields), n_cols) + 1}"
            checker.n_rows += 1
            checker.bad(
                "ragged row",
                f"row has {len(fields)} fields, expected {n_cols}",
                line,
                str(col).strip(),
            )
            continue
        assert ti is not None and li is not None
        checker.add(RawRow(line, fields[ti], fields[li], t_name, l_name))


def read_jsonl(checker: RowChecker, text: str, *, text_field: str, label_field: str) -> None:
    # split("\n"), not splitlines(): JSON strings may hold U+2028 or U+0085 unescaped.
    for i, raw_line in enumerate(text.split("\n"), start=1):
        if not raw_line.strip():
            continue
        try:
            obj = json.loads(raw_line)
        except json.JSONDecodeError as e:
            checker.n_rows += 1
            checker.bad("bad json", f"not valid JSON: {e.msg} at character {e.pos}", i, None)
            continue
        if not isinstance(obj, dict):
            checker.n_rows += 1
            checker.bad("bad json", f"expected a JSON object, got {type(obj).__name__}", i, None)
            continue
        missing = [f for f in (text_field, label_field) if f not in obj]
        if missing:
            checker.n_rows += 1
            checker.bad("missing field", f"missing field {missing[0]!r}; the object has {sorted(obj)}", i, missing[0])
            continue
        checker.add(RawRow(i, obj[text_field], obj[label_field], text_field, label_field))


# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------


def is_tsv_path(path: str) -> bool:
    """Whether the file name (without a ``.gz``) ends in ``.tsv``."""
    name = path[:-3] if path.lower().endswith(".gz") else path
    return name.lower().endswith(".tsv")


def detect_format(path: str | os.PathLike) -> str:
    """Guess a format name (sentiment140, sst2, csv or jsonl) from the file's content (see the module docstring)."""
    path = os.fspath(path)
    raw = read_head(path, 1 << 16)
    head = raw.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    first = next((ln for ln in head.split("\n") if ln.strip()), "").rstrip("\r")
    if not first:
        raise DataError("cannot detect the format of an empty file", file=path)
    if first.lstrip().startswith("{"):
        return "jsonl"
    is_tsv = is_tsv_path(path) or ("\t" in first and "," not in first)
    if is_tsv:
        cols = [c.strip() for c in first.split("\t")]
        return "sst2" if cols == ["sentence", "label"] else "csv"
    try:
        fields = next(csv.reader([first]))
    except (csv.Error, StopIteration):
        fields = []
    if len(fields) in (2, 6) and fields[0].strip() in ("0", "2", "4"):
        return "sentiment140"
    return "csv"


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

