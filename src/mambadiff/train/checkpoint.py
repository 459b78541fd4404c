"""Checkpoint I/O: every write is atomic (a temporary folder renamed into place).

A checkpoint folder holds
    model.safetensors     the trained weights (EMA weights live in ema.safetensors when EMA is on)
    ema.safetensors       optional
    optimizer.pt          optimizer + LR scheduler + grad-scaler state (torch.save)
    trainer_state.json    step, epoch position, RNG states, task state, metrics
    config.json           the full run config (so the folder loads with one call)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mambadiff.config import from_dict
from mambadiff.fileio import atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)


def _state_to_safetensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage (tied weights): store contiguous private copies.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_checkpoint(folder: str | Path, *, model_state: dict, config: dict, trainer_state: dict,
                    optimizer_state: dict | None = None, ema_state: dict | None = None,
                    write_extra=None) -> Path:
    """Write a checkpoint folder atomically: a half-written checkpoint never replaces a good one."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp", dir=folder.parent))
    try:
        save_file(_state_to_safetensors(model_state), str(tmp / "model.safetensors"))
        if ema_state is not None:
            save_file(_state_to_safetensors(ema_state), str(tmp / "ema.safetensors"))
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state) + "\n", encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if write_extra is not None:  # e.g. tokenizer files, so the folder loads on its own
            write_extra(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_state(folder: str | Path, ema: bool = True) -> dict[str, torch.Tensor]:
    """Model weights of a checkpoint folder (EMA weights when present and ``ema``)."""
    folder = Path(folder)
    path = folder / "ema.safetensors" if ema and (folder / "ema.safetensors").exists() else folder / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: not a checkpoint folder (no model.safetensors)")
    return load_file(str(path))


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under run_dir/checkpoints (temp folders are ignored)."""
    ckpts = Path(run_dir) / "checkpoints"
    if not ckpts.is_dir():
        return None
    found = [p for p in ckpts.glob("step_*") if p.is_dir() and (p / "trainer_state.json").exists()]
    return max(found, key=lambda p: int(p.name.split("_")[1])) if found else None


def run_config(cfg, resume: bool):
    """The config a run trains with. A run folder that already holds checkpoints is refused without
    ``resume``; with it, the folder's saved config is used (the model and data must be the ones the
    checkpoint was trained with), taking only ``train.steps`` and ``train.max_minutes`` from ``cfg``."""
    run_dir = Path(cfg.run_dir)
    last = latest_checkpoint(run_dir)
    if last is None:
        return cfg
    if not resume:
        raise FileExistsError(f"{run_dir} already holds checkpoints: pass --resume to continue it, "
                              f"or choose another run_dir")
    saved = from_dict(type(cfg), read_json(run_dir / "config.json"))
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
    ckpts = Path(run_dir) / "checkpoints"
    found = sorted((p for p in ckpts.glob("step_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    for p in found[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
