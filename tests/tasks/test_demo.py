"""`mambadiff demo` end to end on a short budget: metrics JSON, copy baseline, no collapse to padding."""
import json

from click.testing import CliRunner

from mambadiff.cli import main


def test_demo_runs_and_outputs_do_not_collapse(tmp_path):
    out = tmp_path / "demo.json"
    r = CliRunner().invoke(main, ["demo", "--run-dir", str(tmp_path / "run"), "--json", str(out),
                                  "train.steps=250", "train.max_minutes=0", "train.eval_every=0",
                                  "train.progress=false", "data.builtin_train=3000", "sample.limit=64"])
    assert r.exit_code == 0, r.output
    assert "copy source" in r.output and "BLEU" in r.output
    res = json.loads(out.read_text())
    assert res["train_steps"] == 250 and res["n_examples"] == 64
    for key in ("bleu", "rouge_l", "dist1", "ibleu", "copy_rate"):
        assert key in res["model"] and key in res["copy_source"]
    assert res["copy_source"]["copy_rate"] == 1.0 and res["copy_source"]["bleu_src"] == 1.0
    rows = [json.loads(l) for l in (tmp_path / "run" / "samples_test.jsonl").read_text().splitlines()]
    assert len(rows) == 64
    # never all padding: the decoded outputs keep real words, about as long as the references
    lengths = [len(x["recover"].split()) for x in rows]
    assert sum(n > 0 for n in lengths) >= 0.9 * len(rows)
    assert sum(lengths) / len(lengths) > 0.5 * sum(len(x["reference"].split()) for x in rows) / len(rows)
    # a second call reuses the finished model instead of refusing or retraining
    r2 = CliRunner().invoke(main, ["demo", "--run-dir", str(tmp_path / "run"), "train.steps=250",
                                   "train.progress=false", "data.builtin_train=3000", "sample.limit=8"])
    assert r2.exit_code == 0 and "already holds a finished demo model" in r2.output


def test_demo_trains_to_a_fixed_step_count_not_a_time_budget():
    from mambadiff.config import load_config
    from mambadiff.tasks.seq2seq import Seq2SeqConfig

    cfg = load_config(Seq2SeqConfig, "demo")
    # its quality must not depend on how fast or busy the machine is
    assert cfg.train.max_minutes == 0 and cfg.train.lr_decay_clock == "steps" and cfg.train.steps >= 2000
