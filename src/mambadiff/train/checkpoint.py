"""Checkpoint I/O: every write is atomic and durable, every read is checked, nothing is pickled.

A checkpoint folder holds
    model.safetensors      the trained weights (EMA weights live in ema.safetensors when EMA is on)
    ema.safetensors        optional
    optimizer.json         optimizer + LR scheduler + grad-scaler state, its tensors replaced by keys
    optimizer.safetensors  those tensors (see ``state_codec``)
    trainer_state.json     step, epoch position, RNG states, task state, metrics
    config.json            the full run config (so the folder loads with one call)

A folder is written as ``.NAME.tmpXXXX`` beside its final place, every file and the folder are
fsynced, then it is renamed into place (replacing an older folder of the same name goes through
``.NAME.old``). A killed writer leaves only such hidden folders; ``clean_stale_folders`` removes
them (and puts back a ``.NAME.old`` whose replacement never arrived) when a run starts or resumes.

Reading a damaged or foreign folder raises ``CheckpointError`` naming the file; ``check_weights``
checks a weights file against a model's state dict (names and shapes). Checkpoints written
before ``optimizer.json`` existed carry ``optimizer.pt``; it is read with ``weights_only=True``.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mambadiff.config import from_dict
from mambadiff.fileio import atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)
from mambadiff.fileio import os_error_reason

from .state_codec import decode_state, encode_state

OPTIMIZER_JSON, OPTIMIZER_TENSORS, LEGACY_OPTIMIZER = "optimizer.json", "optimizer.safetensors", "optimizer.pt"
_STEP_FOLDER = re.compile(r"step_(\d+)")
_STALE = re.compile(r"\.(.+)\.(tmp.*|old)")
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged or not one we wrote; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


class CheckpointWriteError(CheckpointError):
    """A checkpoint or run folder that cannot be written (disk full, no permission)."""


# ---- writing -------------------------------------------------------------------------------------
def _state_to_safetensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage (tied weights): store contiguous private copies.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


def _as_os_error(e: SafetensorError, path: Path) -> OSError | None:
    """The OSError inside a safetensors write error (None when it is not an I/O error): safetensors
    (Rust) reports a full disk as ``SafetensorError('Error while serializing: I/O error: No space
    left on device (os error 28)')``."""
    m = _OS_ERROR.search(str(e))
    if m is None and "I/O error" not in str(e):
        return None
    code = int(m.group(1)) if m else errno.EIO
    return OSError(code, os.strerror(code), str(path))


def _write_error(folder: Path, e: OSError) -> CheckpointWriteError:
    why = os_error_reason(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        why += " (the disk is full)" if e.errno == errno.ENOSPC else " (the quota is used up)"
    kept = [p.name for p in step_checkpoints(folder.parent.parent)] if folder.parent.name == "checkpoints" else []
    kept_text = f"the newest complete checkpoint, {kept[0]}, is kept" if kept else "no checkpoint was written"
    return CheckpointWriteError(folder, f"cannot write the checkpoint: {why}; {kept_text}")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        save_file(tensors, str(path))
    except SafetensorError as e:  # an I/O failure (a full disk) is an OSError like any other write's
        os_error = _as_os_error(e, path)
        if os_error is None:
            raise
        raise os_error from e


def save_checkpoint(folder: str | Path, *, model_state: dict, config: dict, trainer_state: dict,
                    optimizer_state: dict | None = None, ema_state: dict | None = None,
                    write_extra=None) -> Path:
    """Write a checkpoint folder atomically: a half-written checkpoint never replaces a good one.

    An OSError (disk full, no permission) becomes ``CheckpointWriteError``; the folder's previous
    content, if any, is left as it was."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp", dir=folder.parent))
    except OSError as e:
        raise _write_error(folder, e) from e
    try:
        _save_tensors(_state_to_safetensors(model_state), tmp / "model.safetensors")
        if ema_state is not None:
            _save_tensors(_state_to_safetensors(ema_state), tmp / "ema.safetensors")
        if optimizer_state is not None:
            skeleton, tensors = encode_state(optimizer_state)
            _save_tensors(tensors, tmp / OPTIMIZER_TENSORS)
            (tmp / OPTIMIZER_JSON).write_text(json.dumps(skeleton) + "\n", encoding="utf-8")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state) + "\n", encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if write_extra is not None:  # e.g. tokenizer files, so the folder loads on its own
            write_extra(tmp)
        _fsync_tree(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
            os.replace(tmp, folder)
            fsync_path(folder.parent)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
        fsync_path(folder.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(folder, e) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def ensure_writable(run_dir: str | Path) -> None:
    """Create ``run_dir`` and check a file can be written there (CheckpointWriteError otherwise)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_check.", dir=run_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CheckpointWriteError(run_dir, f"the run folder is not writable: {os_error_reason(e)}") from e


def clean_stale_folders(run_dir: str | Path) -> list[Path]:
    """Remove what killed checkpoint writes left under run_dir/checkpoints; returns what it removed.

    ``.NAME.tmp*`` folders are incomplete and go. A ``.NAME.old`` is the previous complete NAME: it
    is put back when NAME itself is missing (the kill fell between the two renames), else removed."""
    ckpts = Path(run_dir) / "checkpoints"
    removed: list[Path] = []
    if not ckpts.is_dir():
        return removed
    for p in sorted(ckpts.iterdir()):
        m = _STALE.fullmatch(p.name)
        if m is None or not p.is_dir():
            continue
        final = ckpts / m.group(1)
        if m.group(2) == "old" and not final.exists():
            os.replace(p, final)
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


# ---- reading -------------------------------------------------------------------------------------
def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(path, "missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(path, f"not a readable safetensors file (truncated or damaged?): {e}") from None


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold a NaN or an infinity, sorted."""
    return sorted(k for k, v in tensors.items()
                  if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()))


def first_names(names: list[str], n: int = 3) -> str:
    """``a, b, c and 4 more``: the first ``n`` names of a list, for an error message."""
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_weights(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                  expected: Mapping[str, torch.Tensor], target: str = "this model") -> None:
    """Check a weights file's ``tensors`` against ``expected`` (a model's ``state_dict()``): the same
    names with the same shapes, and every value finite. Otherwise ``CheckpointError`` naming ``path``
    with the first missing, unexpected and wrong-shape names, e.g. ``PATH: does not fit this model
    (missing a, b; w has shape (3, 4), this model needs (4, 4))``, or the tensors holding NaN or
    infinity (weights of a diverged run); ``target`` names what the weights should fit."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k].shape))
    if not (missing or unexpected or wrong):
        bad = nonfinite_tensors(tensors)
        if bad:
            raise CheckpointError(path, f"holds NaN or infinite values in {first_names(bad)} (the run "
                                        f"diverged before these weights were saved); use an earlier checkpoint")
        return

    parts = [f"missing {first_names(missing)}"] if missing else []
    parts += [f"unexpected {first_names(unexpected)}"] if unexpected else []
    if wrong:
        k = wrong[0]
        others = f" ({len(wrong) - 1} more of other shapes)" if len(wrong) > 1 else ""
        parts.append(f"{k} has shape {tuple(tensors[k].shape)}, {target} needs {tuple(expected[k].shape)}{others}")
    raise CheckpointError(path, f"does not fit {target} ({'; '.join(parts)})")


def load_state(folder: str | Path, ema: bool = True) -> dict[str, torch.Tensor]:
    """Model weights of a checkpoint folder (EMA weights when present and ``ema``)."""
    folder = Path(folder)
    path = folder / "ema.safetensors" if ema and (folder / "ema.safetensors").exists() else folder / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: not a checkpoint folder (no model.safetensors)")
    return _load_tensors(path)


def load_weights(folder: str | Path, model: torch.nn.Module, ema: bool = True) -> None:
    """Put a checkpoint folder's weights (EMA when present and ``ema``) into ``model``, checked first
    (`check_weights`): a damaged or foreign weights file is a CheckpointError naming the file."""
    folder = Path(folder)
    path = folder / "ema.safetensors" if ema and (folder / "ema.safetensors").exists() else folder / "model.safetensors"
    state = load_state(folder, ema=ema)
    check_weights(path, state, model.state_dict(), target="the checkpoint's config.json")
    model.load_state_dict(state)


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 JSON file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None


def _read_json_checked(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(path, "missing")
    try:
        data = read_json(path)
    except ValueError as e:
        raise CheckpointError(path, str(e).split(": ", 1)[-1]) from None
    if not isinstance(data, dict):
        raise CheckpointError(path, "expected a JSON object")
    return data


def load_optimizer_state(folder: str | Path) -> dict:
    """The optimizer / scheduler / scaler state of a checkpoint folder (CheckpointError if damaged)."""
    folder = Path(folder)
    if not (folder / OPTIMIZER_JSON).exists() and (folder / LEGACY_OPTIMIZER).exists():
        path = folder / LEGACY_OPTIMIZER
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on bad files
            raise CheckpointError(path, f"not a plain tensor file (refused: {str(e).splitlines()[0]})") from None
    else:
        skeleton = _read_json_checked(folder / OPTIMIZER_JSON)
        tensors = _load_tensors(folder / OPTIMIZER_TENSORS)
        try:
            state = decode_state(skeleton, tensors)
        except ValueError as e:
            raise CheckpointError(folder / OPTIMIZER_JSON, f"not an optimizer state ({e})") from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "scaler"} <= set(state):
        raise CheckpointError(folder / OPTIMIZER_JSON, "expected optimizer, scheduler and scaler states")
    return state


@dataclass
class CheckpointData:
    """Everything a resume needs, read and checked before anything is applied."""
    folder: Path
    trainer_state: dict
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    optimizer: dict


def read_checkpoint(folder: str | Path, with_ema: bool) -> CheckpointData:
    """Read all files of a checkpoint folder for a resume (CheckpointError naming a damaged file)."""
    folder = Path(folder)
    state = _read_json_checked(folder / "trainer_state.json")
    for key in ("step", "order", "rng", "task"):
        if key not in state:
            raise CheckpointError(folder / "trainer_state.json", f"no {key!r} entry")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointError(folder / "trainer_state.json", f"step must be an int >= 0, got {state['step']!r}")
    model = _load_tensors(folder / "model.safetensors")
    ema = _load_tensors(folder / "ema.safetensors") if with_ema else None
    return CheckpointData(folder, state, model, ema, load_optimizer_state(folder))


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete ``step_*`` checkpoints under run_dir/checkpoints, newest first."""
    ckpts = Path(run_dir) / "checkpoints"
    if not ckpts.is_dir():
        return []
    found = [p for p in ckpts.iterdir() if _STEP_FOLDER.fullmatch(p.name) and p.is_dir()
             and (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]), reverse=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under run_dir/checkpoints (temp folders are ignored)."""
    found = step_checkpoints(run_dir)
    return found[0] if found else None


def run_config(cfg, resume: bool):
    """The config a run trains with. The folder given (``cfg.run_dir``) is the run, wherever it was
    first trained: a moved or copied run folder resumes in its new place.

    A run folder that already holds checkpoints is refused without ``resume``; with it, the folder's
    saved config is used (the model and data must be the ones the checkpoint was trained with),
    taking only ``run_dir``, ``train.steps`` and ``train.max_minutes`` from ``cfg``. ``resume`` on a
    folder without a checkpoint starts a fresh run and says so on stderr (so one job script with
    ``--resume`` serves the first start and every requeue)."""
    run_dir = Path(cfg.run_dir)
    last = latest_checkpoint(run_dir)
    if last is None:
        if resume:
            print(f"--resume: {run_dir} holds no checkpoint (no checkpoints/step_*): starting a fresh run",
                  file=sys.stderr, flush=True)
        return cfg
    if not resume:
        raise FileExistsError(f"{run_dir} already holds checkpoints: pass --resume to continue it, "
                              f"or choose another run_dir")
    saved = from_dict(type(cfg), read_json(run_dir / "config.json"))
    saved.run_dir = cfg.run_dir
    saved.train.steps, saved.train.max_minutes = cfg.train.steps, cfg.train.max_minutes
    return saved


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the latest checkpoint of a run folder."""
    path = Path(path)
    folder = path if (path / "model.safetensors").exists() else latest_checkpoint(path)
    if folder is None:
        raise FileNotFoundError(f"{path}: no checkpoint found (expected model.safetensors or checkpoints/step_*)")
    return folder


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` step checkpoints (0: keep all)."""
    for p in step_checkpoints(run_dir)[keep:] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
