"""An autoregressive paraphraser recipe in `mambadiff bench quality`: trained and decoded as
`mambadiff ar train` / `mambadiff ar generate` do, its row in the diffusion recipes' columns."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .common import split_spec

__all__ = ["is_ar_recipe", "run_ar_recipe"]


def is_ar_recipe(spec: str) -> bool:
    """Whether the recipe's config is an autoregressive paraphraser's (it has a ``decode`` section)."""
    from mambadiff.tasks.ar.config import is_ar_config
    return is_ar_config(split_spec(spec)[0])


def run_ar_recipe(spec: str, run_dir: Path, minutes: float, threads: int, split: str, limit: int,
                  progress: bool = False) -> tuple[dict, list[dict]]:
    """Train and decode one autoregressive recipe; returns (its row without the scores, the records)."""
    import dataclasses

    from mambadiff.config import load_config
    from mambadiff.data.seq2seq import load_seq2seq_split
    from mambadiff.tasks.ar import ARConfig, paraphrase_dataset, train_ar
    from mambadiff.tasks.seq2seq import prepare_data_folder

    name, overrides = split_spec(spec)
    forced = [f"run_dir={run_dir}", f"train.max_minutes={minutes}", "train.steps=100000000",
              f"train.num_threads={threads}", f"train.progress={str(progress).lower()}"]
    cfg = load_config(ARConfig, name, [*overrides, *forced])
    result, model, tok = train_ar(cfg, progress=progress, verbose=progress)
    cfg = load_config(ARConfig, run_dir / "config.json")
    data = load_seq2seq_split(prepare_data_folder(cfg), split, tok, cfg.data.seq_len, layout="compact",
                              on_overflow=cfg.data.on_overflow, limit=limit or None)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    settings = dataclasses.replace(cfg.decode, limit=0)
    records = [r for batch in paraphrase_dataset(model.eval(), tok, data, settings, cfg.data.seq_len) for r in batch]
    seconds = time.perf_counter() - t0
    n = len(records)
    row = {"recipe": spec, "train_steps": result.step, "tokens_per_s": result.tokens_per_s,
           "train_seconds": result.seconds, "sample_seconds": seconds, "n": n, "process": "autoregressive",
           "beam": cfg.decode.beam, "sample_s_per_1k": 1000 * seconds / max(n, 1),
           "sentence_samples_per_s": n / max(seconds, 1e-9)}
    return row, records
