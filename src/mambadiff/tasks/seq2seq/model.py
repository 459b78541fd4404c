"""Loading a trained diffusion seq2seq model: (model, tokenizer, config) from a run or checkpoint folder."""
from __future__ import annotations

from pathlib import Path

from mambadiff.config import from_dict
from mambadiff.data.tokenizer import load_tokenizer
from mambadiff.models.denoiser import Denoiser
from mambadiff.train.checkpoint import load_weights, read_json, resolve_checkpoint

from .config import Seq2SeqConfig


def load_seq2seq_model(path: str | Path, ema: bool = True, device: str = "cpu"):
    """(model, tokenizer, config) from a run folder (latest checkpoint) or a checkpoint folder."""
    folder = resolve_checkpoint(path)
    saved = read_json(folder / "config.json")
    if isinstance(saved, dict) and "param_match" in saved:  # ClassifyConfig's own section
        raise ValueError(f"{path}: a classification run (its config.json has param_match); "
                         "`mambadiff classify eval --checkpoint` reads it, `generate` reads diffusion seq2seq runs")
    cfg = from_dict(Seq2SeqConfig, saved)
    tok = load_tokenizer(folder / "tokenizer")
    model = Denoiser(cfg.model)
    load_weights(folder, model, ema=ema)
    return model.to(device).eval(), tok, cfg
