"""Where `mambadiff generate` reads its sources and writes its rows, one batch at a time.

Inputs (read lazily, so memory does not grow with the file):

* jsonl (a file, a named pipe or device read once, or ``-`` for stdin): one ``{"src": ..., "trg": ...}``
  object per line, checked as strictly as training data (UTF-8, JSON object, ``src`` a non-empty
  string; blank lines only at the end). ``trg`` is optional here: a row without it is generated with
  no reference.
* plain text (``--text`` values, or lines of stdin): one source sentence per line.

Output: a jsonl file that grows by one batch at a time (each batch written unbuffered and fsynced; a
write that fails, e.g. on a full disk, is cut off again, so the file holds only complete rows), next
to a settings file ``<out>.generate.json`` recording the checkpoint and the sampling settings. A row
holds the source and reference as given and the model's decoded outputs. ``resume`` keeps the
complete rows of an earlier run with the same checkpoint and settings (each row is checked: a JSON
object with string ``source`` / ``recover`` and ``samples`` of the right count, whose source is that
input row's), drops a partial last line, and appends the rest.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from mambadiff.data.errors import DataError
from mambadiff.data.seq2seq import iter_seq2seq_jsonl
from mambadiff.fileio import atomic_write_json, describe_os_error

from .paraphrase import SourceRow

__all__ = ["SETTINGS_SCHEMA", "GenerationOutput", "iter_jsonl_rows", "iter_text_rows", "settings_path"]

# 2: rows hold the source and reference as given (1 held their decoded tokens): a file of 1 is not continued
SETTINGS_SCHEMA = "mambadiff.generate/2"


# ---- inputs --------------------------------------------------------------------------------------
def iter_jsonl_rows(stream: IO[bytes], name: str) -> Iterator[SourceRow]:
    """Rows of a jsonl byte stream (``trg`` optional); DataError names ``name``, line, field."""
    for lineno, src, trg in iter_seq2seq_jsonl(stream, name, require_trg=False):
        yield SourceRow(src, trg, name, lineno)


def iter_text_rows(lines: Iterable[str], name: str) -> Iterator[SourceRow]:
    """One source per line (surrounding whitespace stripped); an empty line is a DataError."""
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            raise DataError("empty line (expected one source sentence per line)", file=name, line=lineno)
        yield SourceRow(text, None, name, lineno)


# ---- output --------------------------------------------------------------------------------------
def settings_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".generate.json")


class GenerationOutput:
    """The output jsonl of one generation run; see the module docstring.

    ``open(resume)`` returns how many rows are already done; ``check_skipped(first_row, sources)`` is
    the ``on_skipped`` callback of `Paraphraser.generate_rows`; ``write(records)`` appends a batch.
    """

    def __init__(self, path: str | Path, run: dict[str, Any]):
        self.path = Path(path)
        self.run = {"schema": SETTINGS_SCHEMA, **run}  # checkpoint, ema, sampling settings
        self._file: IO[bytes] | None = None
        self._existing: IO[bytes] | None = None  # the kept rows, read again while their batches are skipped
        self._done = 0

    def open(self, resume: bool) -> int:
        if resume and self.path.exists():
            self._done = self._check_existing()
        else:
            self._done = 0
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"")
        atomic_write_json(settings_path(self.path), self.run)
        if self._done:
            self._existing = self.path.open("rb")
        # unbuffered: nothing is held back for close() to flush again after a failed write
        self._file = self.path.open("ab", buffering=0)
        return self._done

    def _check_existing(self) -> int:
        """Rows kept from an earlier run: checks its settings and every complete row, cuts a partial last line."""
        where = settings_path(self.path)
        if not where.exists():
            raise ValueError(f"{self.path}: cannot resume, {where.name} (the settings it was generated with) is "
                             "missing; run without --resume to start over")
        try:
            before = json.loads(where.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: unreadable ({e}); run without --resume to start over") from None
        changed = [k for k in sorted(set(before) | set(self.run)) if before.get(k) != self.run.get(k)]
        if changed:
            diff = "; ".join(f"{k}: {before.get(k)!r} then, {self.run.get(k)!r} now" for k in changed)
            raise ValueError(f"{self.path}: cannot resume, it was generated with other settings ({diff}); "
                             "give the same ones, or run without --resume to start over")
        samples = self.run["settings"]["samples"]
        rows, keep = 0, 0  # complete rows, bytes they take
        with self.path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break  # the last line, cut short by the crash: dropped and written again
                _check_row(raw, self.path, lineno, samples)
                rows, keep = rows + 1, keep + len(raw)
        if keep != self.path.stat().st_size:
            os.truncate(self.path, keep)
        return rows

    def check_skipped(self, first: int, sources: list[str]) -> None:
        """The kept rows ``first, first + 1, ...`` must hold these sources (the same input as before)."""
        assert self._existing is not None
        for j, source in enumerate(sources):
            row = json.loads(self._existing.readline())
            if row["source"] != source:
                raise ValueError(f"{self.path}, line {first + j + 1}: cannot resume, its source {row['source']!r:.80} "
                                 f"is not input row {first + j + 1} ({source!r:.80}); was it generated from other "
                                 "data? Run without --resume to start over")

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append a batch's rows with one unbuffered write, fsynced. A failed write (a full disk) is cut
        off again, so the file keeps only complete rows, and raises a ValueError saying how many."""
        assert self._file is not None
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        size = self._file.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # an unbuffered write may take part of the batch
                view = view[self._file.write(view):]
            os.fsync(self._file.fileno())
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), size)
            named = OSError(e.errno, e.strerror, str(self.path))  # a failed write() names no file
            raise ValueError(f"{describe_os_error(named)} ({self._done} complete rows kept; free some space and "
                             "continue with --resume)") from None
        self._done += len(records)

    @property
    def rows(self) -> int:
        return self._done

    def close(self) -> None:
        for f in (self._file, self._existing):
            if f is not None:
                f.close()
        self._file = self._existing = None


def _check_row(raw: bytes, path: Path, lineno: int, samples: int) -> None:
    def bad(msg: str, field: str | None = None):
        return ValueError(f"{path}, line {lineno}{f', field {field!r}' if field else ''}: cannot resume, {msg}; "
                          "run without --resume to start over")
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("not a JSON line") from None
    if not isinstance(row, dict):
        raise bad(f"expected a JSON object, got {type(row).__name__}")
    for key in ("source", "recover"):
        if not isinstance(row.get(key), str):
            raise bad("missing or not a string", key)
    cands = row.get("samples")
    if not isinstance(cands, list) or len(cands) != samples or not all(isinstance(c, str) for c in cands):
        raise bad(f"expected a list of {samples} strings", "samples")
