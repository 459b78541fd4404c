"""`mambadiff bench quality` on a tiny budget: rows, the copy-source row, the repeat rate, errors."""
import json

import pytest
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.metrics.generation import repeat_rates

TINY = ("data.builtin_train=200 data.builtin_valid=20 data.builtin_test=20 data.vocab_size=200 "
        "data.seq_len=32 data.eval_size=0 model.emb_dim=16 model.backbone.d_model=16 model.backbone.n_layers=1 model.backbone.attn_layers=[] "
        "train.batch_size=8 diffusion.steps=50 sample.gaussian.steps=3 sample.masked.steps=3 sample.batch_size=10")


def test_bench_quality_tiny_budget(tmp_path):
    """Two recipes side by side (--jobs 2, a process each): both rows, in recipe order."""
    out = tmp_path / "q.json"
    recipes = [f"demo diffusion.process=masked {TINY}", f"demo {TINY} model.backbone.name=transformer"]
    res = CliRunner().invoke(main, ["bench", "quality", "--recipe", recipes[0], "--recipe", recipes[1],
                                    "--minutes", "0.02", "--limit", "8", "--no-bertscore", "--jobs", "2",
                                    "--run-root", str(tmp_path / "runs"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert data["jobs"] == 2
    assert [r["recipe"] for r in rows] == [*recipes, "copy source", "references"]
    for r in rows[:2]:
        assert r["n"] == 8 and r["train_steps"] >= 1 and r["tokens_per_s"] > 0
        assert r["sample_s_per_1k"] > 0 and r["sentence_samples_per_s"] > 0
        assert 0 <= r["repeat_rate"] <= 1 and 0 <= r["bleu"] <= 1
        lines = (tmp_path / "runs" / f"recipe{rows.index(r)}" / "samples_valid.jsonl").read_text().splitlines()
        assert len(lines) == 8
        outputs = [json.loads(line)["recover"] for line in lines]
        assert r["repeat_rate"] == repeat_rates(outputs)["repeat_rate"]
        assert r["ngram_repeat_rate"] == repeat_rates(outputs)["ngram_repeat_rate"]
    copy, references = rows[-2:]
    assert references["bleu"] == pytest.approx(1.0) and references["n"] == 8
    assert copy["copy_rate"] == 1.0 and copy["n"] == 8
    assert "copy source" in res.output and "repeat_rate" in res.output


def test_bench_quality_bad_arguments():
    res = CliRunner().invoke(main, ["bench", "quality", "--minutes", "0", "--recipe", "demo"])
    assert res.exit_code != 0 and "--minutes" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["bench", "quality", "--minutes", "1", "--recipe", "no-such-config"])
    assert res.exit_code != 0 and "no-such-config" in res.output
