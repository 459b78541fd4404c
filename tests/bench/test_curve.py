"""`mambadiff bench curve` on two tiny runs of the built-in corpus (checkpoints at steps 2 and 4): rows
per checkpoint against the training clock, BLEU as `mambadiff evaluate` scores the same outputs, reuse
of the score files, the plot, checkpoints without a clock, `mambadiff report`'s minutes plot, bad input."""
import json
import shutil

import pytest

from mambadiff.config import load_config

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["data.builtin_train=200", "data.builtin_valid=20", "data.builtin_test=20", "data.vocab_size=200",
        "data.seq_len=32", "data.eval_size=0", "model.emb_dim=16", "model.backbone.d_model=32",
        "model.backbone.n_layers=1", "model.backbone.attn_layers=[]", "model.backbone.ff_dim=64",
        "train.batch_size=8", "train.log_every=1", "train.progress=false", "train.steps=4", "train.save_every=2",
        "train.keep_checkpoints=0", "train.max_minutes=0", "diffusion.steps=50", "sample.gaussian.steps=3", "sample.masked.steps=3",
        "sample.batch_size=4"]
LIMIT = 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two run folders (the demo recipe's Mamba-2 denoiser and a Transformer one), checkpoints at steps 2 and 4."""
    from mambadiff.tasks.seq2seq import Seq2SeqConfig, train_seq2seq
    root = tmp_path_factory.mktemp("curve")
    out = []
    for name, extra in (("mamba2", []), ("transformer", ["model.backbone.name=transformer", "model.backbone.n_heads=2"])):
        cfg = load_config(Seq2SeqConfig, "demo", [f"run_dir={root / name}", *TINY, *extra])
        train_seq2seq(cfg, progress=False)
        out.append(root / name)
    return out


def _curve(run_cli, tmp_path, runs, *extra):
    out = tmp_path / "curve.json"
    res = run_cli("bench", "curve", *runs, "--data", runs[0] / "data" / "valid.jsonl", "--limit", LIMIT,
                  "--no-bertscore", "--json", out, "--plot", tmp_path / "curve.png", *extra)
    assert res.exit_code == 0, res.output
    return res, json.loads(out.read_text(encoding="utf-8"))


def _clock(run, step):
    return json.loads((run / "checkpoints" / f"step_{step:08d}" / "trainer_state.json").read_text())["train_seconds"]


def test_curve_rows_match_evaluate_and_are_reused(runs, tmp_path, run_cli):
    res, data = _curve(run_cli, tmp_path, runs, "--label", "mamba", "--label", "tf")
    rows = data["rows"]
    assert [(r["run"], r["step"]) for r in rows] == [("mamba", 2), ("mamba", 4), ("tf", 2), ("tf", 4)]
    for run, label in zip(runs, ("mamba", "tf")):
        mine = [r for r in rows if r["run"] == label]
        assert mine[0]["train_seconds"] < mine[1]["train_seconds"]
        for r in mine:
            assert r["train_seconds"] == _clock(run, r["step"]) and r["minutes"] == pytest.approx(r["train_seconds"] / 60)
            assert r["n"] == LIMIT
            scored = json.loads((run / "eval" / f"step_{r['step']:08d}.json").read_text())
            assert scored["schema"] == "mambadiff.evaluate/1" and scored["step"] == r["step"]
            assert scored["limit"] == LIMIT and scored["data"].endswith("valid.jsonl")
            assert scored["train_seconds"] == r["train_seconds"]
            assert scored["curve"]["settings"]["steps"] == 3  # the checkpoint's own sample settings
            ev = run_cli("evaluate", "-p", r["predictions"], "--no-bertscore", "--json", tmp_path / "ev.json")
            assert ev.exit_code == 0, ev.output
            model = json.loads((tmp_path / "ev.json").read_text())["model"]
            for key in ("bleu", "rouge_l", "ibleu", "repeat_rate", "len_words"):
                assert abs(model[key] - r[key]) <= 1e-9, key
    assert [c["run"] for c in data["copy_source"]] == ["mamba", "tf"]
    assert all(c["copy_rate"] == 1.0 and c["n"] == LIMIT for c in data["copy_source"])
    assert "copy source (mamba)" in res.stdout and "rouge_l" in res.stdout and "repeat_rate" in res.stdout
    png = (tmp_path / "curve.png").read_bytes()
    assert png[:8] == PNG and len(png) > 10_000

    files = sorted(p for run in runs for p in (run / "eval").iterdir())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    res2, again = _curve(run_cli, tmp_path, runs, "--label", "mamba", "--label", "tf")
    assert again["rows"] == rows and res2.stderr.count("reusing") == 4 and "sampling" not in res2.stderr
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before

    preds = sorted((runs[0] / "eval").glob("*.jsonl"))
    kept = {p: p.stat().st_mtime_ns for p in preds}
    res3, scored = _curve(run_cli, tmp_path, runs[:1], "--bertscore")  # the same outputs, scored again
    assert res3.stderr.count("again, with BERTScore") == 2 and "sampling" not in res3.stderr
    assert {p: p.stat().st_mtime_ns for p in preds} == kept
    assert all(0 < r["bertscore_f1"] <= 1 and r["bleu"] == old["bleu"] for r, old in zip(scored["rows"], rows))
    res4, _ = _curve(run_cli, tmp_path, runs[:1])  # BERTScore not asked for: the BERTScore files serve
    assert res4.stderr.count("reusing") == 2

    _, reseeded = _curve(run_cli, tmp_path, runs[:1], "--seed", "7", "--steps", "2")  # other settings: sampled again
    scored = json.loads((runs[0] / "eval" / "step_00000004.json").read_text())
    assert scored["curve"]["settings"]["seed"] == 7 and scored["curve"]["settings"]["steps"] == 2
    assert [r["run"] for r in reseeded["rows"]] == ["mamba2", "mamba2"]  # default label: the folder's name

    rep = run_cli("report", runs[0], "--out", tmp_path / "report")
    assert rep.exit_code == 0, rep.output
    assert (tmp_path / "report" / "quality_vs_minutes.png").read_bytes()[:8] == PNG
    assert "quality_vs_minutes.png" in (tmp_path / "report" / "report.md").read_text()


def test_checkpoints_without_a_clock(runs, tmp_path, run_cli, caplog):
    old = tmp_path / "old"
    shutil.copytree(runs[0], old, ignore=shutil.ignore_patterns("eval", "report"))
    state_path = old / "checkpoints" / "step_00000002" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    del state["train_seconds"]
    state_path.write_text(json.dumps(state))
    res, data = _curve(run_cli, tmp_path, [old])
    assert [(r["step"], r["minutes"] is None) for r in data["rows"]] == [(2, True), (4, False)]
    # one line per run: on stderr, or through logging where it is set up (as under pytest)
    seen = res.stderr.splitlines() + [r.getMessage() for r in caplog.records if r.name == "mambadiff.bench.curve"]
    warnings = [line for line in seen if "no train_seconds" in line]
    assert len(warnings) == 1 and "(step 2)" in warnings[0] and str(old) in warnings[0]
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG
    shutil.rmtree(old / "checkpoints" / "step_00000004")  # pruned since it was scored: its row stays
    res, pruned = _curve(run_cli, tmp_path, [old])
    assert pruned["rows"] == data["rows"] and "sampling" not in res.stderr


def test_bad_input_is_a_clean_error(runs, tmp_path, run_cli, assert_clean_error, write_jsonl):
    valid = runs[0] / "data" / "valid.jsonl"

    def curve(*args):
        return run_cli("bench", "curve", *args, "--no-bertscore")

    assert_clean_error(curve(tmp_path / "nope", "--data", valid), str(tmp_path / "nope"), "no such run folder")
    (tmp_path / "empty_run").mkdir()
    assert_clean_error(curve(tmp_path / "empty_run", "--data", valid), str(tmp_path / "empty_run"), "no checkpoints")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"src": "how do i learn python", "trg": "best way to learn python"},
                                               {"src": "why is the sky blue", "trg": 3}])
    assert_clean_error(curve(runs[0], "--data", bad), str(bad), "line 2", "field 'trg'")
    assert_clean_error(curve(runs[0], "--data", tmp_path / "missing.jsonl"), str(tmp_path / "missing.jsonl"), "not found")
    assert_clean_error(curve(*runs, "--data", valid, "--label", "one"), "--label", "one per run")
    assert not (tmp_path / "empty_run" / "eval").exists()
