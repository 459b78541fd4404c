"""The metrics of a run: ``metrics.jsonl`` (what ``mambadiff report`` plots) and, with
``train.tensorboard=true``, the same scalars as TensorBoard events in ``run_dir/tensorboard``.

TensorBoard needs the optional ``tensorboard`` package (``pip install 'mambadiff[tensorboard]'``);
asking for it without the package is an error at start-up, not a silent no-op.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

from mambadiff.fileio import atomic_write_text

__all__ = ["MetricsLog", "json_record", "tensorboard_writer_class"]


def tensorboard_writer_class():
    """torch's ``SummaryWriter``, or ValueError saying how to install what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError(f"train.tensorboard=true needs the tensorboard package ({e}); install it with "
                         f"pip install 'mambadiff[tensorboard]', or set train.tensorboard=false") from None
    return SummaryWriter


def json_record(record: dict) -> str:
    """One line of strict JSON: a NaN or infinite number (which ``json.dumps`` would write as the
    non-JSON ``NaN`` / ``Infinity``) becomes ``null``."""
    return json.dumps(_finite_or_null(record), allow_nan=False)


def _finite_or_null(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


class MetricsLog:
    """Append-only JSONL of train/eval records (strict JSON: a non-finite value is ``null``),
    mirrored to TensorBoard when asked."""

    def __init__(self, path: Path, enabled: bool, tensorboard: bool = False):
        self.path, self.enabled = Path(path), enabled
        self._writer_class = tensorboard_writer_class() if tensorboard and enabled else None
        self._writer = None
        self._purge_step: int | None = None

    def truncate_after(self, step: int) -> None:
        """On resume, drop records written after the checkpoint we resume from (they will be redone)."""
        if not self.enabled:
            return
        self._purge_step = step + 1  # TensorBoard drops its events after `step` when it reopens
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed run
        atomic_write_text(self.path, "".join(l + "\n" for l in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json_record(record) + "\n").encode("utf-8")
        with open(self.path, "ab", buffering=0) as f:
            size = f.seek(0, os.SEEK_END)
            try:
                view = memoryview(line)
                while view:  # an unbuffered write may take part of the line
                    view = view[f.write(view):]
            except OSError as e:  # a full disk: cut the part of the line that was written, keep the log strict
                with contextlib.suppress(OSError):
                    os.ftruncate(f.fileno(), size)
                raise OSError(e.errno, e.strerror, str(self.path)) from e
        if self._writer_class is not None:
            self._tensorboard(record)

    def _tensorboard(self, record: dict) -> None:
        if self._writer is None:
            self._writer = self._writer_class(log_dir=str(self.path.parent / "tensorboard"),
                                              purge_step=self._purge_step)
        split, step = record.get("split", "train"), int(record.get("step", 0))
        for key, value in record.items():
            if key in ("split", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(f"{split}/{key}", value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
