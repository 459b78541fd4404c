"""Loading a trained language model: from a run folder (its latest checkpoint), a checkpoint folder,
a folder written by ``CausalLM.save_pretrained`` with a ``tokenizer/`` beside it, or a Hugging Face
``MambaForCausalLM`` / ``Mamba2ForCausalLM`` folder or cached Hub id (``mambadiff.models.hf_mamba``)
with its ``tokenizer.json``."""
from __future__ import annotations

from pathlib import Path

from mambadiff.config import from_dict
from mambadiff.data.lm_tokenizers import LMTokenizer, PretrainedTokenizer, load_lm_tokenizer
from mambadiff.models.hf_mamba import is_hf_mamba_folder, load_hf_mamba, resolve_hf_folder
from mambadiff.models.lm import CausalLM
from mambadiff.train.checkpoint import load_weights, read_json, resolve_checkpoint

from .config import LMConfig

__all__ = ["load_lm"]


def load_lm(path: str | Path, ema: bool = True, device: str = "cpu") -> tuple[CausalLM, LMTokenizer, LMConfig | None]:
    """(model in eval mode, tokenizer, the run's config or None for a saved or published model)."""
    path = Path(path)
    if not path.is_dir() and str(path).count("/") == 1 and not str(path).startswith("."):
        path = resolve_hf_folder(path, None)  # a Hub id: the local cache only, nothing is downloaded
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder (a language-model run, checkpoint or saved model)")
    if is_hf_mamba_folder(path):
        return load_hf_mamba(path, device=device), PretrainedTokenizer.from_folder(path), None
    saved = read_json(path / "config.json") if (path / "config.json").is_file() else {}
    if "vocab_size" in saved and "data" not in saved:  # CausalLM.save_pretrained
        model = CausalLM.from_pretrained(path)
        return model.to(device).eval(), load_lm_tokenizer(path / "tokenizer"), None
    folder = resolve_checkpoint(path)
    data = read_json(folder / "config.json")
    if "data" not in data or "train" not in data.get("data", {}) or "block_size" not in data["data"]:
        raise ValueError(f"{folder / 'config.json'}: not a language-model run (lm train writes data.block_size); "
                         f"diffusion runs are read by 'mambadiff generate', classifiers by 'mambadiff classify eval'")
    cfg = from_dict(LMConfig, data)
    model = CausalLM(cfg.model)
    load_weights(folder, model, ema=ema)
    return model.to(device).eval(), load_lm_tokenizer(folder / "tokenizer"), cfg
