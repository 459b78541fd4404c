"""`mambadiff bench lm`: recipes trained for the same clock and scored on the whole validation split."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mambadiff.bench.common import BenchArgumentError
from mambadiff.bench.lm import run_lm_benchmark
from mambadiff.cli import main


def test_recipes_side_by_side_write_a_table_and_json(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 60, encoding="utf-8")
    common = f"data.train={text} data.block_size=16 model.backbone.d_model=16 model.backbone.n_layers=1 train.batch_size=4"
    rows = run_lm_benchmark([f"shakespeare-char {common}",
                             f"shakespeare-char {common} model.backbone.name=transformer model.backbone.n_heads=2"],
                            minutes=0.02, threads=1, json_path=tmp_path / "lm.json")
    assert [r["backbone"] for r in rows] == ["mamba2", "transformer"]
    for r in rows:
        assert r["steps"] > 0 and 0 < r["valid_loss"] < 10 and r["valid_bpb"] > 0 and r["tokens"] == 257
    saved = json.loads((tmp_path / "lm.json").read_text())
    assert saved["minutes"] == 0.02 and len(saved["rows"]) == 2
    assert "valid_bpb" in capsys.readouterr().out


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(BenchArgumentError, match="minutes"):
        run_lm_benchmark(["shakespeare-char"], minutes=0)
    out = CliRunner().invoke(main, ["bench", "lm", "--nanogpt", str(tmp_path), "--text", __file__])
    assert out.exit_code != 0 and "not a nanoGPT checkout" in out.output
