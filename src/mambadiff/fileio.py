"""Atomic file writes: a file is either its old content or its complete new content, never half-written.

Write to a temporary file in the same folder, flush and fsync it, then ``os.replace`` it into place.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator


# errno -> the words an error message uses (the C library's strerror is capitalised and terse)
_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted", errno.EIO: "input/output error"}


def os_error_reason(e: OSError) -> str:
    """What went wrong, in lower case: ``no space left on device``, ``permission denied``, ..."""
    return _REASONS.get(e.errno) or (e.strerror or str(e)).lower()


def describe_os_error(e: OSError, action: str | None = None) -> str:
    """A one-line message naming the file: ``PATH: cannot write: no space left on device``
    (``action`` defaults to ``cannot write`` for a full disk or a read-only one, else ``cannot open``).

    A temporary file of `atomic_open` (``.NAME.XXXX.tmp``) is named as the file it stands for, which
    is the one the user knows. An OSError raised with a message of our own (no errno) is kept as is."""
    if e.errno is None:
        return str(e)
    if action is None:
        action = "cannot write" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "cannot open"
    name = e.filename
    if name is not None:
        path = Path(os.fsdecode(name))
        if path.name.startswith(".") and path.name.endswith(".tmp") and path.name.count(".") >= 3:
            path = path.with_name(path.name[1:].rsplit(".", 2)[0])
        return f"{path}: {action}: {os_error_reason(e)}"
    return f"{action}: {os_error_reason(e)}"


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """A file object on a temp file beside ``path``, moved into place only when the block completes.

    ``mode`` is ``"w"`` (text; e.g. ``encoding="utf-8", newline=""``) or ``"wb"``; on an exception
    the temp file is removed and ``path`` keeps its old content.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if e.filename is None:  # a failed write or fsync names no file: name the one being written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, records) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def atomic_write_folder(folder: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` fills a temporary sibling folder, which then replaces ``folder``: a reader sees the
    old folder or the complete new one. Temporary folders a killed write left (``.<name>.tmp*``) go first."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{folder.name}.tmp"
    for stale in folder.parent.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=folder.parent))
    try:
        write(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
