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


TASK_OVERRIDES = ["data.listops.n_train=32", "data.listops.n_valid=8", "data.listops.n_test=8",
                  "data.listops.max_depth=4", "data.listops.max_args=4", "data.listops.min_length=5",
                  "data.listops.max_length=60", "data.listops.train_min_length=0", "data.listops.train_max_length=0",
                  "model.backbone.d_model=16", "train.steps=2", "train.batch_size=8",
                  "train.warmup_steps=1", "train.eval_every=0", "train.log_every=1", "train.device=cpu",
                  "train.progress=false"]


def test_task_benchmark_equal_params_and_budget(tmp_path, capsys):
    from mambadiff.bench.classify import default_task_models, run_task_benchmark
    assert {"mamba", "mamba2", "s4d", "transformer"} <= set(default_task_models())
    out = tmp_path / "task.json"
    records = run_task_benchmark("lra-listops", ("mamba", "transformer"), minutes=1.0,
                                 overrides=[f"data.listops.root={tmp_path / 'data'}", *TASK_OVERRIDES],
                                 out_dir=tmp_path / "runs", json_path=out, infer_examples=5, infer_batch=2,
                                 verbose=False)
    assert [r["model"] for r in records] == ["mamba", "transformer"]  # knobs d_model and ff_dim
    target = records[0]["non_embedding_params"]
    for r in records:
        assert "error" not in r, r
        assert 0 <= r["accuracy"] <= 1 and r["accuracy_split"] == "test" and r["n_eval"] == 8
        assert r["steps"] == 2 and 0 < r["train_minutes"] < 1 and r["tokens_per_s"] > 0
        logged = [json.loads(x)["tokens_per_s"] for x in (tmp_path / "runs" / r["model"] / "metrics.jsonl")
                  .read_text().splitlines() if json.loads(x)["split"] == "train"]
        assert len(logged) == 2 and r["step_tokens_per_s"] == pytest.approx(sum(logged) / 2)  # median of 2
        assert r["infer_ms_per_example"] > 0 and r["infer_examples"] == 5 and r["minutes_budget"] == 1.0
        assert abs(r["non_embedding_params"] - target) <= 0.10 * target
        assert abs(r["match_rel_error"]) <= 0.10 and r["threads"] == 1
        assert (tmp_path / "runs" / r["model"] / "final_metrics.json").is_file()
    assert json.loads(out.read_text()) == records
    assert "infer_ms_per_example" in capsys.readouterr().out


def test_task_cli(tmp_path, run_cli):
    out = tmp_path / "t.json"
    args = ["bench", "classify", "--task", "lra-listops", "--model", "mamba2", "--minutes", "1",
            "--out-dir", str(tmp_path / "runs"), "--infer-examples", "3", "--batch", "3", "--json", str(out),
            "--override", f"data.listops.root={tmp_path / 'data'}"]
    for o in TASK_OVERRIDES:
        args += ["--override", o]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    (rec,) = json.loads(out.read_text())
    assert rec["model"] == "mamba2" and rec["infer_examples"] == 3 and 0 <= rec["accuracy"] <= 1
    r = run_cli("bench", "classify", "--task", "lra-listops", "--override", "train.nope=1",
                "--out-dir", str(tmp_path / "r2"))
    assert r.exit_code != 0 and "nope" in r.output and "Traceback" not in r.output
