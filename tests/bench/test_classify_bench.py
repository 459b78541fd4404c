"""Classifier inference benchmark on tiny sizes: well-formed records, matched sizes, JSON, CLI."""
import json

import pytest

from mambadiff.bench.classify import DEFAULT_MODELS, run_classify_benchmark

KEYS = {"model", "seq_len", "batch", "seconds", "tokens_per_s", "params", "non_embedding_params",
        "peak_mem_mb", "speedup_vs_transformer"}


def test_records_are_well_formed(tmp_path, capsys):
    out = tmp_path / "bench.json"
    records = run_classify_benchmark(DEFAULT_MODELS, seq_lens=(8, 16), batch=2, repeats=1, warmup=0,
                                     json_path=out, d_model=16, vocab_size=100)
    assert [(r["model"], r["seq_len"]) for r in records] == [(m, l) for m in DEFAULT_MODELS for l in (8, 16)]
    for r in records:
        assert KEYS <= set(r), r
        assert r["batch"] == 2 and r["seconds"] > 0 and r["peak_mem_mb"] >= 0
        assert r["tokens_per_s"] == pytest.approx(2 * r["seq_len"] / r["seconds"])
        assert r["params"] > r["non_embedding_params"] > 0
    ref = {r["seq_len"]: r for r in records if r["model"] == "transformer"}
    for r in records:
        assert r["speedup_vs_transformer"] == pytest.approx(ref[r["seq_len"]]["seconds"] / r["seconds"])
    target = next(r["non_embedding_params"] for r in records if r["model"] == "mamba")
    assert all(abs(r["non_embedding_params"] - target) <= 0.10 * target for r in records)
    assert json.loads(out.read_text()) == records
    table = capsys.readouterr().out
    assert "speedup_vs_transformer" in table and "lstm" in table


def test_cli(tmp_path, run_cli):
    out = tmp_path / "b.json"
    r = run_cli("bench", "classify", "--model", "mamba", "--model", "transformer",
                "--seq-lens", "8,32", "--batch", "1", "--repeats", "1", "--warmup", "0",
                "--d-model", "16", "--json", str(out))
    assert r.exit_code == 0, r.output
    recs = json.loads(out.read_text())
    assert {(x["model"], x["seq_len"]) for x in recs} == {("mamba", 8), ("mamba", 32), ("transformer", 8),
                                                          ("transformer", 32)}
    r = run_cli("bench", "classify", "--seq-lens", "8,x")
    assert r.exit_code != 0 and "expected comma-separated lengths" in r.output
