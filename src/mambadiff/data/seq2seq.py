"""Seq2seq data in DiffuSeq's format: a folder of ``train.jsonl`` / ``valid.jsonl`` /
``test.jsonl``, one ``{"src": ..., "trg": ...}`` object per line.

Glossary: b batch, l length (``seq_len``).

Parsing is strict; every problem raises `DataError` naming the file, the 1-based line and, when
the problem sits in one, the field (``src`` / ``trg``): bytes that are not UTF-8, a line that is not JSON or not a JSON object, a missing
``src``/``trg``, a value that is not a string, a string that is empty after ``strip()``, a blank
line between records, a file with no records. Extra keys are ignored. Texts are ``strip()``-ed,
as DiffuSeq does.

Sequence layout (``layout="diffuseq"``, the default) -- exactly what DiffuSeq's
``helper_tokenize`` builds (``diffuseq/text_datasets.py``, ``merge_and_mask`` + ``pad_function``).
DiffuSeq encodes src and trg each *with* BERT's specials (``[CLS] x [SEP]``, ``[CLS] y [SEP]``),
drops each final ``[SEP]``, truncates, re-appends it and joins with one more ``[SEP]``::

    [CLS] x_1 .. x_m [SEP] [SEP] [CLS] y_1 .. y_n [SEP] [PAD] ... [PAD]     (length seq_len)
    input_mask:   0 ......................... 0   1 ........................... 1
    attention_mask: 1 for every non-pad position, 0 on padding

``input_mask`` is 0 on ``[CLS] x [SEP] [SEP]`` (kept clean: the condition) and 1 from the target's
``[CLS]`` to the end *including the padding* (noised and denoised; the model learns to emit
``[PAD]``). ``layout="compact"`` drops the doubled ``[SEP]`` and the target ``[CLS]``:
``[CLS] x [SEP] y [SEP] [PAD]...`` with 0 over ``[CLS] x [SEP]``.

Truncation (DiffuSeq's rule). Let ``a = 1 + m`` and ``b = 1 + n`` (body lengths, the ``[CLS]``
counted; ``a = m``, ``b = n`` for compact) and ``budget = seq_len - 3``. While ``a + b > budget``
DiffuSeq pops the last token of the longer body, or of both when they are equal. Closed form
(`truncated_lengths`):

* ``a + b <= budget``: nothing is cut;
* else if ``2 * min(a, b) <= budget``: the shorter side is kept whole and the longer side is cut
  to ``budget - min(a, b)``;
* else both sides are cut to ``budget // 2`` (so one position may stay unused when ``budget``
  is odd).

Tokens are cut from the *end* of each side. `Seq2SeqDataset` warns once per file with the number
of pairs it truncated (`mambadiff.data.errors.notify`: on the ``mambadiff.data.seq2seq`` logger
when logging is configured, else on stderr). ``on_overflow="error"`` raises `DataError` instead
(naming the line and the field that would be cut; ``"src"``, ``"trg"`` or ``"src,trg"``).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError, notify
from .tokenizer import TextTokenizer

__all__ = [
    "SPLITS",
    "LAYOUTS",
    "Seq2SeqExample",
    "Seq2SeqDataset",
    "read_seq2seq_jsonl",
    "resolve_split_path",
    "is_stream",
    "truncated_lengths",
    "build_example",
    "collate",
    "load_seq2seq_split",
    "source_length",
    "min_seq_len",
    "encode_for_layout",
    "MAX_CHARS_PER_TOKEN",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
LAYOUTS = ("diffuseq", "compact")
ON_OVERFLOW = ("truncate", "error")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def iter_seq2seq_jsonl(lines: Iterable[bytes], name: str,
                       require_trg: bool = True) -> Iterator[tuple[int, str, str | None]]:
    """Strictly parse DiffuSeq jsonl lines (bytes) as they are read: ``(line number, src, trg)``.

    ``trg`` may be absent when ``require_trg`` is False (then None). Raises `DataError` (``name``,
    line, field) on any malformed input; blank lines after the last record are allowed.
    """
    keys = "'src' and 'trg'" if require_trg else "'src' (and optionally 'trg')"
    blank_since = None  # first line of a run of blank lines: an error unless the input ends there
    n_rows = 0
    for lineno, bline in enumerate(lines, start=1):
        if lineno == 1 and bline.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
            bline = bline[3:]
        if not bline.strip():
            blank_since = blank_since or lineno
            continue
        if blank_since is not None:
            raise DataError("blank line (expected a JSON object)", file=name, line=blank_since)
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"bytes are not valid UTF-8 (byte {e.start + 1} of the line: {bline[e.start:e.start + 4]!r})",
                            file=name, line=lineno, field=_guess_field(bline, e.start)) from None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", file=name, line=lineno,
                            field=_guess_field(bline, e.pos)) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object with {keys}, got {type(obj).__name__}",
                            file=name, line=lineno)
        texts: list[str | None] = []
        for key in ("src", "trg"):
            if key not in obj:
                if key == "trg" and not require_trg:
                    texts.append(None)
                    continue
                raise DataError(f"missing key (keys present: {sorted(obj)})", file=name, line=lineno, field=key)
            v = obj[key]
            if not isinstance(v, str):
                raise DataError(f"expected a string, got {type(v).__name__}", file=name, line=lineno, field=key)
            v = v.strip()
            if not v:
                raise DataError("empty string", file=name, line=lineno, field=key)
            texts.append(v)
        n_rows += 1
        yield lineno, texts[0], texts[1]
    if not n_rows:
        raise DataError(f"file is empty (expected one JSON object with {keys} per line)", file=name, line=1)


def read_seq2seq_jsonl(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Strictly parse a DiffuSeq jsonl file into ``[(src, trg), ...]`` (texts stripped).

    Raises `DataError` (file, line, field) on any malformed input; see the module docstring.
    Blank lines after the last record are allowed.
    """
    p = Path(path)
    if p.is_dir():
        raise DataError("is a folder, expected a jsonl file", file=str(p))
    if not p.exists():
        raise DataError("file not found", file=str(p))
    with open(p, "rb") as f:  # a named pipe or a device is read once, like a file
        return [(src, trg) for _, src, trg in iter_seq2seq_jsonl(f, str(p))]


