"""`DataError`: bad input data, located by file, line and field.

Shared by every loader in `mambadiff.data` (seq2seq jsonl, the QQP converter, the classification
loaders). The message is one line and always starts with the location, so a CLI can print
``str(err)`` as-is:

    data/train.jsonl, line 17, field 'trg': expected a string, got int

Any of ``file``, ``line``, ``field`` may be ``None`` when it does not apply (an empty file has no
line; a bad header row has no field).

`notify` reports what a reader did to the data without failing (rows skipped, pairs truncated):
through logging when the application configured it, else on stderr, so it is never lost.
"""
from __future__ import annotations

import logging
import os
import sys

__all__ = ["DataError", "notify"]


class DataError(ValueError):
    """Bad input data. Attributes ``file``, ``line`` (1-based) and ``field`` locate it; ``reason``
    is the bare description without the location."""

    def __init__(
        self,
        reason: str,
        *,
        file: str | os.PathLike | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = None if file is None else os.fspath(file)
        self.line = line
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        # Keep the message on one line even if a reason quotes raw data.
        reason = " ".join(str(self.reason).split())
        return f"{', '.join(where)}: {reason}" if where else reason

    def __reduce__(self):  # picklable (DataLoader workers re-raise in the parent process)
        return (_rebuild, (self.reason, self.file, self.line, self.field))


def _rebuild(reason, file, line, field):
    return DataError(reason, file=file, line=line, field=field)


def notify(logger: logging.Logger, message: str, verbose: bool = True) -> None:
    """Warn the user: on `logger` when logging is configured (a handler on it or an ancestor), else
    on stderr (unless ``verbose=False``). A library that never configures logging still gets its
    notices seen."""
    if logger.hasHandlers():
        logger.warning(message)
    elif verbose:
        print(message, file=sys.stderr)
