"""`bench layers` at equal parameters: bidirectional stacks sized to one model's count."""
from __future__ import annotations

import pytest
import torch

from mambadiff.bench.layers import matched_stack_configs, run_layers_benchmark


def test_matched_stacks_are_within_five_percent():
    models = ("mamba2", "s4d", "s4", "h3", "transformer")
    configs = matched_stack_configs(models, "mamba2", d_model=32, n_layers=2, bidirectional=True, max_len=64)
    assert all(cfg.bidirectional for cfg in configs.values())
    assert configs["mamba2"].d_model == 32 and configs["transformer"].d_model == 32  # reference; ff_dim knob
    records = run_layers_benchmark(models, train_cases=((1, 40),), infer_cases=(), d_model=32, n_layers=2,
                                   repeats=1, warmup=0, bidirectional=True, match="mamba2", threads=1)
    params = {r["model"]: r["params"] for r in records}
    for model in models:
        assert abs(params[model] - params["mamba2"]) <= 0.05 * params["mamba2"], (model, params)
    assert all(r["bidirectional"] and r["threads"] == 1 and "vs_reference" in r for r in records)
    assert torch.get_num_threads() >= 1


def test_match_must_be_timed():
    with pytest.raises(ValueError, match="match"):
        run_layers_benchmark(("s4d",), train_cases=((1, 8),), infer_cases=(), match="mamba2")
