"""`mambadiff bench generation`: records per (model, batch, length), prefill, and transformers' Mamba."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mambadiff.bench.generation import run_generation_benchmark
from mambadiff.cli import main


def test_records_cover_every_model_batch_and_length(tmp_path):
    out = run_generation_benchmark(("mamba2", "transformer"), batches=(1, 3), lengths=(16, 32), d_model=32,
                                   n_layers=1, prefill=64, threads=1, json_path=tmp_path / "g.json")
    keys = {(r["model"], r["batch"], r["length"]) for r in out["generation"]}
    assert keys == {(m, b, l) for m in ("mamba2", "transformer") for b in (1, 3) for l in (16, 32)}
    assert all(r["tokens_per_s"] > 0 and r["peak_mb"] >= 0 for r in out["generation"])
    assert {p["model"] for p in out["prefill"]} == {"mamba2", "transformer"}
    assert json.loads((tmp_path / "g.json").read_text())["threads"] == 1


def test_transformers_peer_gives_the_same_greedy_tokens():
    pytest.importorskip("transformers")
    out = run_generation_benchmark(("mamba",), batches=(1,), lengths=(8,), d_model=32, n_layers=2, prefill=0,
                                   threads=1, hf=True, hf_prompt=32)
    assert out["peer"][0]["same_greedy_tokens"] is True and out["peer"][0]["speedup"] > 0


def test_cli_refuses_unknown_models_and_bad_lists():
    out = CliRunner().invoke(main, ["bench", "generation", "--model", "gru"])
    assert out.exit_code != 0 and "unknown ['gru']" in out.output
    out = CliRunner().invoke(main, ["bench", "generation", "--batch", "0"])
    assert out.exit_code != 0 and "--batch" in out.output
