"""LRA through the classification task: the shipped configs, a tiny ListOps train + eval (a given LRA
file and generated splits), byte-level text, and clean CLI errors on a malformed LRA file."""
import gzip
import json
import random

import torch
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.config import load_config
from mambadiff.data.lra import ListOpsRules, ListOpsTokenizer, generate_listops, write_listops_tsv
from mambadiff.tasks.classify import ClassifyConfig, load_classifier, load_eval_data, train_classifier

SMALL_RULES = ["data.listops.max_depth=4", "data.listops.max_args=4", "data.listops.min_length=5",
               "data.listops.max_length=60", "data.listops.train_min_length=3", "data.listops.train_max_length=20"]
TINY = ["model.backbone.d_model=16", "train.steps=3", "train.batch_size=8", "train.warmup_steps=1",
        "train.log_every=1", "train.eval_every=0", "train.progress=false", "train.device=cpu",
        "train.max_minutes=0", "data.eval_batch_size=16"]


def test_shipped_configs_load():
    listops = load_config(ClassifyConfig, "lra-listops")
    assert listops.data.tokenizer == "listops" and listops.data.max_len == 2000 and listops.data.listops.generate
    assert (listops.data.listops.n_train, listops.data.listops.n_valid, listops.data.listops.n_test) == (60000, 2000, 2000)
    assert (listops.data.listops.train_min_length, listops.data.listops.train_max_length) == (50, 600)
    text = load_config(ClassifyConfig, "lra-text")
    assert text.data.tokenizer == "bytes" and text.data.max_len == 4096 and not text.data.clean.enabled
    assert listops.train.max_minutes == text.train.max_minutes == 60


def listops_file(path, n=64, seed=0):
    rules = ListOpsRules(max_depth=4, max_args=4, min_length=5, max_length=60)
    write_listops_tsv(path, generate_listops(n, seed=seed, rules=rules))
    return path


def test_listops_train_and_eval_cli(tmp_path):
    data = listops_file(tmp_path / "listops.tsv")
    run = tmp_path / "run"
    cfg = load_config(ClassifyConfig, "lra-listops", [f"data.train={data}", f"run_dir={run}",
                                                      "data.split=[0.75,0.125,0.125]", *TINY])
    result, model, tok, metrics = train_classifier(cfg, progress=False, verbose=False)
    assert result.step == 3 and isinstance(tok, ListOpsTokenizer)
    assert metrics["valid"]["n"] == 8 and metrics["test"]["n"] == 8 and len(metrics["label_names"]) == 10
    assert model.embedding.num_embeddings == 16
    # the saved run reloads with its fixed tokenizer; ids are the bare tokens (no [CLS]/[SEP])
    loaded, tok2, cfg2 = load_classifier(run)
    ds = load_eval_data(cfg2, tok2, str(data), verbose=False)
    first = data.read_text().splitlines()[1].split("\t")[0]
    assert ds.token_ids[0] == ListOpsTokenizer().encode(first) and len(ds) == 64
    out = tmp_path / "eval.json"
    r = CliRunner().invoke(main, ["classify", "eval", "--checkpoint", str(run), "--data", str(data), "--json", str(out)])
    assert r.exit_code == 0, r.output
    saved = json.loads(out.read_text())
    assert saved["n"] == 64 and 0 <= saved["accuracy"] <= 1 and len(saved["confusion_matrix"]) == 10
    assert sum(map(sum, saved["confusion_matrix"])) == 64
    # a malformed LRA file: one line naming file, line and field, no traceback
    bad = tmp_path / "bad.tsv"
    bad.write_text("Source\tTarget\n( ( [MAX 1 ) ] )\t1\n( ( [MIN 3 ) ] )\t12\n")
    r = CliRunner().invoke(main, ["classify", "eval", "--checkpoint", str(run), "--data", str(bad)])
    assert r.exit_code != 0 and f"{bad}, line 3, field 'Target': expected an integer 0-9" in r.output
    assert "Traceback" not in r.output


def test_listops_generated_when_absent(tmp_path):
    root = tmp_path / "data"
    args = ["classify", "train", "--config", "lra-listops", f"run_dir={tmp_path / 'run'}", f"data.listops.root={root}",
            "data.listops.n_train=48", "data.listops.n_valid=8", "data.listops.n_test=8", *SMALL_RULES, *TINY]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    folder = root / "listops-depth4-args4-len5-60-seed0-train48-valid8-test8-trainlen3-20"
    assert f"generated ListOps splits in {folder}" in r.output and "test: accuracy" in r.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert (saved["train"], saved["valid"], saved["test"]) == tuple(str(folder / f"{s}.tsv") for s in ("train", "valid", "test"))
    metrics = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert metrics["valid"]["n"] == 8 and metrics["test"]["n"] == 8


def test_byte_level_text_train_and_eval(tmp_path):
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choices(["très bien ☺", "superbe"] if y else ["mauvais", "nul ☹"], k=30)),
             "label": y, "id": i} for i, y in enumerate([0, 1] * 24)]
    path = tmp_path / "reviews.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    run = tmp_path / "run"
    cfg = load_config(ClassifyConfig, "lra-text", [f"data.train={path}", "data.test=null", f"run_dir={run}",
                                                   "data.max_len=64", "data.split=[0.75,0.125,0.125]", *TINY])
    _, model, tok, metrics = train_classifier(cfg, progress=False, verbose=False)
    assert model.embedding.num_embeddings == 257 and metrics["test"]["n"] == 6
    loaded, tok2, cfg2 = load_classifier(run)
    ds = load_eval_data(cfg2, tok2, str(path), verbose=False)
    assert ds.lengths == [64] * 48  # every text is longer than 64 bytes: cut at L, nothing added
    assert ds.token_ids[0] == list(rows[0]["text"].encode("utf-8")[:64])
    r = CliRunner().invoke(main, ["classify", "eval", "--checkpoint", str(run), "--data", str(path)])
    assert r.exit_code == 0 and "accuracy" in r.output, r.output


def test_s4_kernel_covers_the_data_length(tmp_path):
    from mambadiff.tasks.classify import build_classifier
    cfg = load_config(ClassifyConfig, "lra-listops", ["model.backbone.name=s4", "param_match.enabled=false",
                                                      "model.backbone.d_model=16"])
    assert cfg.data.max_len == 2000 and cfg.model.backbone.s4.l_max < 2000
    model, _ = build_classifier(cfg, vocab_size=16, num_classes=10)
    assert cfg.model.backbone.s4.l_max == 2000 and model.backbone.mixers[0].forward_layer.config.l_max == 2000
    logits = model(torch.randint(0, 16, (1, 600)))  # longer than the backbone's default length
    assert logits.shape == (1, 10)
