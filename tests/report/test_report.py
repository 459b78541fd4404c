"""`mambadiff report RUN_DIR` on small generated run folders (seq2seq and classification)."""
import json

import pytest

from mambadiff.metrics import evaluate_predictions
from mambadiff.metrics.io import atomic_write_json
from mambadiff.report import build_report, load_metrics_log

PNG = b"\x89PNG\r\n\x1a\n"


def _seq2seq_run(root, write_jsonl):
    root.mkdir()
    with open(root / "metrics.jsonl", "w", encoding="utf-8") as f:
        for s in range(10, 210, 10):
            f.write(json.dumps({"split": "train", "step": s, "loss": 5.0 / s ** 0.5, "mse": 2.0 / s, "nll": 3.0 / s ** 0.3,
                                "decoder_nll": 3.0 / s ** 0.3, "tT": 1e-3, "lr": 1e-4, "tokens_per_s": 1000.0 + s}) + "\n")
            if s % 100 == 0:
                f.write(json.dumps({"split": "eval", "step": s, "loss": 5.5 / s ** 0.5, "mse": 2.2 / s,
                                    "nll": 3.3 / s ** 0.3}) + "\n")
    rows = [("how do i learn python", "best way to learn python"), ("why is the sky blue", "what makes the sky blue")]
    for step, outs in ((100, ["how do i python", "why sky blue"]), (200, ["best way to learn python", "why is the sky blue"])):
        p = write_jsonl(root / f"gen_{step}.jsonl",
                        [{"source": s, "reference": r, "recover": o} for (s, r), o in zip(rows, outs)])
        atomic_write_json(root / "eval" / f"step_{step:06d}.json", evaluate_predictions([str(p)], bertscore=False, step=step))
    (root / "samples.jsonl").write_text((root / "gen_200.jsonl").read_text(encoding="utf-8").replace("|", "/"),
                                        encoding="utf-8")
    return root


def test_seq2seq_report(tmp_path, run_cli, write_jsonl):
    run = _seq2seq_run(tmp_path / "run", write_jsonl)
    r = run_cli("report", str(run))
    assert r.exit_code == 0, r.output
    out = run / "report"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["eval_metrics.png", "lr_throughput.png", "report.md", "training_curves.png"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    md = (out / "report.md").read_text(encoding="utf-8")
    for text in ("## Training", "![training curves](training_curves.png)", "## Generation metrics per checkpoint",
                 "copy source (baseline)", "## Samples", "best way to learn python", "| loss"):
        assert text in md
    assert "## Inference time" not in md


def test_classification_report_with_bench(tmp_path, write_jsonl):
    run = tmp_path / "cls"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", [{"split": sp, "step": s, "loss": 1.0 / s, "accuracy": 0.5 + s / 1000}
                                        for s in range(10, 110, 10) for sp in ("train", "eval")])
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([{"model": m, "seq_len": n, "seconds": c * n ** e, "batch": 4}
                                 for m, c, e in (("mamba", 1e-4, 1), ("transformer", 1e-6, 2)) for n in (64, 128, 256)]))
    rep = build_report(run, out_dir=tmp_path / "out", bench=bench)
    assert sorted(p.name for p in rep.plots) == ["accuracy.png", "bench_inference_time.png", "training_curves.png"]
    md = rep.markdown.read_text(encoding="utf-8")
    assert "| accuracy" in md and "0.6 (step 100)" in md  # best eval accuracy
    assert "## Inference time (`bench.json`)" in md and "| transformer" in md
    # found by name in the run folder too
    bench.rename(run / "bench_classify.json")
    assert "bench_inference_time.png" in [p.name for p in build_report(run).plots]


def test_torn_last_line_is_noted_bad_lines_are_errors(tmp_path, run_cli):
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps({"split": "train", "step": 1, "loss": 1.0}) + "\n"
    (run / "metrics.jsonl").write_text(good + '{"split": "tr', encoding="utf-8")
    log = load_metrics_log(run / "metrics.jsonl")
    assert len(log.records) == 1 and "torn last line" in log.notes[0]
    assert "torn last line" in build_report(run).markdown.read_text(encoding="utf-8")
    (run / "metrics.jsonl").write_text(good + '{"split": "tr\n' + good, encoding="utf-8")
    r = run_cli("report", str(run))
    assert r.exit_code == 1 and "metrics.jsonl, line 2: invalid JSON" in r.output and "Traceback" not in r.output
    (run / "metrics.jsonl").write_text(json.dumps({"split": "test", "step": 1}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: field 'split'"):
        build_report(run)


def test_empty_run_folder_is_a_clear_error(tmp_path, run_cli):
    r = run_cli("report", str(tmp_path))
    assert r.exit_code == 1 and "has none of metrics.jsonl" in r.output
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "step_5.json").write_text("{}")
    r = run_cli("report", str(tmp_path))
    assert r.exit_code == 1 and "step_5.json" in r.output and "schema" in r.output
