"""Classification task: tiny end-to-end training with every backbone (shared loop), checkpoint reload,
eval CLI, streaming == parallel logits, parameter matching, clean errors on bad data."""
import json
import random

import pytest
import torch
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.config import load_config
from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.classifier import ClassifierConfig, SequenceClassifier
from mambadiff.models.layer_options import Mamba2Options, MambaOptions, S4DOptions
from mambadiff.tasks.classify import (BACKBONE_NAMES, ClassifyConfig, classify_streaming, load_classifier,
                                      match_backbone, non_embedding_parameters, parameter_counts, predict,
                                      load_eval_data, train_classifier)

POS = "good great love excellent happy wonderful best nice".split()
NEG = "bad awful hate terrible sad horrible worst poor".split()
FILLER = "the movie was and it a really film plot actors i this".split()


def write_csv(path, n=96, seed=0):
    rng = random.Random(seed)
    lines = ["text,label"]
    for i in range(n):
        y = i % 2
        words = rng.choices(FILLER, k=rng.randint(2, 10)) + rng.choices(POS if y else NEG, k=2)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{'pos' if y else 'neg'}")
    path.write_text("\n".join(lines) + "\n")
    return path


TINY = ["data.split=[0.75,0.125,0.125]", "data.tokenizer=trained", "data.vocab_size=100", "data.max_len=16",
        "model.backbone.d_model=16", "model.backbone.n_heads=2", "train.batch_size=8", "train.warmup_steps=1",
        "train.log_every=1", "train.progress=false"]


def tiny_cfg(tmp_path, run, backbone="mamba", steps=3, extra=()):
    data = write_csv(tmp_path / "train.csv")
    return load_config(ClassifyConfig, None, [f"data.train={data}", f"run_dir={tmp_path / run}",
                                              f"model.backbone.name={backbone}", f"train.steps={steps}",
                                              "train.device=cpu",  # CPU on GPU machines too: the
                                              *TINY, *extra])     # checks compare with CPU reloads


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_train_every_backbone_end_to_end(tmp_path, backbone):
    cfg = tiny_cfg(tmp_path, backbone, backbone)
    result, model, tok, metrics = train_classifier(cfg, progress=False, verbose=False)
    assert result.step == 3 and result.checkpoint.exists()
    for name in ("config.json", "model.safetensors", "tokenizer"):
        assert (result.checkpoint / name).exists()
    log = [json.loads(l) for l in (tmp_path / backbone / "metrics.jsonl").read_text().splitlines()]
    ev = [r for r in log if r["split"] == "eval"]
    assert ev and {"accuracy", "macro_f1", "loss"} <= set(ev[-1])
    assert 0 <= ev[-1]["accuracy"] <= 1 and ev[-1]["loss"] > 0
    assert {r["step"] for r in log if r["split"] == "train"} == {1, 2, 3}
    # final metrics: valid (12) and test (12) examples carved from the 96 rows, stratified
    saved = json.loads((tmp_path / backbone / "final_metrics.json").read_text())
    assert saved["valid"]["n"] == 12 and saved["test"]["n"] == 12
    assert sum(map(sum, saved["test"]["confusion_matrix"])) == 12
    assert saved["parameters"] == parameter_counts(model)
    # the checkpoint reloads to the same classifier
    loaded, tok2, cfg2 = load_classifier(tmp_path / backbone)
    assert cfg2.model.backbone == model.cfg.backbone and cfg2.data.label_names == ["neg", "pos"]
    ds = load_eval_data(cfg2, tok2, str(tmp_path / "train.csv"), verbose=False)
    a, labels = predict(model.eval(), ds)
    b, _ = predict(loaded, ds)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert labels.tolist() == [i % 2 for i in range(96)]


