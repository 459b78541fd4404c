"""Long Range Arena data: ListOps (LRA's TSV files and a generator of our own) and byte-level text.

ListOps
    A ListOps example is a nested list of operations on single digits; the label is its value (10
    classes). LRA's generator writes a TSV with the header ``Source\\tTarget`` whose sources are
    printed as nested pairs in parentheses::

        ( ( ( [MAX 2 ) 9 ) ] )        ->  9       ([MAX 2 9])

    The parentheses only mirror that printer's pairing and carry no information: the reader drops
    them (as LRA-style pipelines do) and keeps the tokens ``0``-``9``, ``[MAX``, ``[MIN``, ``[MED``,
    ``[SM``, ``]``. ``read_listops_tsv`` reads a file of LRA's release (``listops-1000/basic_*.tsv``)
    or one written by ``write_listops_tsv`` / ``generate_listops_splits``.

    Our generator follows LRA's rules: operators MAX, MIN, MED (median of the arguments, rounded
    down when their count is even) and SM (sum mod 10); values 0-9; every operator has 2 to
    ``max_args`` arguments; a node at depth < ``max_depth`` is an operator with probability 1/4
    (else a value) and a node at ``max_depth`` is always a value (the root is depth 1, so a tree has
    at most ``max_depth`` levels); a tree is kept when its length (values, operators and ``]``; no
    parentheses) lies in [``min_length``, ``max_length``] and it is not a duplicate.

Byte-level text
    ``ByteTokenizer``: a text's UTF-8 bytes are its ids (0-255), 256 is padding; no learned
    vocabulary, no special tokens (MambaByte-style input). LRA's Text task reads IMDB this way at
    length 4,096.

Both tokenizers are fixed (``FIXED_TOKENIZERS``): nothing is learned from data, and a run folder's
``tokenizer/`` only records the vocabulary so a reload can check it.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

from mambadiff.fileio import atomic_open, atomic_write_text

from .classification import ClassificationData
from .errors import DataError

__all__ = [
    "LISTOPS_OPERATORS", "LISTOPS_VOCAB", "LISTOPS_HEADER", "LISTOPS_LABEL_NAMES", "FIXED_TOKENIZERS",
    "ListOpsTokenizer", "ByteTokenizer", "fixed_tokenizer", "is_fixed_tokenizer_dir", "load_fixed_tokenizer",
    "ListOpsRules", "ListOpsGenerateConfig", "generate_listops_tree", "listops_value", "listops_source",
    "listops_length", "listops_depth", "generate_listops", "write_listops_tsv", "read_listops_tsv",
    "listops_folder_name", "generate_listops_splits",
]

LISTOPS_OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
LISTOPS_CLOSE = "]"
LISTOPS_PAD = "<pad>"
# ids: digit d is id d, then the operators, the closing bracket and padding last
LISTOPS_VOCAB = tuple(str(d) for d in range(10)) + LISTOPS_OPERATORS + (LISTOPS_CLOSE, LISTOPS_PAD)
LISTOPS_GROUPING = frozenset("()")  # LRA's printer pairs nodes in parentheses; dropped on reading
LISTOPS_HEADER = ("Source", "Target")
LISTOPS_LABEL_NAMES = [str(d) for d in range(10)]
FIXED_TOKENIZERS = ("listops", "bytes")
_META_FILE = "mambadiff_tokenizer.json"
_SPLITS = ("train", "valid", "test")


# ---- fixed tokenizers ----------------------------------------------------------------------------
class ListOpsTokenizer:
    """Whitespace-separated ListOps tokens -> ids of ``LISTOPS_VOCAB``; parentheses are skipped."""

    kind = "listops"

    def __init__(self) -> None:
        self.vocab = list(LISTOPS_VOCAB)
        self._ids = {t: i for i, t in enumerate(self.vocab) if t != LISTOPS_PAD}
        self.pad_id = self.vocab.index(LISTOPS_PAD)
        self.vocab_size = len(self.vocab)

    def encode(self, text: str) -> list[int]:
        ids = []
        for t in text.split():
            if t in LISTOPS_GROUPING:
                continue
            i = self._ids.get(t)
            if i is None:
                raise ValueError(f"unknown ListOps token {t[:20]!r} (expected one of {' '.join(self._ids)} "
                                 f"or a parenthesis)")
            ids.append(i)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[int(i)] for i in ids if int(i) != self.pad_id)

    def save(self, directory: str | os.PathLike) -> Path:
        return _save_meta(directory, self.kind, self.vocab)


class ByteTokenizer:
    """A text's UTF-8 bytes as ids 0-255; id 256 is padding (vocab 257)."""

    kind = "bytes"

    def __init__(self) -> None:
        self.pad_id = 256
        self.vocab_size = 257

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"encode: text must be a str, got {type(text).__name__}")
        return list(text.encode("utf-8", errors="surrogateescape"))  # undecodable input bytes come back as read

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if int(i) != self.pad_id).decode("utf-8", errors="replace")

    def save(self, directory: str | os.PathLike) -> Path:
        return _save_meta(directory, self.kind, None)


