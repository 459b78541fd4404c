"""Text-classification data: loaders, encoding into a torch Dataset, stratified splits.

Dimension letters: b batch, l length (tokens, including [CLS]/[SEP] when added).

Loaders
-------
Every loader returns a `ClassificationData`: ``.examples`` (a list of ``(text, label_int)``),
``.label_names`` (``label_names[label_int]``) and bookkeeping (``.label_map``, skip/drop counts).
`load_classification(path, format="auto", ...)` is the one entry point; the per-format functions
are thin wrappers around the same machinery.

==============  =====================================================================================
format          file
==============  =====================================================================================
sentiment140    no header; the original 6 columns ``polarity,id,date,query,user,text`` or the 2-column
                ``polarity,text`` variant, told apart by the column count of the first row. Labels
                ``0/2/4`` -> ``0/1/2`` (negative/neutral/positive) by default; ``drop_neutral=True``
                drops polarity-2 rows (count printed) and defaults the map to ``{0: 0, 4: 1}``.
sst2            TSV with header ``sentence<TAB>label`` (GLUE SST-2), no quoting; labels 0/1.
imdb            JSON lines (optionally gzip) ``{"text", "label", "id"}``; labels 0/1.
csv             delimited text with a header; ``text_column`` / ``label_column`` pick the columns
                (``.tsv`` files default to a tab delimiter without quoting).
jsonl           JSON lines (optionally gzip); ``text_field`` / ``label_field`` pick the fields.
==============  =====================================================================================

``format="auto"`` looks at the content: JSON lines -> ``jsonl``; a ``.tsv`` whose header is
``sentence,label`` -> ``sst2``; a header-less CSV whose first field is a polarity (0/2/4) with 2 or
6 columns -> ``sentiment140``; any other CSV/TSV -> ``csv``. Gzip is recognised by its magic bytes.
IMDB files are detected as ``jsonl`` (labels named ``"0"``/``"1"``): pass ``format="imdb"`` for the
negative/positive names.

Labels
------
``label_map`` is either a mapping ``raw label -> int`` (ints must cover ``0..K-1``; several raw
labels may share an id) or a sequence of raw labels whose positions are the ids
(``["negative", "neutral", "positive"]``). Raw labels are compared as stripped strings, and
integer-looking values are normalised (``4``, ``"4"`` and ``"4.0"`` are the same label). Without a
``label_map`` the generic formats discover the labels: sorted numerically when they all look like
integers, otherwise sorted as strings. ``label_names`` overrides the names in the metadata.

Bad rows
--------
A ragged row (wrong number of fields), a missing field, an undecodable byte, an empty text (also
one that becomes empty after cleaning), an empty or unknown label, or an unparsable JSON line is a
*bad row*. With ``on_bad_row="raise"`` (default) the first one raises `DataError` naming the file,
the line (1-based physical line where the record starts, header included) and the column. With
``on_bad_row="skip"`` bad rows are skipped, counted per reason in ``ClassificationData.skipped``,
and a summary line with the count is reported: logged as a warning on logger
``mambadiff.data.classification`` when logging is configured, else printed to stderr (unless
``verbose=False``). Rows are never dropped silently. Blank lines are not rows and
are ignored. File-level problems (missing header column, unreadable file, no rows) always raise.

Encoding
--------
``encoding="utf-8"`` (the default for every format except sentiment140) is strict: a byte sequence
that is not UTF-8 is a bad row (column named). ``encoding="auto"`` (the default for sentiment140,
whose original file is latin-1) tries UTF-8 for every field and decodes the bytes that are not valid
UTF-8 as latin-1 (which cannot fail), so a file that mixes both reads correctly; the number of rows
that needed the fallback is printed and kept in ``ClassificationData.n_latin1_fallback``. Any other
codec name is used strictly. A UTF-8 byte-order mark is ignored.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import os
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from mambadiff.data.errors import DataError
from mambadiff.data.text_clean import TextCleanConfig, clean_text

__all__ = [
    "ClassificationData",
    "ClassificationDataset",
    "LengthBucketBatchSampler",
    "collate_classification",
    "detect_format",
    "load_classification",
    "load_sentiment140",
    "load_sst2",
    "load_imdb",
    "load_csv",
    "load_jsonl",
    "stratified_split",
    "resolve_splits",
    "SENTIMENT140_COLUMNS",
    "SENTIMENT140_COLUMNS_2",
    "FORMATS",
]

logger = logging.getLogger("mambadiff.data.classification")

Example = tuple[str, int]
OnBadRow = Literal["raise", "skip"]
FORMATS = ("sentiment140", "sst2", "imdb", "csv", "jsonl")

SENTIMENT140_COLUMNS = ("polarity", "id", "date", "query", "user", "text")
SENTIMENT140_COLUMNS_2 = ("polarity", "text")
_SENTIMENT140_MAP_3 = {"0": 0, "2": 1, "4": 2}
_SENTIMENT140_NAMES_3 = ["negative", "neutral", "positive"]
_SENTIMENT140_MAP_2 = {"0": 0, "4": 1}
_BINARY_MAP = {"0": 0, "1": 1}
_BINARY_NAMES = ["negative", "positive"]

_INT_LIKE = re.compile(r"[+-]?\d+(?:\.0*)?")
# surrogateescape turns each undecodable byte 0xXY into the lone surrogate U+DCXY.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


# ---------------------------------------------------------------------------------------------
# Result container
# ---------------------------------------------------------------------------------------------


@dataclass
class ClassificationData:
    """Loaded examples plus what is known about them."""

    examples: list[Example]
    label_names: list[str]
    path: str
    format: str
    label_map: dict[str, int]  # normalised raw label -> id
    n_rows: int = 0  # data rows read (header and blank lines excluded)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (on_bad_row="skip")
    n_dropped: int = 0  # rows dropped on request (drop_labels / drop_neutral)
    n_latin1_fallback: int = 0  # rows with a field decoded as latin-1 (encoding="auto")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def label_counts(self) -> list[int]:
        """Examples per label id, ``len == num_labels``."""
        counts = [0] * self.num_labels
        for _, y in self.examples:
            counts[y] += 1
        return counts

    def __len__(self) -> int:
        return len(self.examples)


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _notify(message: str, verbose: bool) -> None:
    """Report a count to the user: through logging when it is configured, else on stderr."""
    if logger.hasHandlers():
        logger.warning(message)
    elif verbose:
        print(message, file=sys.stderr)


def _label_key(value: Any) -> str:
    """Normalise a raw label for comparison: stripped string, integer-looking -> canonical int."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    s = str(value).strip()
    if _INT_LIKE.fullmatch(s):
        return str(int(s.split(".")[0]))
    return s


