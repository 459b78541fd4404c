"""Row validation shared by every classification format, and the loaded result.

A reader (`readers`) turns a file into raw rows; `RowChecker` applies the bad-row policy and the
label / text checks to each row and collects the examples into a `ClassificationData`. See
`mambadiff.data.classification.loaders` for the policy (``on_bad_row``) and the encodings.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from mambadiff.data.errors import DataError
from mambadiff.data.errors import notify as notify_user
from mambadiff.data.text_clean import TextCleanConfig, clean_text

from .labels import is_int_like, label_key

__all__ = ["Example", "OnBadRow", "ClassificationData", "as_examples", "RawRow", "RowChecker", "notify"]

# Counts (skipped, dropped, latin-1 rows) are reported on the package's logger.
logger = logging.getLogger("mambadiff.data.classification")

Example = tuple[str, int]
OnBadRow = Literal["raise", "skip"]

# surrogateescape turns each undecodable byte 0xXY into the lone surrogate U+DCXY.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


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


def as_examples(examples: ClassificationData | Sequence[Example]) -> Sequence[Example]:
    """The ``(text, label)`` pairs of loaded data, or the given pairs themselves."""
    return examples.examples if isinstance(examples, ClassificationData) else examples


def notify(message: str, verbose: bool) -> None:
    """Report a count to the user: through logging when it is configured, else on stderr."""
    notify_user(logger, message, verbose)


def _format_escaped(value: str) -> str:
    bad = _ESCAPED_BYTE.search(value)
    assert bad is not None
    return f"byte 0x{ord(bad.group()) - 0xDC00:02x} at character {bad.start()}"


def _latin1_fallback(value: str) -> str:
    """Escaped bytes (U+DC80..U+DCFF) -> the latin-1 character with that byte value."""
    return _ESCAPED_BYTE.sub(lambda m: chr(ord(m.group()) - 0xDC00), value)


@dataclass
class RawRow:
    line: int  # 1-based physical line where the record starts
    text: Any
    label: Any
    text_col: str
    label_col: str


class RowChecker:
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

    def _decoded(self, value: str, row: RawRow, column: str) -> str | None:
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

    def add(self, row: RawRow) -> None:
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
        key = label_key(label)
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
            if keys and all(is_int_like(k) for k in keys):
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
            notify(
                f"{self.path}: skipped {sum(self.skipped.values())} bad row(s) of {self.n_rows} "
                f"({reasons}); first: {self.first_skip}",
                verbose,
            )
        if self.n_dropped:
            dropped = ", ".join(sorted(self.drop_keys))
            notify(f"{self.path}: dropped {self.n_dropped} row(s) with label {dropped} as requested", verbose)
        if self.n_latin1:
            notify(f"{self.path}: {self.n_latin1} row(s) were not valid UTF-8 and were decoded as latin-1", verbose)
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

