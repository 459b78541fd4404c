"""Loading a trained autoregressive paraphraser: (model, tokenizer, config) from a run or checkpoint folder."""
from __future__ import annotations

from pathlib import Path

from mambadiff.config import from_dict
from mambadiff.data.tokenizer import load_tokenizer
from mambadiff.models.lm import CausalLM
from mambadiff.train.checkpoint import load_weights, read_json, resolve_checkpoint

from .config import ARConfig

__all__ = ["load_ar_model"]


def load_ar_model(path: str | Path, ema: bool = True, device: str = "cpu"):
    """(model in eval mode, tokenizer, config) from a run folder (latest checkpoint) or a checkpoint folder."""
    folder = resolve_checkpoint(path)
    saved = read_json(folder / "config.json")
    if not isinstance(saved, dict) or "decode" not in saved:
        raise ValueError(f"{folder / 'config.json'}: not an autoregressive paraphraser run (no decode section); "
                         f"diffusion runs are read by 'mambadiff generate', language models by 'mambadiff lm'")
    cfg = from_dict(ARConfig, saved)
    model = CausalLM(cfg.model)
    load_weights(folder, model, ema=ema)
    return model.to(device).eval(), load_tokenizer(folder / "tokenizer"), cfg