def _is_int_like(key: str) -> bool:
    return _INT_LIKE.fullmatch(key) is not None


def _normalise_label_spec(
    label_map: Mapping[Any, int] | Sequence[Any] | None,
    label_names: Sequence[str] | None,
) -> tuple[dict[str, int] | None, list[str] | None]:
    """Turn the user's `label_map` into ``{key: id}`` and the default label names."""
    if label_map is None:
        return None, (list(label_names) if label_names is not None else None)
    mapping: dict[str, int] = {}
    names_by_id: dict[int, list[str]] = {}
    if isinstance(label_map, Mapping):
        items = list(label_map.items())
    elif isinstance(label_map, Sequence) and not isinstance(label_map, (str, bytes)):
        items = [(raw, i) for i, raw in enumerate(label_map)]
    else:
        raise ValueError(
            f"label_map must be a mapping raw label -> int or a sequence of raw labels, "
            f"got {type(label_map).__name__}"
        )
    for raw, idx in items:
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise ValueError(f"label_map[{raw!r}] must be an int >= 0, got {idx!r}")
        key = _label_key(raw)
        if key in mapping and mapping[key] != idx:
            raise ValueError(f"label_map maps {raw!r} (same label as {key!r}) to both {mapping[key]} and {idx}")
        mapping[key] = idx
        names_by_id.setdefault(idx, [])
        if key not in names_by_id[idx]:
            names_by_id[idx].append(key)
    if not mapping:
        raise ValueError("label_map is empty")
    k = max(names_by_id) + 1
    if sorted(names_by_id) != list(range(k)):
        missing = sorted(set(range(k)) - set(names_by_id))
        raise ValueError(f"label_map ids must cover 0..{k - 1} without gaps; missing {missing}")
    names = ["/".join(names_by_id[i]) for i in range(k)]
    if label_names is not None:
        if len(label_names) != k:
            raise ValueError(f"label_names has {len(label_names)} names but label_map has {k} ids")
        names = [str(n) for n in label_names]
    return mapping, names