FixedTokenizer = Union[ListOpsTokenizer, ByteTokenizer]


def fixed_tokenizer(kind: str) -> FixedTokenizer:
    """The fixed tokenizer a config names: ``listops`` or ``bytes``."""
    if kind == "listops":
        return ListOpsTokenizer()
    if kind == "bytes":
        return ByteTokenizer()
    raise ValueError(f"fixed tokenizer must be one of {FIXED_TOKENIZERS}, got {kind!r}")


def _save_meta(directory, kind: str, vocab: list[str] | None) -> Path:
    d = Path(directory)
    meta = {"format": 1, "kind": kind, "vocab_size": fixed_tokenizer(kind).vocab_size}
    if vocab is not None:
        meta["vocab"] = vocab
    atomic_write_text(d / _META_FILE, json.dumps(meta, indent=2) + "\n")
    return d


def _read_meta(directory) -> dict | None:
    path = Path(directory) / _META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_fixed_tokenizer_dir(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a tokenizer saved by ``ListOpsTokenizer`` / ``ByteTokenizer``."""
    meta = _read_meta(directory)
    return meta is not None and meta.get("kind") in FIXED_TOKENIZERS


def load_fixed_tokenizer(directory: str | os.PathLike) -> FixedTokenizer:
    """The fixed tokenizer saved in ``directory``; its recorded vocabulary must be today's."""
    meta = _read_meta(directory)
    if meta is None or meta.get("kind") not in FIXED_TOKENIZERS:
        raise ValueError(f"{Path(directory) / _META_FILE}: not a fixed ({'/'.join(FIXED_TOKENIZERS)}) tokenizer")
    tok = fixed_tokenizer(meta["kind"])
    saved = meta.get("vocab")
    if meta.get("vocab_size") != tok.vocab_size or (saved is not None and saved != getattr(tok, "vocab", None)):
        raise ValueError(f"{Path(directory) / _META_FILE}: the saved {meta['kind']} vocabulary differs from "
                         f"this version's (vocab_size {meta.get('vocab_size')} vs {tok.vocab_size})")
    return tok


# ---- ListOps trees -------------------------------------------------------------------------------
# A tree is a value (int 0-9) or a pair (operator, [arguments]).
Tree = Union[int, tuple]


@dataclass
class ListOpsRules:
    """LRA's ListOps generation rules (the defaults are LRA's)."""
    max_depth: int = 10      # levels, the root being level 1; level max_depth holds values only
    max_args: int = 10       # arguments per operator (at least 2)
    min_length: int = 500    # tokens: values, operators and ']' (no parentheses)
    max_length: int = 2000
    operator_prob: float = 0.25  # chance that a node above max_depth is an operator

    def validate(self) -> None:
        if self.max_depth < 2:
            raise ValueError(f"max_depth must be >= 2 (an operator and its values), got {self.max_depth}")
        if self.max_args < 2:
            raise ValueError(f"max_args must be >= 2, got {self.max_args}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if not 0 < self.operator_prob < 1:
            raise ValueError(f"operator_prob must be in (0, 1), got {self.operator_prob}")


class _TooLong(Exception):
    pass


def generate_listops_tree(rng: random.Random, rules: ListOpsRules | None = None) -> Tree | None:
    """One tree drawn by LRA's rules, or None when it falls outside the length range (rejected)."""
    rules = rules or ListOpsRules()
    count = [0]
    draw = rng.random  # uniform draws scaled to choices: several times faster than choice / randint
    n_ops, n_counts = len(LISTOPS_OPERATORS), rules.max_args - 1  # argument counts 2..max_args

    def node(depth: int) -> Tree:
        if depth < rules.max_depth and draw() < rules.operator_prob:
            op = LISTOPS_OPERATORS[int(draw() * n_ops)]
            count[0] += 2  # the operator and its ']'
            args = [node(depth + 1) for _ in range(2 + int(draw() * n_counts))]
            return (op, args)
        count[0] += 1
        if count[0] > rules.max_length:  # stop drawing a tree that is already too long
            raise _TooLong
        return int(draw() * 10)

    try:
        tree = node(1)
    except _TooLong:
        return None
    return tree if rules.min_length <= count[0] <= rules.max_length else None


def listops_value(tree: Tree) -> int:
    """The value of a tree: MAX, MIN, MED (the median, rounded down for an even count), SM (sum mod 10)."""
    if isinstance(tree, int):
        return tree
    op, args = tree
    vals = [listops_value(a) for a in args]
    if op == "[MAX":
        return max(vals)
    if op == "[MIN":
        return min(vals)
    if op == "[SM":
        return sum(vals) % 10
    if op == "[MED":
        s = sorted(vals)
        return (s[(len(s) - 1) // 2] + s[len(s) // 2]) // 2
    raise ValueError(f"unknown ListOps operator {op!r}")


def listops_source(tree: Tree, parens: bool = True) -> str:
    """The tree as LRA prints it (``parens``: nested pairs in parentheses) or as bare tokens."""
    if isinstance(tree, int):
        return str(tree)
    op, args = tree
    inner = [listops_source(a, parens) for a in args]
    if not parens:
        return " ".join([op, *inner, LISTOPS_CLOSE])
    # LRA's printer pairs (op, a1), then (that, a2), ... and last (that, ']'), each pair in parentheses
    return "( " * (len(args) + 1) + op + "".join(f" {s} )" for s in inner) + f" {LISTOPS_CLOSE} )"


def listops_length(tree: Tree) -> int:
    return 1 if isinstance(tree, int) else 2 + sum(listops_length(a) for a in tree[1])


def listops_depth(tree: Tree) -> int:
    return 1 if isinstance(tree, int) else 1 + max(listops_depth(a) for a in tree[1])


def generate_listops(n: int, seed: int = 0, rules: ListOpsRules | None = None,
                     exclude: set | None = None) -> Iterator[tuple[Tree, int]]:
    """``n`` distinct (tree, value) examples drawn with ``random.Random(seed)``; trees whose digest is
    in ``exclude`` are skipped and every yielded digest is added to it (distinct splits)."""
    rules = rules or ListOpsRules()
    rules.validate()
    rng = random.Random(seed)
    seen = set() if exclude is None else exclude
    made = 0
    while made < n:
        tree = generate_listops_tree(rng, rules)
        if tree is None:
            continue
        key = hashlib.blake2b(repr(tree).encode(), digest_size=16).digest()
        if key in seen:
            continue
        seen.add(key)
        made += 1
        yield tree, listops_value(tree)


# ---- TSV files -----------------------------------------------------------------------------------
def write_listops_tsv(path: str | os.PathLike, examples, parens: bool = True) -> int:
    """Write (tree, value) pairs as LRA's TSV (header ``Source\\tTarget``), atomically; returns the row count."""
    n = 0
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(LISTOPS_HEADER)
        for tree, value in examples:
            w.writerow([listops_source(tree, parens), value])
            n += 1
    return n


def read_listops_tsv(path: str | os.PathLike, on_bad_row: str = "raise", max_tokens: int = 0,
                     verbose: bool = True) -> ClassificationData:
    """Read a ListOps TSV (LRA's format): examples are (tokens joined by spaces, no parentheses, label).

    Errors name the file, line and field: a header other than ``Source\\tTarget``, a row without
    exactly two fields, an empty source, a token outside the ListOps vocabulary, a target that is not
    an integer 0-9. ``on_bad_row='skip'`` counts bad rows (``skipped``) instead of raising.
    ``max_tokens`` > 0 keeps only the first tokens of each source (the model's length).
    """
    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be raise|skip, got {on_bad_row!r}")
    path = os.fspath(path)
    known = set(LISTOPS_VOCAB) - {LISTOPS_PAD}
    examples: list[tuple[str, int]] = []
    skipped: dict[str, int] = {}
    n_rows = 0
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise DataError(f"cannot read the file ({e.strerror})", file=path) from None
    with f:
        # no quoting: LRA's sources never need it, and a stray quote must not join lines
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError("the file is empty (expected the header Source<TAB>Target)", file=path)
            if [h.strip() for h in header] != list(LISTOPS_HEADER):
                raise DataError(f"expected the header Source<TAB>Target, got {chr(9).join(header)[:60]!r}",
                                file=path, line=1)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                n_rows += 1
                line = reader.line_num
                try:
                    examples.append(_listops_row(row, known, max_tokens, path, line))
                except DataError as e:
                    if on_bad_row == "raise":
                        raise
                    reason = f"bad {e.field or 'row'}"
                    skipped[reason] = skipped.get(reason, 0) + 1
        except UnicodeDecodeError as e:
            raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=path) from None
        except csv.Error as e:
            raise DataError(f"unreadable TSV ({e})", file=path, line=reader.line_num) from None
    if verbose and skipped:
        print(f"{path}: skipped {sum(skipped.values())} bad row(s): {skipped}")
    return ClassificationData(examples=examples, label_names=list(LISTOPS_LABEL_NAMES), path=path,
                              format="listops", label_map={n: i for i, n in enumerate(LISTOPS_LABEL_NAMES)},
                              n_rows=n_rows, skipped=skipped)


def _listops_row(row: list[str], known: set, max_tokens: int, path: str, line: int) -> tuple[str, int]:
    if len(row) != 2:
        raise DataError(f"expected 2 tab-separated fields (Source, Target), got {len(row)}", file=path, line=line)
    source, target = row
    tokens = [t for t in source.split() if t not in LISTOPS_GROUPING]
    if not tokens:
        raise DataError("empty source", file=path, line=line, field="Source")
    bad = next((t for t in tokens if t not in known), None)
    if bad is not None:
        raise DataError(f"unknown token {bad[:20]!r} (expected digits, [MAX [MIN [MED [SM ] or parentheses)",
                        file=path, line=line, field="Source")
    t = target.strip()
    if not (t.isascii() and t.isdigit() and 0 <= int(t) <= 9):
        raise DataError(f"expected an integer 0-9, got {target[:20]!r}", file=path, line=line, field="Target")
    if max_tokens > 0:
        tokens = tokens[:max_tokens]
    return " ".join(tokens), int(t)


# ---- generated splits ----------------------------------------------------------------------------
@dataclass
class ListOpsGenerateConfig:
    """Generate ListOps train/valid/test files (LRA's rules, LRA's sizes by default) when none are given."""
    generate: bool = False   # on: used when data.train is empty
    root: str = "runs/data"  # parent folder; the data folder inside is named by what it holds
    seed: int = 0
    n_train: int = 96000
    n_valid: int = 2000
    n_test: int = 2000
    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2000
    # The train split's length range (0: min_length / max_length). Shorter training trees are a
    # curriculum: a bidirectional Mamba trained on LRA-length trees sat at the majority class for 2,000
    # steps, while on 50-600-token trees it left it after ~1,100 and scores on LRA-length valid rows.
    train_min_length: int = 0
    train_max_length: int = 0

    def rules(self) -> ListOpsRules:
        """The valid and test splits' rules (and the train split's unless train_*_length is set)."""
        return ListOpsRules(max_depth=self.max_depth, max_args=self.max_args, min_length=self.min_length,
                            max_length=self.max_length)

    def train_rules(self) -> ListOpsRules:
        return dataclasses.replace(self.rules(), min_length=self.train_min_length or self.min_length,
                                   max_length=self.train_max_length or self.max_length)


def listops_folder_name(cfg: ListOpsGenerateConfig) -> str:
    """e.g. ``listops-depth10-args10-len500-2000-seed0-train96000-valid2000-test2000`` (and
    ``-trainlen50-600`` when the train split has its own length range)."""
    train = cfg.train_rules()
    own = (train.min_length, train.max_length) != (cfg.min_length, cfg.max_length)
    return (f"listops-depth{cfg.max_depth}-args{cfg.max_args}-len{cfg.min_length}-{cfg.max_length}-"
            f"seed{cfg.seed}-train{cfg.n_train}-valid{cfg.n_valid}-test{cfg.n_test}"
            + (f"-trainlen{train.min_length}-{train.max_length}" if own else ""))


def generate_listops_splits(cfg: ListOpsGenerateConfig, verbose: bool = True) -> dict[str, Path]:
    """{split: path} of ``root/<listops_folder_name>/{train,valid,test}.tsv``, generated when any is missing.

    One stream seeded by ``seed`` draws the test rows first, then valid, then train, all distinct, so a
    smaller ``n_train`` with the same seed keeps the same valid and test sets. A train split with its
    own length range (``train_min_length`` / ``train_max_length``) comes from a second stream seeded
    by ``seed + 1``, distinct from the test and valid rows; valid and test are the same as without it.
    """
    rules, train_rules = cfg.rules(), cfg.train_rules()
    rules.validate()
    train_rules.validate()
    if min(cfg.n_train, cfg.n_valid, cfg.n_test) < 0 or cfg.n_train == 0:
        raise ValueError(f"n_train must be > 0 and n_valid, n_test >= 0, got {cfg.n_train}, {cfg.n_valid}, {cfg.n_test}")
    folder = Path(cfg.root) / listops_folder_name(cfg)
    paths = {s: folder / f"{s}.tsv" for s in _SPLITS}
    if all(p.is_file() for p in paths.values()):
        return paths
    if verbose:
        print(f"generating ListOps data into {folder} ({cfg.n_train:,} train / {cfg.n_valid:,} valid / "
              f"{cfg.n_test:,} test rows)", flush=True)
    seen: set = set()  # digests of every tree written: the splits are distinct
    if train_rules == rules:
        stream = generate_listops(cfg.n_test + cfg.n_valid + cfg.n_train, seed=cfg.seed, rules=rules, exclude=seen)
        streams = {"test": stream, "valid": stream, "train": stream}
    else:  # the train stream is drawn after the test and valid rows exist, so it can exclude them
        stream = generate_listops(cfg.n_test + cfg.n_valid, seed=cfg.seed, rules=rules, exclude=seen)
        streams = {"test": stream, "valid": stream,
                   "train": generate_listops(cfg.n_train, seed=cfg.seed + 1, rules=train_rules, exclude=seen)}
    sizes = {"test": cfg.n_test, "valid": cfg.n_valid, "train": cfg.n_train}
    for split in ("test", "valid", "train"):
        write_listops_tsv(paths[split], itertools.islice(streams[split], sizes[split]))
    atomic_write_text(folder / "generator.json", json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    return paths