def test_training_learns_and_eval_cli(tmp_path):
    cfg = tiny_cfg(tmp_path, "run", "mamba", steps=30, extra=["train.lr=0.01", "model.dropout=0.0"])
    _, _, _, metrics = train_classifier(cfg, progress=False, verbose=False)
    assert metrics["valid"]["accuracy"] >= 0.75  # separable toy data; chance is 0.5
    out = tmp_path / "eval.json"
    r = CliRunner().invoke(main, ["classify", "eval", "--checkpoint", str(tmp_path / "run"),
                                  "--data", str(tmp_path / "train.csv"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "macro-F1" in r.output and "pred neg" in r.output and "true pos" in r.output
    assert "non-embedding" in r.output
    data = json.loads(out.read_text())
    assert data["n"] == 96 and len(data["confusion_matrix"]) == 2
    assert data["accuracy"] == pytest.approx(sum(data["confusion_matrix"][i][i] for i in range(2)) / 96)
    assert f"accuracy {data['accuracy']:.4f}" in r.output


def test_resume_continues_the_run(tmp_path):
    train_classifier(tiny_cfg(tmp_path, "run", "s4d", steps=2), progress=False, verbose=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train_classifier(tiny_cfg(tmp_path, "run", "s4d", steps=4), progress=False, verbose=False)
    result, _, _, _ = train_classifier(tiny_cfg(tmp_path, "run", "s4d", steps=4), resume=True, progress=False,
                                       verbose=False)
    assert result.step == 4


def _model(name, bidirectional=False, d=16, **backbone):
    torch.manual_seed(0)
    bb = BackboneConfig(name=name, d_model=d, n_layers=2, n_heads=2, bidirectional=bidirectional,
                        mamba=MambaOptions(d_state=8), mamba2=Mamba2Options(d_state=8, headdim=8),
                        s4d=S4DOptions(d_state=8), **backbone)
    return SequenceClassifier(ClassifierConfig(vocab_size=50, num_classes=3, backbone=bb))


@pytest.mark.parametrize("name,mlp_dim", [("mamba", 0), ("mamba2", 0), ("s4d", 0), ("mamba2", 12)])
def test_streaming_equals_parallel(name, mlp_dim):
    model = _model(name, mlp_dim=mlp_dim).double().eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (3, 23), generator=g)  # (b, l)
    lengths = torch.tensor([23, 9, 1])
    mask = torch.arange(23)[None] < lengths[:, None]  # (b, l) right-padded
    ids = ids.masked_fill(~mask, 0)
    with torch.no_grad():
        parallel = model(ids, mask)  # (b, c)
        parallel_full = model(ids)
    torch.testing.assert_close(classify_streaming(model, ids, mask), parallel, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(classify_streaming(model, ids), parallel_full, rtol=1e-10, atol=1e-12)
    assert model.training is False


@pytest.mark.parametrize("name,bidirectional", [("transformer", False), ("lstm", False), ("mamba", True)])
def test_streaming_refuses_other_backbones(name, bidirectional):
    model = _model(name, bidirectional)
    with pytest.raises(ValueError, match="unidirectional state-space backbone"):
        classify_streaming(model, torch.zeros(1, 4, dtype=torch.long))


def test_streaming_refuses_a_hybrid_with_attention_layers():
    with pytest.raises(ValueError, match="unidirectional state-space backbone"):
        classify_streaming(_model("mamba2", attn_layers=[1]), torch.zeros(1, 4, dtype=torch.long))


def test_streaming_rejects_left_padding():
    with pytest.raises(ValueError, match="right-padded"):
        classify_streaming(_model("mamba"), torch.zeros(1, 3, dtype=torch.long), torch.tensor([[False, True, True]]))


@pytest.mark.parametrize("d_model", [32, 128])
def test_parameter_matching_within_tolerance(d_model):
    ref = BackboneConfig(name="mamba", d_model=d_model, n_layers=2)
    target = non_embedding_parameters(ref, 2)
    for name in BACKBONE_NAMES:
        cfg, report = match_backbone(name, ref, 2)
        assert cfg.name == name and cfg.n_layers == 2
        assert report["target"] == target
        assert abs(report["params"] - target) <= 0.10 * target, (name, report)
        model = SequenceClassifier(ClassifierConfig(vocab_size=100, num_classes=2, backbone=cfg))
        assert parameter_counts(model)["non_embedding"] == report["params"]
        if name == "transformer":
            assert cfg.d_model == d_model  # the transformer's knob is ff_dim


def test_matched_backbone_is_saved_and_not_rematched(tmp_path):
    cfg = tiny_cfg(tmp_path, "run", "lstm", steps=1)
    _, model, _, _ = train_classifier(cfg, progress=False, verbose=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["param_match"]["applied"] is True
    assert saved["model"]["backbone"]["d_model"] == model.cfg.backbone.d_model != 16
    loaded, _, _ = load_classifier(tmp_path / "run")
    assert parameter_counts(loaded) == parameter_counts(model)


def test_bad_data_exits_nonzero_with_location(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\ngood film,pos\nbad film,neg\nso so,meh\n")
    runner = CliRunner()
    r = runner.invoke(main, ["classify", "train", f"data.train={bad}", f"run_dir={tmp_path / 'run'}",
                             "data.label_map=[neg,pos]", "data.tokenizer=trained"])
    assert r.exit_code != 0
    assert "bad.csv" in r.output and "line 4" in r.output and "field 'label'" in r.output
    assert "Traceback" not in r.output
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\ngood film,pos\nbad film\n")
    r = runner.invoke(main, ["classify", "train", f"data.train={ragged}", f"run_dir={tmp_path / 'run2'}"])
    assert r.exit_code != 0 and "ragged.csv, line 3" in r.output
    r = runner.invoke(main, ["classify", "train", f"data.train={tmp_path / 'nope.csv'}"])
    assert r.exit_code != 0 and "nope.csv" in r.output and "current directory" in r.output
    r = runner.invoke(main, ["classify", "train", "model.backbone.name=gru"])
    assert r.exit_code != 0 and "model.backbone.name" in r.output


def test_eval_cli_bad_data(tmp_path):
    train_classifier(tiny_cfg(tmp_path, "run", "mamba", steps=1), progress=False, verbose=False)
    bad = tmp_path / "eval.csv"
    bad.write_text("text,label\ngood film,pos\nodd film,neutral\n")
    r = CliRunner().invoke(main, ["classify", "eval", "--checkpoint", str(tmp_path / "run"), "--data", str(bad)])
    assert r.exit_code != 0
    assert "eval.csv, line 3, field 'label'" in r.output and "unknown label" in r.output


@pytest.mark.parametrize("name", ["sentiment140-mamba", "sst2-mamba", "imdb-mamba"])
def test_shipped_configs_load(name):
    cfg = load_config(ClassifyConfig, name, ["model.backbone.name=transformer"])
    assert cfg.data.train.startswith("../shared/data/")
    assert cfg.model.backbone.name == "transformer" and cfg.model.backbone.n_layers == 2


@pytest.mark.shared_data
def test_sentiment140_config_reads_binary_test_set(shared_data):
    from mambadiff.tasks.classify import load_splits
    cfg = load_config(ClassifyConfig, "sentiment140-mamba",
                      [f"data.train={shared_data / 'sentiment140/train_subset.csv'}",
                       f"data.test={shared_data / 'sentiment140/test_manual.csv'}"])
    splits = load_splits(cfg, verbose=False)
    assert splits.label_names == ["negative", "positive"]
    assert len(splits.test) == 359  # 177 negative + 182 positive; the 139 neutral rows are dropped
    assert {y for _, y in splits.test} == {0, 1}


def test_max_test_scores_a_seeded_subset_of_the_test_split(tmp_path):
    from mambadiff.tasks.classify import load_splits
    full = load_splits(tiny_cfg(tmp_path, "full"), verbose=False)
    cut = load_splits(tiny_cfg(tmp_path, "cut", extra=("data.max_test=5",)), verbose=False)
    again = load_splits(tiny_cfg(tmp_path, "again", extra=("data.max_test=5",)), verbose=False)
    assert len(full.test) == 12 and len(cut.test) == 5 and cut.test == again.test
    positions = [full.test.index(ex) for ex in cut.test]
    assert positions == sorted(positions)  # a subset, in the split's order
    assert cut.train == full.train and cut.valid == full.valid
    with pytest.raises(ValueError, match="data.max_test must be >= 0"):
        tiny_cfg(tmp_path, "bad", extra=("data.max_test=-1",))