def _read_bytes(path: str) -> bytes:
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


def _read_head(path: str, n: int) -> bytes:
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


def _decode(raw: bytes, encoding: str, path: str) -> str:
    """Decode keeping undecodable bytes as lone surrogates; rows are checked one by one later."""
    codec = "utf-8" if encoding == "auto" else encoding
    try:
        text = raw.decode(codec, errors="surrogateescape")
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} for {path}") from None
    return text[1:] if text.startswith("\ufeff") else text


def _format_escaped(value: str) -> str:
    bad = _ESCAPED_BYTE.search(value)
    assert bad is not None
    return f"byte 0x{ord(bad.group()) - 0xDC00:02x} at character {bad.start()}"


def _latin1_fallback(value: str) -> str:
    """Escaped bytes (U+DC80..U+DCFF) -> the latin-1 character with that byte value."""
    return _ESCAPED_BYTE.sub(lambda m: chr(ord(m.group()) - 0xDC00), value)


# ---------------------------------------------------------------------------------------------
# Row validation: shared by every format
# ---------------------------------------------------------------------------------------------


@dataclass
class _RawRow:
    line: int  # 1-based physical line where the record starts
    text: Any
    label: Any
    text_col: str
    label_col: str


class _RowChecker:
    """Applies the bad-row policy and the label/text checks to raw rows, collecting examples."""

    def __init__(
        self,
        path: str,
        *,
        on_bad_row: OnBadRow,
        encoding: str,
        mapping: dict[str, int] | None,
        drop_keys: set[str],
        clean: TextCleanConfig | None,
    ) -> None:
        if on_bad_row not in ("raise", "skip"):
            raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
        self.path = path
        self.on_bad_row = on_bad_row
        self.auto_encoding = encoding == "auto"
        self.encoding = "utf-8" if self.auto_encoding else encoding
        self.mapping = mapping
        self.drop_keys = drop_keys
        self.clean = clean
        self.rows: list[tuple[str, str]] = []  # (text, label key), labels mapped at the end
        self.skipped: Counter[str] = Counter()
        self.first_skip: str | None = None
        self.n_rows = 0
        self.n_dropped = 0
        self.n_latin1 = 0

    def bad(self, reason: str, problem: str, line: int | None, column: str | None) -> None:
        """Raise, or count the bad row when skipping."""
        err = DataError(problem, file=self.path, line=line, field=column)
        if self.on_bad_row == "raise":
            raise err
        self.skipped[reason] += 1
        if self.first_skip is None:
            self.first_skip = str(err)

    def _decoded(self, value: str, row: _RawRow, column: str) -> str | None:
        if not _ESCAPED_BYTE.search(value):
            return value
        if self.auto_encoding:
            return _latin1_fallback(value)
        self.bad(
            "encoding",
            f"not valid {self.encoding} ({_format_escaped(value)}); "
            f"pass encoding='auto' (UTF-8 with latin-1 fallback) or the file's encoding",
            row.line,
            column,
        )
        return None

    def add(self, row: _RawRow) -> None:
        self.n_rows += 1
        # Label first: requested drops (e.g. neutral) are not checked further.
        if row.label is None or isinstance(row.label, (list, dict)):
            kind = "null" if row.label is None else type(row.label).__name__
            self.bad("bad label", f"label is {kind}, expected a string or number", row.line, row.label_col)
            return
        fell_back = False
        if isinstance(row.label, str):
            label = self._decoded(row.label, row, row.label_col)
            if label is None:
                return
            fell_back = label is not row.label
        else:
            label = row.label
        key = _label_key(label)
        if key == "":
            self.bad("empty label", "label is empty", row.line, row.label_col)
            return
        if key in self.drop_keys:
            self.n_dropped += 1
            return
        if self.mapping is not None and key not in self.mapping:
            known = ", ".join(repr(k) for k in self.mapping)
            self.bad("unknown label", f"unknown label {label!r}; expected one of {known}", row.line, row.label_col)
            return

        if not isinstance(row.text, str):
            kind = "null" if row.text is None else type(row.text).__name__
            self.bad("bad text", f"text is {kind}, expected a string", row.line, row.text_col)
            return
        text = self._decoded(row.text, row, row.text_col)
        if text is None:
            return
        fell_back |= text is not row.text
        if not text.strip():
            self.bad("empty text", "text is empty", row.line, row.text_col)
            return
        if self.clean is not None:
            cleaned = clean_text(text, self.clean)
            if not cleaned.strip():
                self.bad(
                    "empty after cleaning",
                    f"text is empty after cleaning (was {text[:60]!r})",
                    row.line,
                    row.text_col,
                )
                return
            text = cleaned
        self.n_latin1 += fell_back
        self.rows.append((text, key))

    def finish(self, fmt: str, names: list[str] | None, verbose: bool) -> ClassificationData:
        mapping = self.mapping
        if mapping is None:  # discover the labels
            keys = {k for _, k in self.rows}
            if keys and all(_is_int_like(k) for k in keys):
                ordered = sorted(keys, key=int)
            else:
                ordered = sorted(keys)
            mapping = {k: i for i, k in enumerate(ordered)}
            if names is None:
                names = ordered
            elif len(names) != len(ordered):
                raise DataError(
                    f"label_names has {len(names)} names but the file has {len(ordered)} labels {ordered}",
                    file=self.path,
                )
        assert names is not None
        examples = [(t, mapping[k]) for t, k in self.rows]
        if self.skipped:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.skipped.items()))
            _notify(
                f"{self.path}: skipped {sum(self.skipped.values())} bad row(s) of {self.n_rows} "
                f"({reasons}); first: {self.first_skip}",
                verbose,
            )
        if self.n_dropped:
            dropped = ", ".join(sorted(self.drop_keys))
            _notify(f"{self.path}: dropped {self.n_dropped} row(s) with label {dropped} as requested", verbose)
        if self.n_latin1:
            _notify(f"{self.path}: {self.n_latin1} row(s) were not valid UTF-8 and were decoded as latin-1", verbose)
        if not examples:
            raise DataError(
                f"no examples left ({self.n_rows} rows read, {sum(self.skipped.values())} skipped, "
                f"{self.n_dropped} dropped)",
                file=self.path,
            )
        return ClassificationData(
            examples=examples,
            label_names=list(names),
            path=self.path,
            format=fmt,
            label_map=dict(mapping),
            n_rows=self.n_rows,
            skipped=dict(self.skipped),
            n_dropped=self.n_dropped,
            n_latin1_fallback=self.n_latin1,
        )


