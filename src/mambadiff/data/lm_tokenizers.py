"""Tokenizers of language models: bytes (MambaByte), characters (nanoGPT's Tiny Shakespeare), and a
byte-level BPE trained on the data. All are lossless: ``decode(encode(text)) == text``.

Every tokenizer has the same small surface: ``encode(text) -> ids``, ``decode(ids) -> text``,
``vocab_size``, ``eos_id`` (the end-of-document token placed between documents and used as a stop
token), ``token_bytes`` (the UTF-8 bytes each id stands for, which turns nats per token into bits
per byte exactly), and ``save(folder)`` / `load_lm_tokenizer` (``lm_tokenizer.json``, plus
``tokenizer.json`` for BPE).

Ids:
    bytes   0-255 the bytes of the UTF-8 text, 256 <eos>                                  (vocab 257)
    chars   0 <eos>, 1 <unk>, then the characters of the training text in code-point order
    bpe     the trained vocabulary (the 256 byte symbols first, so any text encodes), then <eos>

The end-of-document token counts as one byte (the separator it stands for) in ``token_bytes``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence, Union

__all__ = ["ByteTokenizer", "CharTokenizer", "BPETokenizer", "PretrainedTokenizer", "LMTokenizer", "LM_TOKENIZERS",
           "build_lm_tokenizer", "load_lm_tokenizer", "META_FILE"]

META_FILE = "lm_tokenizer.json"
LM_TOKENIZERS = ("bytes", "chars", "bpe")
EOS, UNK = "<eos>", "<unk>"


def _write_meta(folder: str | os.PathLike, meta: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).write_text(json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255, <eos> = 256."""

    kind = "bytes"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", errors="surrogateescape"))  # undecodable input bytes come back as read

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    @property
    def token_bytes(self) -> list[int]:
        return [1] * self.vocab_size

    def save(self, folder: str | os.PathLike) -> Path:
        return _write_meta(folder, {"kind": self.kind})


class CharTokenizer:
    """One id per character seen in the training text (code-point order); unseen characters are <unk>."""

    kind = "chars"
    eos_id, unk_id = 0, 1

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self.index = {c: i + 2 for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars) + 2

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen))

    def encode(self, text: str) -> list[int]:
        get = self.index.get
        return [get(c, self.unk_id) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i - 2] if 2 <= i < self.vocab_size else ("\ufffd" if i == self.unk_id else "")
                       for i in map(int, ids))

    @property
    def token_bytes(self) -> list[int]:
        return [1, 1] + [len(c.encode("utf-8", errors="surrogateescape")) for c in self.chars]

    def save(self, folder: str | os.PathLike) -> Path:
        return _write_meta(folder, {"kind": self.kind, "chars": self.chars})


class BPETokenizer:
    """A byte-level BPE (the ``tokenizers`` library's), trained on the data; <eos> is its last id."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.eos_id = tokenizer.token_to_id(EOS)
        self.vocab_size = tokenizer.get_vocab_size()
        if self.eos_id is None:
            raise ValueError(f"a BPE tokenizer for a language model needs the {EOS} token")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    @property
    def token_bytes(self) -> list[int]:
        # a byte-level token is a string of byte symbols, one character per byte
        sizes = [0] * self.vocab_size
        for token, i in self.tok.get_vocab().items():
            sizes[i] = 1 if token == EOS else len(token)
        return sizes

    def save(self, folder: str | os.PathLike) -> Path:
        folder = _write_meta(folder, {"kind": self.kind})
        self.tok.save(str(folder / "tokenizer.json"))
        return folder


class PretrainedTokenizer(BPETokenizer):
    """The ``tokenizer.json`` of a published checkpoint (e.g. the GPT-NeoX BPE of the Mamba models),
    its end-of-text id taken from the model's ``config.json``."""

    kind = "pretrained"

    def __init__(self, tokenizer, eos_id: int):
        self.tok, self.eos_id = tokenizer, eos_id
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "PretrainedTokenizer":
        from tokenizers import Tokenizer
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise ValueError(f"{folder / 'tokenizer.json'}: missing (the checkpoint's tokenizer is needed to read "
                             f"and write text)")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        eos = config.get("eos_token_id")
        return cls(tok, int(eos) if isinstance(eos, int) else tok.get_vocab_size() - 1)


LMTokenizer = Union[ByteTokenizer, CharTokenizer, BPETokenizer, PretrainedTokenizer]


def build_lm_tokenizer(kind: str, texts: Iterable[str] = (), vocab_size: int = 0) -> LMTokenizer:
    """The tokenizer ``kind`` names; ``chars`` and ``bpe`` are built from ``texts`` (``bpe``: at most
    ``vocab_size`` ids)."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "chars":
        return CharTokenizer.from_texts(texts)
    if kind == "bpe":
        if vocab_size < 258:
            raise ValueError(f"data.vocab_size must be >= 258 for a byte-level BPE (256 bytes + <eos> + a merge), "
                             f"got {vocab_size}")
        return BPETokenizer.train(texts, vocab_size)
    raise ValueError(f"data.tokenizer must be one of {'|'.join(LM_TOKENIZERS)}, got {kind!r}")


def load_lm_tokenizer(folder: str | os.PathLike) -> LMTokenizer:
    """A tokenizer written by ``save``; ValueError naming the file when it is missing or damaged."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        kind = meta["kind"]
    except FileNotFoundError:
        raise ValueError(f"{path}: missing (not a language-model tokenizer folder)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a language-model tokenizer description ({e})") from None
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "chars":
        return CharTokenizer(meta["chars"])
    if kind == "bpe":
        from tokenizers import Tokenizer
        return BPETokenizer(Tokenizer.from_file(str(Path(folder) / "tokenizer.json")))
    raise ValueError(f"{path}: field 'kind' must be one of {'|'.join(LM_TOKENIZERS)}, got {kind!r}")
