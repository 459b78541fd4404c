"""Text-classification loaders: one per file format, and `load_classification` in front of them.

Every loader returns a `ClassificationData`: ``.examples`` (a list of ``(text, label_int)``),
``.label_names`` (``label_names[label_int]``) and bookkeeping (``.label_map``, skip/drop counts).
`load_classification(path, format="auto", ...)` is the one entry point; the per-format functions
are thin wrappers around the same machinery (`readers` for the layouts, `rows` for the checks).

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

import os
from typing import Any, Iterable, Sequence

from mambadiff.data.errors import DataError
from mambadiff.data.text_clean import TextCleanConfig

from .labels import LabelSpec, drop_keys, normalise_label_spec
from .readers import csv_records, decode_text, detect_format, is_tsv_path, read_bytes, read_delimited, read_jsonl
from .rows import ClassificationData, OnBadRow, RowChecker

__all__ = [
    "FORMATS",
    "SENTIMENT140_COLUMNS",
    "SENTIMENT140_COLUMNS_2",
    "load_classification",
    "load_sentiment140",
    "load_binary_dataset",
    "load_sst2",
    "load_imdb",
    "load_csv",
    "load_jsonl",
]

FORMATS = ("sentiment140", "sst2", "imdb", "csv", "jsonl")

SENTIMENT140_COLUMNS = ("polarity", "id", "date", "query", "user", "text")
SENTIMENT140_COLUMNS_2 = ("polarity", "text")
_SENTIMENT140_MAP_3 = {"0": 0, "2": 1, "4": 2}
_SENTIMENT140_NAMES_3 = ["negative", "neutral", "positive"]
_SENTIMENT140_MAP_2 = {"0": 0, "4": 1}
_BINARY_MAP = {"0": 0, "1": 1}
_BINARY_NAMES = ["negative", "positive"]

# Named datasets stored in a generic layout with 0/1 labels:
# format -> (layout, default text column / field, default label column / field).
BINARY_DATASETS = {
    "sst2": ("tsv", "sentence", "label"),  # GLUE SST-2: header sentence<TAB>label, no quoting
    "imdb": ("jsonl", "text", "label"),  # {"text", "label", "id"} per line, plain or gzip
}

def load_sentiment140(
    path: str | os.PathLike,
    *,
    label_map: LabelSpec | None = None,
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
    drop = drop_keys(drop_labels)
    if drop_neutral:
        drop.add("2")
    if label_map is None:
        if drop_neutral:
            label_map, default_names = _SENTIMENT140_MAP_2, _BINARY_NAMES
        else:
            label_map, default_names = _SENTIMENT140_MAP_3, _SENTIMENT140_NAMES_3
        label_names = default_names if label_names is None else label_names
    mapping, names = normalise_label_spec(label_map, label_names)
    checker = RowChecker(path, on_bad_row=on_bad_row, encoding=encoding, mapping=mapping, drop_keys=drop, clean=clean)
    text = decode_text(read_bytes(path), encoding, path)
    first = next(csv_records(text, path, ",", True), None)
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
    read_delimited(
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
    label_map: LabelSpec | None = None,
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
    is_tsv = is_tsv_path(path)
    if delimiter is None:
        delimiter = "\t" if is_tsv else ","
    if quoting is None:
        quoting = delimiter != "\t"
    mapping, names = normalise_label_spec(label_map, label_names)
    checker = RowChecker(
        path, on_bad_row=on_bad_row, encoding=encoding, mapping=mapping, drop_keys=drop_keys(drop_labels), clean=clean
    )
    text = decode_text(read_bytes(path), encoding, path)
    read_delimited(
        checker,
        text,
        delimiter=delimiter,
        quoting=quoting,
        text_column=text_column,
        label_column=label_column,
        header=has_header,
    )
    return checker.finish(_format, names, verbose)


def load_jsonl(
    path: str | os.PathLike,
    *,
    text_field: str = "text",
    label_field: str = "label",
    label_map: LabelSpec | None = None,
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
    mapping, names = normalise_label_spec(label_map, label_names)
    checker = RowChecker(
        path, on_bad_row=on_bad_row, encoding=encoding, mapping=mapping, drop_keys=drop_keys(drop_labels), clean=clean
    )
    text = decode_text(read_bytes(path), encoding, path)
    read_jsonl(checker, text, text_field=text_field, label_field=label_field)
    return checker.finish(_format, names, verbose)


def load_binary_dataset(
    path: str | os.PathLike,
    format: str,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    label_map: LabelSpec | None = None,
    label_names: Sequence[str] | None = None,
    clean: TextCleanConfig | None = None,
    on_bad_row: OnBadRow = "raise",
    encoding: str = "utf-8",
    verbose: bool = True,
) -> ClassificationData:
    """A named dataset of `BINARY_DATASETS` (``sst2``: GLUE TSV; ``imdb``: JSON lines, plain or gzip).

    Labels 0/1 -> negative/positive unless `label_map` says otherwise. `text_column` /
    `label_column` (JSON fields for imdb) default to the dataset's.
    """
    if format not in BINARY_DATASETS:
        raise ValueError(f"format must be one of {tuple(BINARY_DATASETS)}, got {format!r}")
    layout, default_text, default_label = BINARY_DATASETS[format]
    if label_map is None:
        label_map = _BINARY_MAP
        label_names = _BINARY_NAMES if label_names is None else label_names
    text = default_text if text_column is None else text_column
    label = default_label if label_column is None else label_column
    options: dict[str, Any] = dict(
        label_map=label_map, label_names=label_names, clean=clean, on_bad_row=on_bad_row, encoding=encoding,
        verbose=verbose, _format=format,
    )
    if layout == "tsv":
        return load_csv(path, text_column=text, label_column=label, delimiter="\t", quoting=False, **options)
    return load_jsonl(path, text_field=text, label_field=label, **options)


def load_sst2(
    path: str | os.PathLike, *, text_column: str = "sentence", label_column: str = "label", **options: Any
) -> ClassificationData:
    """GLUE SST-2 TSV (header ``sentence<TAB>label``, no quoting); labels 0/1 -> negative/positive.

    `options`: those of `load_binary_dataset` (label_map, label_names, clean, on_bad_row, encoding, verbose).
    """
    return load_binary_dataset(path, "sst2", text_column=text_column, label_column=label_column, **options)


def load_imdb(
    path: str | os.PathLike, *, text_field: str = "text", label_field: str = "label", **options: Any
) -> ClassificationData:
    """IMDB JSON lines ``{"text", "label", "id"}`` (plain or gzip); label 1 = positive.

    `options`: those of `load_binary_dataset` (label_map, label_names, clean, on_bad_row, encoding, verbose).
    """
    return load_binary_dataset(path, "imdb", text_column=text_field, label_column=label_field, **options)


def load_classification(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    text_column: str | int | None = None,
    label_column: str | int | None = None,
    text_field: str | None = None,
    label_field: str | None = None,
    label_map: LabelSpec | None = None,
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
    if text_column is not None:
        cols["text_column"] = text_column
    if label_column is not None:
        cols["label_column"] = label_column
    if format == "sentiment140":
        return load_sentiment140(path, drop_neutral=drop_neutral, drop_labels=drop_labels, **cols, **common)
    if format in BINARY_DATASETS:
        return load_binary_dataset(path, format, **cols, **common)
    if format == "csv":
        return load_csv(path, drop_labels=drop_labels, delimiter=delimiter, **cols, **common)
    fields = {("text_field" if k == "text_column" else "label_field"): v for k, v in cols.items()}
    return load_jsonl(path, drop_labels=drop_labels, **fields, **common)
