"""The tokenizer of a run folder (``run_dir/tokenizer``): reused only when it is the one the config asks for.

Beside the tokenizer files the folder records how it was built (``built_with.json``: the kind, the
requested vocab size for a trained vocabulary, the training file and the SHA-256 of its content). A
trained vocabulary matches when the training file's content is the one it was trained on, wherever
that file now lies (a moved run folder keeps its tokenizer; a file rewritten at the same path does
not). A leftover folder that was built otherwise is

* rebuilt, with a note on stdout, when the run is fresh (no checkpoint depends on it yet);
* an error naming the mismatch when the run folder holds checkpoints, which were trained with it.

The folder is written atomically (a temporary folder renamed into place).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from mambadiff.data.tokenizer import TextTokenizer, load_tokenizer
from mambadiff.fileio import atomic_write_folder

from .checkpoint import latest_checkpoint

__all__ = ["BUILT_WITH", "prepare_run_tokenizer", "tokenizer_mismatch"]

BUILT_WITH = "built_with.json"


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _request(kind: str, vocab_size: int, source: str | os.PathLike | None) -> dict:
    trained = kind == "trained" and source is not None
    return {"tokenizer": kind, "vocab_size": vocab_size if kind == "trained" else None,
            "source": str(Path(source).resolve()) if trained else None,
            "sha256": file_sha256(source) if trained and Path(source).is_file() else None}


def tokenizer_mismatch(folder: Path, request: dict) -> str | None:
    """Why the tokenizer in ``folder`` is not the one ``request`` describes (None: it is)."""
    try:
        tok = load_tokenizer(folder)
    except ValueError as e:
        return f"cannot be read ({e})"
    kind = request["tokenizer"]
    if tok.kind != kind:
        return f"holds a {tok.kind} tokenizer (vocab {tok.vocab_size:,}) but the config says data.tokenizer={kind}"
    if kind != "trained":
        return None
    built = {}
    if (folder / BUILT_WITH).is_file():
        try:
            built = json.loads((folder / BUILT_WITH).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            built = {}
    size = built.get("vocab_size")
    if size is None and tok.vocab_size > request["vocab_size"]:  # no record: only the size can be checked
        return f"holds {tok.vocab_size:,} entries but the config says data.vocab_size={request['vocab_size']}"
    if size is not None and size != request["vocab_size"]:
        return f"was trained with data.vocab_size={size} but the config says data.vocab_size={request['vocab_size']}"
    source, digest, wanted = built.get("source"), built.get("sha256"), request.get("sha256")
    if digest is not None and wanted is not None:  # the content decides, not the path
        if digest == wanted:
            return None
        if source == request["source"]:
            return f"was trained on {source}, whose content has changed since (SHA-256 {digest[:12]}... then, " \
                   f"{wanted[:12]}... now)"
        return f"was trained on {source} (SHA-256 {digest[:12]}...) but the config reads {request['source']} " \
               f"(SHA-256 {wanted[:12]}...)"
    if source is not None and request["source"] is not None and source != request["source"]:
        return f"was trained on {source} but the config reads {request['source']}"
    return None


def prepare_run_tokenizer(run_dir: str | Path, kind: str, vocab_size: int, source: str | os.PathLike | None,
                          build: Callable[[], TextTokenizer]) -> TextTokenizer:
    """``run_dir/tokenizer`` when it matches (kind, vocab_size, source), else ``build()`` saved there."""
    run_dir = Path(run_dir)
    folder = run_dir / "tokenizer"
    request = _request(kind, vocab_size, source)
    if folder.is_dir():
        why = tokenizer_mismatch(folder, request)
        if why is None:
            return load_tokenizer(folder)
        if latest_checkpoint(run_dir) is not None:
            raise ValueError(f"{folder}: {why}; the checkpoints of {run_dir} were trained with it. "
                             f"Resume with the config the run started with, or choose another run_dir")
        print(f"{folder}: {why}; building a new tokenizer for this fresh run")
    tok = build()

    def write(tmp: Path) -> None:
        tok.save(tmp)
        (tmp / BUILT_WITH).write_text(json.dumps(request, indent=2) + "\n", encoding="utf-8")

    atomic_write_folder(folder, write)
    return tok
