"""Loading a trained diffusion seq2seq model: (model, tokenizer, config) from a run or checkpoint folder."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mambadiff.config import from_dict
from mambadiff.data.tokenizer import load_tokenizer
from mambadiff.models.denoiser import Denoiser
from mambadiff.train.checkpoint import load_state, read_json, resolve_checkpoint

from .config import Seq2SeqConfig


def load_seq2seq_model(path: str | Path, ema: bool = True, device: str = "cpu"):
    """(model, tokenizer, config) from a run folder (latest checkpoint) or a checkpoint folder."""
    folder = resolve_checkpoint(path)
    cfg = from_dict(Seq2SeqConfig, read_json(folder / "config.json"))
    tok = load_tokenizer(folder / "tokenizer")
    model = Denoiser(cfg.model)
    model.load_state_dict(read_weights(folder, ema=ema, model=model))
    return model.to(device).eval(), tok, cfg


def read_weights(folder: Path, ema: bool, model: nn.Module) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, checked against ``model``: a truncated or foreign weights file is a
    ValueError naming the file, not a deep safetensors / load_state_dict trace."""
    path = folder / ("ema.safetensors" if ema and (folder / "ema.safetensors").exists() else "model.safetensors")
    try:
        state = load_state(folder, ema=ema)
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors raises its own SafetensorError (not an OSError) on a damaged file
        raise ValueError(f"{path}: cannot read the weights ({' '.join(str(e).split())}); the file is truncated "
                         "or not a safetensors file") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        what = (f"missing {', '.join(missing[:3])}" if missing else
                f"unexpected {', '.join(unexpected[:3])}" if unexpected else
                f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the config needs {tuple(expected[wrong[0]].shape)}")
        raise ValueError(f"{path}: the weights do not fit the checkpoint's config.json ({what})")
    return state


