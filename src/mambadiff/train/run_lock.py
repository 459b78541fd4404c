"""One process per run folder: ``run_lock`` holds an exclusive lock on ``run_dir/.lock`` for the
run's life.

The lock is ``fcntl.flock`` on the file, which the kernel drops when the process ends however it
ends (exit, exception, SIGKILL, a crash), so a lock is never left stale; the file itself stays and
holds the PID of the last process that took it, which the error of a refused second run names.
The second run is refused before it writes anything to the folder.

Some network file systems do not support ``flock`` (e.g. Lustre mounted without ``-o flock``):
there the run goes on unlocked with a ``RunLockWarning``.
"""
from __future__ import annotations

import contextlib
import errno
import os
import warnings
from pathlib import Path

__all__ = ["LOCK_NAME", "RunFolderBusyError", "RunLockWarning", "run_lock"]

LOCK_NAME = ".lock"


class RunFolderBusyError(FileExistsError):
    """Another live process is training in this run folder."""


class RunLockWarning(UserWarning):
    """The run folder cannot be locked (no ``flock`` on this file system); the run is not guarded."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, enabled: bool = True):
    """Hold ``run_dir/.lock`` while the block runs (creating ``run_dir``, and removing it again when
    the block wrote nothing into a folder it created); ``RunFolderBusyError``
    naming the holder's PID when another process holds it. ``enabled=False`` (the non-main ranks of
    a distributed run, whose rank 0 holds the lock) does nothing."""
    if not enabled:
        yield
        return
    import fcntl

    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                warnings.warn(f"{path}: cannot lock the run folder ({e.strerror or e}); nothing stops a "
                              f"second run from writing into it", RunLockWarning, stacklevel=3)
            else:
                raise RunFolderBusyError(
                    f"{run_dir} is in use by {_holder(fd)} (it holds {path}): wait for it to end, stop it, "
                    f"or choose another run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        if created and sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]:
            path.unlink()  # a run that wrote nothing (bad input found first) leaves no folder behind
            run_dir.rmdir()
        os.close(fd)  # drops the lock
