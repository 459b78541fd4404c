"""Convert Quora Question Pairs (QQP) into a DiffuSeq data folder.

Input: the raw Quora release ``quora_duplicate_questions.tsv`` or a GLUE QQP ``train.tsv`` /
``dev.tsv``. Both are tab-separated with a header row naming at least ``question1``,
``question2`` and ``is_duplicate`` (usually also ``id``, ``qid1``, ``qid2``). The GLUE *test*
split has no ``is_duplicate`` column and is rejected (it has no labels, so no paraphrase pairs).

Output: ``<out_dir>/train.jsonl``, ``valid.jsonl``, ``test.jsonl`` with one
``{"src": question1, "trg": question2}`` per duplicate pair (``is_duplicate == 1``), as DiffuSeq's
QQP folder. Each file is written atomically (temp file in ``out_dir`` + ``os.replace``); a split
whose fraction is 0 is not written.

Rules
-----
* Quoting: ``quoting="csv"`` (default) reads standard quoted TSV (the raw Quora file quotes
  questions that contain tabs, newlines or quotes); ``quoting="none"`` treats ``"`` as an
  ordinary character (GLUE's files are written that way).
* Strict structure: a header missing a required column, a row with too few or too many fields,
  an ``is_duplicate`` that is not 0/1, or bytes that are not UTF-8 raise `DataError` naming the
  file, the line and the column. Blank lines are skipped.
* Questions are ``strip()``-ed and otherwise kept as found. Duplicate pairs with an empty question
  are skipped and counted; a pair repeated verbatim is kept once.
* Splits are leakage-free: pairs are grouped into connected components of shared questions
  (case- and whitespace-insensitive text), and whole components are assigned, in a shuffled
  order (``seed``), to test, then valid, then train: a component goes to test (else valid) only
  if it fits in the room left under that split's target ``round(fraction * n_pairs)``, so a
  large cluster cannot swamp a small split; the rest is train. No question occurs in two
  splits. Within a file, pairs keep their input order.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError

from mambadiff.fileio import atomic_write_text

__all__ = ["convert_qqp", "QQPConversion", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("question1", "question2", "is_duplicate")


@dataclass
class QQPConversion:
    """What `convert_qqp` did."""

    rows: int = 0  # data rows read (header and blank lines not counted)
    duplicates: int = 0  # rows with is_duplicate == 1
    skipped_empty: int = 0  # duplicate rows with an empty question
    repeated: int = 0  # duplicate pairs seen before (kept once)
    split_sizes: dict[str, int] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in self.split_sizes.items())
        return (f"{self.rows} rows, {self.duplicates} duplicate pairs ({self.skipped_empty} with an empty "
                f"question skipped, {self.repeated} repeats dropped) -> {sizes}")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"bytes are not valid UTF-8 ({data[e.start:e.start + 4]!r})", file=str(path), line=line) from None


def _norm(q: str) -> str:
    return " ".join(q.lower().split())


def convert_qqp(
    input_tsv: str | os.PathLike,
    out_dir: str | os.PathLike,
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
    quoting: str = "csv",
) -> QQPConversion:
    """Turn a QQP tsv into a DiffuSeq folder (see the module docstring). Returns a `QQPConversion`."""
    path = Path(input_tsv)
    name = str(path)
    for arg, frac in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not isinstance(frac, (int, float)) or not 0.0 <= frac < 1.0:
            raise ValueError(f"{arg} must be in [0, 1), got {frac!r}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(f"valid_fraction + test_fraction must be < 1, got {valid_fraction + test_fraction}")
    if quoting not in ("csv", "none"):
        raise ValueError(f"quoting must be 'csv' or 'none', got {quoting!r}")
    if not path.is_file():
        raise DataError("file not found", file=name)

    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t",
                        quoting=csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL, strict=False)
    result = QQPConversion()
    header: list[str] | None = None
    col: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    prev_end = 0  # physical line where the previous record ended
    try:
        for row in reader:
            line = prev_end + 1  # first physical line of this record
            prev_end = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if header is None:
                header = [h.strip() for h in row]
                col = {h: i for i, h in enumerate(header)}
                missing = [c for c in REQUIRED_COLUMNS if c not in col]
                if missing:
                    hint = ""
                    if missing == ["is_duplicate"]:
                        hint = " (the GLUE QQP test split has no labels; convert train.tsv or dev.tsv)"
                    names = ", ".join(repr(c) for c in missing)
                    raise DataError(f"header has no column {names}{hint}; columns found: {header}",
                                    file=name, line=line, field=missing[0])
                continue
            if len(row) != len(header):
                which = header[len(row)] if len(row) < len(header) else f"<extra column {len(header) + 1}>"
                short = "is missing" if len(row) < len(header) else "is unexpected"
                raise DataError(f"expected {len(header)} tab-separated columns, got {len(row)} "
                                f"(column {len(row) + 1 if len(row) < len(header) else len(header) + 1} {short})",
                                file=name, line=line, field=which)
            result.rows += 1
            label = row[col["is_duplicate"]].strip()
            if label not in ("0", "1"):
                raise DataError(f"expected 0 or 1, got {label!r}", file=name, line=line, field="is_duplicate")
            if label == "0":
                continue
            result.duplicates += 1
            q1, q2 = row[col["question1"]].strip(), row[col["question2"]].strip()
            if not q1 or not q2:
                result.skipped_empty += 1
                continue
            if (q1, q2) in seen:
                result.repeated += 1
                continue
            seen.add((q1, q2))
            pairs.append((q1, q2))
    except csv.Error as e:
        raise DataError(f"malformed TSV ({e})", file=name, line=reader.line_num) from None
    if header is None:
        raise DataError("file is empty (expected a header row and data rows)", file=name)
    if not pairs:
        raise DataError("no duplicate pairs (is_duplicate == 1) with two non-empty questions", file=name)

    splits = _assign_splits(pairs, valid_fraction, test_fraction, seed)
    wanted = {"valid": valid_fraction, "test": test_fraction}
    for split in ("train", "valid", "test"):
        if split != "train" and wanted[split] == 0:
            continue
        if not splits[split]:
            raise ValueError(f"{name}: only {len(pairs)} duplicate pairs, too few to fill the {split} split "
                             f"(valid_fraction={valid_fraction}, test_fraction={test_fraction})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        if split != "train" and wanted[split] == 0:
            continue
        idx = sorted(splits[split])
        body = "".join(json.dumps({"src": pairs[i][0], "trg": pairs[i][1]}, ensure_ascii=False) + "\n" for i in idx)
        result.paths[split] = atomic_write_text(out / f"{split}.jsonl", body)
        result.split_sizes[split] = len(idx)
    return result


def _assign_splits(pairs: list[tuple[str, str]], valid_fraction: float, test_fraction: float,
                   seed: int) -> dict[str, list[int]]:
    """Pair indices per split; whole components of shared questions go to one split."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for q1, q2 in pairs:
        a, b = _norm(q1), _norm(q2)
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    components: dict[str, list[int]] = {}  # insertion order = first occurrence: deterministic
    for i, (q1, _) in enumerate(pairs):
        components.setdefault(find(_norm(q1)), []).append(i)
    groups = list(components.values())
    random.Random(seed).shuffle(groups)

    n = len(pairs)
    targets = {"test": round(test_fraction * n), "valid": round(valid_fraction * n)}
    # Ask for at least one pair in a split whose fraction is positive.
    for k, frac in (("test", test_fraction), ("valid", valid_fraction)):
        if frac > 0:
            targets[k] = max(1, targets[k])
    out: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for g in groups:
        for split in ("test", "valid"):
            # Only where the whole component fits: one big cluster never swamps a small split.
            if len(out[split]) + len(g) <= targets[split]:
                out[split].extend(g)
                break
        else:
            out["train"].extend(g)
    return out