def _guess_field(bline: bytes, pos: int) -> str | None:
    """Which of src/trg a byte offset falls in (best effort, for error messages only)."""
    head = bline[:pos]
    i_src, i_trg = head.rfind(b'"src"'), head.rfind(b'"trg"')
    if i_src < 0 and i_trg < 0:
        return None
    return "src" if i_src > i_trg else "trg"


def is_stream(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder: a named pipe (FIFO), a
    character device such as ``/dev/null`` or ``/dev/stdin``, a socket. It can be read once."""
    p = Path(path)
    return p.exists() and not p.is_file() and not p.is_dir()


def resolve_split_path(folder_or_file: str | os.PathLike, split: str | None) -> Path:
    """``folder/<split>.jsonl``, or the path itself when it is a file or a stream (`is_stream`;
    ``split`` is then ignored)."""
    p = Path(folder_or_file)
    if p.is_file() or is_stream(p):
        return p
    if p.is_dir():
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} when {p} is a folder, got {split!r}")
        f = p / f"{split}.jsonl"
        if not f.is_file():
            present = sorted(q.name for q in p.glob("*.jsonl"))
            raise DataError(f"no {split}.jsonl in the data folder (found: {', '.join(present) or 'no .jsonl files'})",
                            file=str(f))
        return f
    raise DataError("no such file or folder", file=str(p))


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------
def truncated_lengths(a: int, b: int, budget: int) -> tuple[int, int]:
    """Lengths DiffuSeq's pop-the-longer loop leaves for bodies of lengths ``a`` and ``b``."""
    if a + b <= budget:
        return a, b
    short = min(a, b)
    if 2 * short <= budget:
        rest = budget - short
        return (short, rest) if a <= b else (rest, short)
    half = budget // 2
    return half, half


def min_seq_len(layout: str) -> int:
    """The shortest seq_len of a layout: its specials and one real token on each side after truncation."""
    return 7 if layout == "diffuseq" else 5


# A text longer than seq_len * MAX_CHARS_PER_TOKEN characters is cut before it is tokenized: only its first
# seq_len tokens can reach a layout, and tokenizing a multi-megabyte line whole takes seconds and
# gigabytes. No text we know of averages more than a few characters per token, so the cut text almost
# always still yields those tokens; `encode_for_layout` checks that it does and cuts less when not.
MAX_CHARS_PER_TOKEN = 64
_MAX_WORD_TOKENS = 100  # WordPiece's max_input_chars_per_word: one word never gives more tokens than this
_SPACE_RUN = re.compile(r"[ \t\n\r]{2,}")


def _encode_long(tokenizer: TextTokenizer, text: str, need: int) -> tuple[list[int], bool]:
    """(ids, cut) for a text over the character bound: ids exact in their first ``need`` positions."""
    bound = need * MAX_CHARS_PER_TOKEN
    text = _SPACE_RUN.sub(" ", text)  # the tokenizer reads a run of spaces as one: same ids, fewer characters
    while bound < len(text):
        head = text[:bound]
        space = max(head.rfind(c) for c in " \t\n\r")
        # cut at a space: the words before it tokenize as in the whole text (the normaliser works
        # character by character, the pre-tokenizer splits at spaces); a cut inside a word changes
        # at most that word's tokens
        at_space = space > bound // 2
        ids = tokenizer.encode(head[:space] if at_space else head)
        if len(ids) >= need + (0 if at_space else _MAX_WORD_TOKENS):
            return ids, True
        bound *= 4  # few tokens in many characters (long runs of spaces or symbols): cut less
    return tokenizer.encode(text), False


def encode_for_layout(tokenizer: TextTokenizer, texts: Sequence[str],
                      seq_len: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids of ``texts`` as far as a layout of ``seq_len`` can use them, and per text whether it was
    cut before tokenizing (it then has more than ``seq_len`` tokens; its ids are the first of them, exact
    in at least their first ``seq_len`` positions). Same ids as ``tokenizer.encode_batch`` wherever
    a layout reads them, in a time that does not grow with a text's length beyond the bound."""
    bound = seq_len * MAX_CHARS_PER_TOKEN
    short = [i for i, t in enumerate(texts) if len(t) <= bound]
    ids: list[list[int]] = [[] for _ in texts]
    cut = [False] * len(texts)
    for i, row in zip(short, tokenizer.encode_batch([texts[i] for i in short])):
        ids[i] = row
    for i, text in enumerate(texts):
        if len(text) > bound:
            ids[i], cut[i] = _encode_long(tokenizer, text, seq_len)
    return ids, cut


@dataclass(frozen=True)
class Seq2SeqExample:
    input_ids: list[int]  # (l,)
    input_mask: list[int]  # (l,) 1 = target side (noised)
    attention_mask: list[int]  # (l,) 1 = real token
    truncated: bool


def build_example(
    src_ids: Sequence[int],
    trg_ids: Sequence[int],
    tokenizer: TextTokenizer,
    seq_len: int = 128,
    layout: str = "diffuseq",
    on_overflow: str = "truncate",
    where: dict | None = None,
) -> Seq2SeqExample:
    """Lay out one pair of token id lists (no specials) as described in the module docstring.

    ``where`` (``{"file":..., "line":...}``) locates the pair for ``on_overflow="error"``; its ``"cut"``
    lists the sides (``"src"``, ``"trg"``) cut before tokenizing (`encode_for_layout`), whose counts
    the error gives as lower bounds.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if on_overflow not in ON_OVERFLOW:
        raise ValueError(f"on_overflow must be one of {ON_OVERFLOW}, got {on_overflow!r}")
    if not isinstance(seq_len, int) or seq_len < min_seq_len(layout):
        raise ValueError(f"seq_len must be an int >= {min_seq_len(layout)} for layout {layout!r}, got {seq_len!r}")
    cls, sep, pad = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
    if layout == "diffuseq":
        src_body, trg_body = [cls, *src_ids], [cls, *trg_ids]
    else:
        src_body, trg_body = list(src_ids), list(trg_ids)
    budget = seq_len - 3
    keep_a, keep_b = truncated_lengths(len(src_body), len(trg_body), budget)
    truncated = (keep_a, keep_b) != (len(src_body), len(trg_body))
    if truncated and on_overflow == "error":
        cut = [f for f, cut in (("src", keep_a < len(src_body)), ("trg", keep_b < len(trg_body))) if cut]
        extra = 2 if layout == "diffuseq" else 0
        where = where or {}
        cut_before = where.get("cut", ())  # sides cut before tokenizing: their counts are lower bounds
        more = "at least " if cut_before else ""
        n_src = f"{'at least ' if 'src' in cut_before else ''}{len(src_ids)}"
        n_trg = f"{'at least ' if 'trg' in cut_before else ''}{len(trg_ids)}"
        raise DataError(
            f"too long for seq_len={seq_len}: src has {n_src} tokens and trg {n_trg}, "
            f"the layout needs {more}{len(src_ids) + len(trg_ids) + 3 + extra} positions "
            f"(set on_overflow: truncate to cut it, or raise seq_len)",
            file=where.get("file"), line=where.get("line"), field=",".join(cut),
        )
    if layout == "diffuseq":
        cond = src_body[:keep_a] + [sep, sep]  # [CLS] x [SEP] [SEP]
        target = trg_body[:keep_b] + [sep]  # [CLS] y [SEP]
    else:
        cond = [cls] + src_body[:keep_a] + [sep]  # [CLS] x [SEP]
        target = trg_body[:keep_b] + [sep]  # y [SEP]
    ids = cond + target
    n_real = len(ids)
    n_pad = seq_len - n_real
    return Seq2SeqExample(
        input_ids=ids + [pad] * n_pad,
        input_mask=[0] * len(cond) + [1] * (seq_len - len(cond)),
        attention_mask=[1] * n_real + [0] * n_pad,
        truncated=truncated,
    )


def source_length(input_mask: torch.Tensor) -> torch.Tensor:
    """Length of the clean condition part, ``seq_len - sum(input_mask)`` (DiffuSeq's ``len_x``).

    input_mask (..., l) -> (...,)
    """
    return input_mask.shape[-1] - input_mask.sum(dim=-1)


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------
class Seq2SeqDataset(Dataset):
    """Laid-out pairs. Items are dicts of tensors: ``input_ids`` (l,) long, ``input_mask`` (l,)
    long, ``attention_mask`` (l,) long, ``index`` () long (row in ``pairs``).

    ``pairs`` keeps the stripped texts (references for metrics), ``n_truncated`` counts pairs
    that were cut (by the truncation rule of the module docstring; a warning gives the count),
    ``path`` is the file they came from (None when built from memory).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        tokenizer: TextTokenizer,
        seq_len: int = 128,
        layout: str = "diffuseq",
        on_overflow: str = "truncate",
        path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if on_overflow not in ON_OVERFLOW:
            raise ValueError(f"on_overflow must be one of {ON_OVERFLOW}, got {on_overflow!r}")
        self.pairs = [(str(s), str(t)) for s, t in pairs]
        if not self.pairs:
            raise DataError("no pairs", file=path)
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.layout = layout
        self.path = None if path is None else str(path)
        src_ids, src_cut = encode_for_layout(tokenizer, [s for s, _ in self.pairs], seq_len)
        trg_ids, trg_cut = encode_for_layout(tokenizer, [t for _, t in self.pairs], seq_len)
        rows_ids, rows_mask, rows_attn = [], [], []
        self.n_truncated = 0
        for i, (x, y) in enumerate(zip(src_ids, trg_ids)):
            line = i + 1 if self.path else None  # read_seq2seq_jsonl has no blank lines: row i is line i+1
            for field, ids in (("src", x), ("trg", y)):
                if not ids:  # e.g. only control characters, removed by the normaliser
                    raise DataError("text has no tokens after tokenization", file=self.path, line=line, field=field)
            cut = tuple(f for f, c in (("src", src_cut[i]), ("trg", trg_cut[i])) if c)
            ex = build_example(x, y, tokenizer, seq_len, layout, on_overflow,
                               where={"file": self.path, "line": line, "cut": cut})
            rows_ids.append(ex.input_ids)
            rows_mask.append(ex.input_mask)
            rows_attn.append(ex.attention_mask)
            self.n_truncated += ex.truncated
        # Stored compactly; widened to long per item / batch.
        self._input_ids = torch.from_numpy(np.asarray(rows_ids, dtype=np.int32))  # (N, l)
        self._input_mask = torch.from_numpy(np.asarray(rows_mask, dtype=np.uint8))  # (N, l)
        self._attention_mask = torch.from_numpy(np.asarray(rows_attn, dtype=np.uint8))  # (N, l)
        if self.n_truncated:
            notify(log, f"{self.path or 'pairs'}: {self.n_truncated} of {len(self.pairs)} pairs are longer than "
                        f"seq_len={seq_len} and were truncated (DiffuSeq's rule; on_overflow='error' refuses them)")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self._input_ids[i].long(),  # (l,)
            "input_mask": self._input_mask[i].long(),  # (l,)
            "attention_mask": self._attention_mask[i].long(),  # (l,)
            "index": torch.tensor(i, dtype=torch.long),  # ()
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """The whole split as long tensors of shape (N, l) (plus ``index`` (N,))."""
        return {
            "input_ids": self._input_ids.long(),
            "input_mask": self._input_mask.long(),
            "attention_mask": self._attention_mask.long(),
            "index": torch.arange(len(self), dtype=torch.long),
        }

    @property
    def sources(self) -> list[str]:
        return [s for s, _ in self.pairs]

    @property
    def targets(self) -> list[str]:
        return [t for _, t in self.pairs]


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack dataset items into a batch: every key -> (b, l) (``index`` -> (b,))."""
    if not items:
        raise ValueError("collate: empty batch")
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def load_seq2seq_split(
    folder_or_file: str | os.PathLike,
    split: str | None,
    tokenizer: TextTokenizer,
    seq_len: int = 128,
    *,
    layout: str = "diffuseq",
    on_overflow: str = "truncate",
    limit: int | None = None,
) -> Seq2SeqDataset:
    """Read ``<folder>/<split>.jsonl`` (or a single jsonl file) and lay it out.

    ``limit`` keeps the first ``limit`` pairs (e.g. a quick evaluation subset).
    """
    path = resolve_split_path(folder_or_file, split)
    pairs = read_seq2seq_jsonl(path)
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        pairs = pairs[:limit]
    return Seq2SeqDataset(pairs, tokenizer, seq_len=seq_len, layout=layout, on_overflow=on_overflow, path=path)