# ---------------------------------------------------------------------------------------------
# Readers: yield raw rows, report structural problems through the checker
# ---------------------------------------------------------------------------------------------


def _csv_records(text: str, path: str, delimiter: str, quoting: bool) -> Iterator[tuple[int, list[str]]]:
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
            raise DataError(f"CSV parse error: {e}", file=path, line=reader.line_num) from None
        start = prev_end + 1
        prev_end = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line: not a row
        yield start, fields


def _column_index(columns: Sequence[str], wanted: str | int, path: str, role: str, header: bool) -> tuple[int, str]:
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


def _read_delimited(
    checker: _RowChecker,
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
    records = _csv_records(text, path, delimiter, quoting)
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
        ti, t_name = _column_index(columns, text_column, path, "text column", header is True)
        li, l_name = _column_index(columns, label_column, path, "label column", header is True)
    for line, fields in records:
        if n_cols is None:  # header-less, unnamed: the first row fixes the width
            n_cols = len(fields)
            names = [f"#{i + 1}" for i in range(n_cols)]  # 1-based column numbers
            ti, t_name = _column_index(names, text_column, path, "text column", False)
            li, l_name = _column_index(names, label_column, path, "label column", False)
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
        checker.add(_RawRow(line, fields[ti], fields[li], t_name, l_name))


def _read_jsonl(checker: _RowChecker, text: str, *, text_field: str, label_field: str) -> None:
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
        checker.add(_RawRow(i, obj[text_field], obj[label_field], text_field, label_field))


# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------


def _strip_gz(path: str) -> str:
    return path[:-3] if path.lower().endswith(".gz") else path


def detect_format(path: str | os.PathLike) -> str:
    """Guess one of `FORMATS` from the file's content (see the module docstring)."""
    path = os.fspath(path)
    raw = _read_head(path, 1 << 16)
    head = raw.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    first = next((ln for ln in head.split("\n") if ln.strip()), "").rstrip("\r")
    if not first:
        raise DataError("cannot detect the format of an empty file", file=path)
    if first.lstrip().startswith("{"):
        return "jsonl"
    is_tsv = _strip_gz(path).lower().endswith(".tsv") or ("\t" in first and "," not in first)
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


def _drop_keys(drop_labels: Iterable[Any]) -> set[str]:
    if isinstance(drop_labels, (str, bytes)):
        drop_labels = [drop_labels]
    return {_label_key(v) for v in drop_labels}


def load_sentiment140(
    path: str | os.PathLike,
    *,
    label_map: Mapping[Any, int] | Sequence[Any] | None = None,
    label_names: Sequence[str] | None = None,
    drop_neutral: bool = False,
    drop_labels: Iterable[Any] = (),
    text_column: str = "text",
    label_column: str = "polarity",
    clean: TextCleanConfig | None = None,
    on_bad_row: OnBadRow = "raise",
    encoding: str = "auto",
    verbose: bool = True,
) -> ClassificationData:
    """Sentiment140 CSV, 6-column original or 2-column ``polarity,text`` (detected from row 1).

    Default labels: ``{0: 0, 2: 1, 4: 2}`` (negative/neutral/positive), or ``{0: 0, 4: 1}`` with
    ``drop_neutral=True``. Column names are those of `SENTIMENT140_COLUMNS` (6-column) or
    `SENTIMENT140_COLUMNS_2` (2-column).
    """
    path = os.fspath(path)
    drop = _drop_keys(drop_labels)
    if drop_neutral:
        drop.add("2")
    if label_map is None:
        if drop_neutral:
            label_map, default_names = _SENTIMENT140_MAP_2, _BINARY_NAMES
        else:
            label_map, default_names = _SENTIMENT140_MAP_3, _SENTIMENT140_NAMES_3
        label_names = default_names if label_names is None else label_names
    mapping, names = _normalise_label_spec(label_map, label_names)
    checker = _RowChecker(path, on_bad_row=on_bad_row, encoding=encoding, mapping=mapping, drop_keys=drop, clean=clean)
    text = _decode(_read_bytes(path), encoding, path)
    first = next(_csv_records(text, path, ",", True), None)
    if first is None:
        raise DataError("file has no rows", file=path)
    n = len(first[1])
    if n == 6:
        layout = SENTIMENT140_COLUMNS
    elif n == 2:
        layout = SENTIMENT140_COLUMNS_2
    else:
        raise DataError(
            f"first row has {n} fields; Sentiment140 files have 6 (polarity,id,date,query,user,text) "
            f"or 2 (polarity,text)",
            file=path,
            line=first[0],
        )
    _read_delimited(
        checker,
        text,
        delimiter=",",
        quoting=True,
        text_column=text_column,
        label_column=label_column,
        header=layout,
    )
    return checker.finish("sentiment140", names, verbose)


def load_csv(
    path: str | os.PathLike,
    *,
    text_column: str | int = "text",
    label_column: str | int = "label",
    label_map: Mapping[Any, int] | Sequence[Any] | None = None,
    label_names: Sequence[str] | None = None,
    drop_labels: Iterable[Any] = (),
    delimiter: str | None = None,
    quoting: bool | None = None,
    has_header: bool = True,
    clean: TextCleanConfig | None = None,
    on_bad_row: OnBadRow = "raise",
    encoding: str = "utf-8",
    verbose: bool = True,
    _format: str = "csv",
) -> ClassificationData:
    """Delimited file with a header; columns picked by name (or by 0-based index).

    `delimiter` defaults to a tab for ``.tsv`` files and ``,`` otherwise; `quoting` (CSV double
    quotes) defaults to on for CSV and off for TSV. With ``has_header=False`` the columns must be
    given as indices.
    """
    path = os.fspath(path)
    is_tsv = _strip_gz(path).lower().endswith(".tsv")
    if delimiter is None:
        delimiter = "\t" if is_tsv else ","
    if quoting is None:
        quoting = delimiter != "\t"
    mapping, names = _normalise_label_spec(label_map, label_names)
    checker = _RowChecker(
        path, on_bad_row=on_bad_row, encoding=encoding, mapping=mapping, drop_keys=_drop_keys(drop_labels), clean=clean
    )
    text = _decode(_read_bytes(path), encoding, path)
    _read_delimited(
        checker,
        text,
        delimiter=delimiter,
        quoting=quoting,
        text_column=text_column,
        label_column=label_column,
        header=has_header,
    )
    return checker.finish(_format, names, verbose)


def load_sst2(
    path: str | os.PathLike,
    *,
    text_column: str = "sentence",
    label_column: str = "label",
    label_map: Mapping[Any, int] | Sequence[Any] | None = None,
    label_names: Sequence[str] | None = None,
    clean: TextCleanConfig | None = None,
    on_bad_row: OnBadRow = "raise",
    encoding: str = "utf-8",
    verbose: bool = True,
) -> ClassificationData:
    """GLUE SST-2 TSV (header ``sentence<TAB>label``, no quoting); labels 0/1 -> negative/positive."""
    if label_map is None:
        label_map = _BINARY_MAP
        label_names = _BINARY_NAMES if label_names is None else label_names
    return load_csv(
        path,
        text_column=text_column,
        label_column=label_column,
        label_map=label_map,
        label_names=label_names,
        delimiter="\t",
        quoting=False,
        clean=clean,
        on_bad_row=on_bad_row,
        encoding=encoding,
        verbose=verbose,
        _format="sst2",
    )


def load_jsonl(
    path: str | os.PathLike,
    *,
    text_field: str = "text",
    label_field: str = "label",
    label_map: Mapping[Any, int] | Sequence[Any] | None = None,
    label_names: Sequence[str] | None = None,
    drop_labels: Iterable[Any] = (),
    clean: TextCleanConfig | None = None,
    on_bad_row: OnBadRow = "raise",
    encoding: str = "utf-8",
    verbose: bool = True,
    _format: str = "jsonl",
) -> ClassificationData:
    """JSON lines (plain or gzip), one object per line; fields picked by name."""
    path = os.fspath(path)
    mapping, names = _normalise_label_spec(label_map, label_names)
    checker = _RowChecker(
        path, on_bad_row=on_bad_row, encoding=encoding, mapping=mapping, drop_keys=_drop_keys(drop_labels), clean=clean
    )
    text = _decode(_read_bytes(path), encoding, path)
    _read_jsonl(checker, text, text_field=text_field, label_field=label_field)
    return checker.finish(_format, names, verbose)


def load_imdb(
    path: str | os.PathLike,
    *,
    text_field: str = "text",
    label_field: str = "label",
    label_map: Mapping[Any, int] | Sequence[Any] | None = None,
    label_names: Sequence[str] | None = None,
    clean: TextCleanConfig | None = None,
    on_bad_row: OnBadRow = "raise",
    encoding: str = "utf-8",
    verbose: bool = True,
) -> ClassificationData:
    """IMDB JSON lines ``{"text", "label", "id"}`` (plain or gzip); label 1 = positive."""
    if label_map is None:
        label_map = _BINARY_MAP
        label_names = _BINARY_NAMES if label_names is None else label_names
    return load_jsonl(
        path,
        text_field=text_field,
        label_field=label_field,
        label_map=label_map,
        label_names=label_names,
        clean=clean,
        on_bad_row=on_bad_row,
        encoding=encoding,
        verbose=verbose,
        _format="imdb",
    )


def load_classification(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    text_column: str | int | None = None,
    label_column: str | int | None = None,
    text_field: str | None = None,
    label_field: str | None = None,
    label_map: Mapping[Any, int] | Sequence[Any] | None = None,
    label_names: Sequence[str] | None = None,
    drop_neutral: bool = False,
    drop_labels: Iterable[Any] = (),
    clean: TextCleanConfig | bool | None = None,
    on_bad_row: OnBadRow = "raise",
    encoding: str | None = None,
    delimiter: str | None = None,
    verbose: bool = True,
) -> ClassificationData:
    """Load a classification file as ``(text, label_int)`` examples plus label names.

    `format`: ``"auto"`` (see `detect_format`) or one of `FORMATS`. `text_column`/`label_column`
    name the text and label columns (fields for JSON lines; `text_field`/`label_field` are
    accepted as aliases); ``None`` keeps the format's default. `clean`: a `TextCleanConfig`,
    ``True`` for the default config, ``None``/``False`` for no cleaning. `encoding`: ``None``
    keeps the format's default (``"auto"`` for sentiment140, ``"utf-8"`` otherwise).
    `drop_neutral` only applies to sentiment140. See the module docstring for labels, bad rows
    and encodings.
    """
    path = os.fspath(path)
    if format == "auto":
        format = detect_format(path)
    if format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    for alias, name, value in (("text_field", "text_column", text_column), ("label_field", "label_column", label_column)):
        alias_value = text_field if alias == "text_field" else label_field
        if alias_value is not None and value is not None and alias_value != value:
            raise ValueError(f"{alias}={alias_value!r} and {name}={value!r} disagree; pass one of them")
    text_column = text_column if text_column is not None else text_field
    label_column = label_column if label_column is not None else label_field
    if drop_neutral and format != "sentiment140":
        raise ValueError(f"drop_neutral applies to format='sentiment140' only (got {format!r}); use drop_labels")
    if drop_labels and format in ("sst2", "imdb"):
        raise ValueError(f"drop_labels is not supported for format={format!r}; use format='csv'/'jsonl'")
    if delimiter is not None and format not in ("csv",):
        raise ValueError(f"delimiter applies to format='csv' only (got {format!r})")
    clean_cfg: TextCleanConfig | None
    if clean is True:
        clean_cfg = TextCleanConfig()
    elif clean is False or clean is None:
        clean_cfg = None
    elif isinstance(clean, TextCleanConfig):
        clean_cfg = clean
    else:
        raise ValueError(f"clean must be a TextCleanConfig, True, False or None, got {type(clean).__name__}")

    common: dict[str, Any] = dict(
        label_map=label_map, label_names=label_names, clean=clean_cfg, on_bad_row=on_bad_row, verbose=verbose
    )
    if encoding is not None:
        common["encoding"] = encoding
    cols: dict[str, Any] = {}
    if format == "sentiment140":
        if text_column is not None:
            cols["text_column"] = text_column
        if label_column is not None:
            cols["label_column"] = label_column
        return load_sentiment140(path, drop_neutral=drop_neutral, drop_labels=drop_labels, **cols, **common)
    if format in ("sst2", "csv"):
        if text_column is not None:
            cols["text_column"] = text_column
        if label_column is not None:
            cols["label_column"] = label_column
        if format == "sst2":
            return load_sst2(path, **cols, **common)
        return load_csv(path, drop_labels=drop_labels, delimiter=delimiter, **cols, **common)
    if text_column is not None:
        cols["text_field"] = text_column
    if label_column is not None:
        cols["label_field"] = label_column
    if format == "imdb":
        return load_imdb(path, **cols, **common)
    return load_jsonl(path, drop_labels=drop_labels, **cols, **common)


# ---------------------------------------------------------------------------------------------
# Encoding + torch Dataset
# ---------------------------------------------------------------------------------------------


def _as_examples(examples: ClassificationData | Sequence[Example]) -> Sequence[Example]:
    return examples.examples if isinstance(examples, ClassificationData) else examples


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
        examples = _as_examples(examples)
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
    examples = _as_examples(examples)
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
    train_ex = list(_as_examples(train))
    valid_ex = None if valid is None else list(_as_examples(valid))
    test_ex = None if test is None else list(_as_examples(test))
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
