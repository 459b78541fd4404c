"""Which folder a training run may take as its run folder (``run_dir``), checked before it writes.

A run writes ``config.json``, ``metrics.jsonl``, ``tokenizer/``, ``checkpoints/`` and ``.lock`` into its
folder, and may replace or remove what is there under those names. So a folder is taken only when it is

* new (it and any missing parents are created), or empty;
* a run folder: it holds ``.lock`` (every run takes it first), ``checkpoints/``, ``metrics.jsonl`` or a
  run's ``tokenizer/``, or a ``config.json`` of a run of this kind (its top-level keys are among the
  config's, ``train`` included; a seq2seq, a classification and a synthetic run each have their own).

Anything else (``/``, a home folder, a source tree, a data folder) is refused with `RunFolderError`
naming a few of its entries, before anything is written. ``check_runs_root`` checks the folder that a
benchmark fills with one run folder per setting. ``discard_failed_start`` removes what a run wrote
into its folder when it fails before training wrote anything (a setting that only the data can refute,
such as a batch larger than the training set, leaves the folder as it was).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from .checkpoint import step_checkpoints
from .run_lock import LOCK_NAME

__all__ = ["RunFolderError", "check_run_folder", "check_runs_root", "discard_failed_start", "is_run_folder"]

_MARKERS = (".lock", "checkpoints", "metrics.jsonl")


class RunFolderError(ValueError):
    """A ``run_dir`` that a run must not write into (not empty and not a run folder, or a file)."""


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError as e:
        raise RunFolderError(f"run_dir={folder}: cannot be read ({e.strerror or e})") from None


def _config_kind(path: Path, keys: set[str] | None) -> bool | None:
    """True when ``path`` is a run's config.json (of this kind: its top-level keys among ``keys``, when
    given), False when it is some other file, None when there is none."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        return False
    return keys is None or set(saved) <= keys


def is_run_folder(folder: str | os.PathLike, config_keys: Iterable[str] | None = None) -> bool:
    """Whether ``folder`` holds what a run writes (see the module docstring); with ``config_keys``, a
    config.json must be one of a run of that kind."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if any((folder / name).exists() for name in _MARKERS):
        return True
    if (folder / "tokenizer" / "mambadiff_tokenizer.json").is_file():
        return True
    return bool(_config_kind(folder / "config.json", None if config_keys is None else set(config_keys)))


def _some(names: list[str], n: int = 4) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_run_folder(run_dir: str | os.PathLike, config_keys: Iterable[str], kind: str = "") -> None:
    """Refuse (`RunFolderError`) a ``run_dir`` that is a file, or a folder that is neither empty nor a
    run folder of this kind (``config_keys``: the top-level keys of its config; ``kind`` names it in
    the message, e.g. ``seq2seq``)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        if run_dir.is_symlink():
            raise RunFolderError(f"run_dir={run_dir}: a broken symbolic link; choose another run_dir")
        return
    if not run_dir.is_dir():
        raise RunFolderError(f"run_dir={run_dir}: is a file, not a folder; choose another run_dir")
    names = _entries(run_dir)
    if not names:
        return
    keys = set(config_keys)
    if _config_kind(run_dir / "config.json", keys) is False:
        what = f"a {kind} run" if kind else f"a run of this kind (sections {', '.join(sorted(keys))})"
        raise RunFolderError(f"run_dir={run_dir}: its config.json is not the config of {what}; choose "
                             f"a new or empty folder for run_dir")
    if not is_run_folder(run_dir, keys):
        raise RunFolderError(f"run_dir={run_dir}: the folder is not empty and is not a run folder (it holds "
                             f"{_some(names)}); a run writes config.json, metrics.jsonl, tokenizer/ and "
                             f"checkpoints/ into run_dir: choose a new or empty folder")


def check_runs_root(root: str | os.PathLike | None) -> None:
    """Refuse (`RunFolderError`) a benchmark's ``run_dir`` that is a file, or a folder that is neither
    empty nor holds a run folder already (the benchmark adds one run folder per setting to it). None
    (a temporary folder) passes."""
    if root is None or not Path(root).exists():
        return
    root = Path(root)
    if not root.is_dir():
        raise RunFolderError(f"run_dir={root}: is a file, not a folder; choose another folder")
    names = _entries(root)
    if names and not any(is_run_folder(root / name) for name in names):
        raise RunFolderError(f"run_dir={root}: the folder is not empty and holds no run folder (it holds "
                             f"{_some(names)}); the benchmark writes one run folder per setting into it: "
                             f"choose a new or empty folder")


@contextlib.contextmanager
def discard_failed_start(run_dir: str | os.PathLike, enabled: bool = True):
    """On an exception in the block, remove the entries of ``run_dir`` that the block created (the data
    folder, ``tokenizer/``, ``config.json``, ...) when training has written nothing yet: no
    ``metrics.jsonl`` and no checkpoint. A run that failed later keeps its folder for a look and a
    ``--resume``. ``enabled=False`` (the non-main ranks) does nothing."""
    run_dir = Path(run_dir)
    before = set(_entries(run_dir)) if enabled and run_dir.is_dir() else set()
    try:
        yield
    except Exception:
        if enabled and run_dir.is_dir() and not (run_dir / "metrics.jsonl").exists() and not step_checkpoints(run_dir):
            for name in sorted(set(os.listdir(run_dir)) - before - {LOCK_NAME}):
                path = run_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()
        raise
