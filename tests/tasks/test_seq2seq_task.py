"""End to end on tiny data: train (shared loop) -> checkpoint -> generate -> resume; CLI errors."""
import json
import math
import re

import pytest
import torch
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.config import ConfigError, load_config
from mambadiff.tasks.paraphrase import generate
from mambadiff.tasks.seq2seq import Seq2SeqConfig, load_seq2seq_model, train_seq2seq
from mambadiff.data.seq2seq import load_seq2seq_split

TINY = ["data.builtin_train=400", "data.builtin_valid=40", "data.builtin_test=40", "data.vocab_size=300",
        "data.seq_len=40", "data.eval_size=32", "model.emb_dim=32", "model.backbone.d_model=32",
        "model.backbone.n_layers=1", "train.batch_size=16", "train.log_every=5", "train.progress=false",
        "diffusion.steps=100", "sample.gaussian.steps=5", "sample.limit=8", "sample.batch_size=8",
        # the demo's recipe is masked diffusion on a hybrid: these tests cover the Gaussian process per backbone
        "diffusion.process=gaussian", "model.backbone.attn_layers=[]"]


def tiny_cfg(run_dir, backbone="mamba", steps=6, extra=()):
    return load_config(Seq2SeqConfig, "demo", [f"run_dir={run_dir}", f"model.backbone.name={backbone}",
                                               f"train.steps={steps}", *TINY, *extra])


@pytest.mark.parametrize("backbone", ["mamba", "mamba2", "s4d", "transformer"])
def test_train_and_generate_every_backbone(tmp_path, backbone):
    cfg = tiny_cfg(tmp_path / backbone, backbone, steps=4)
    result, model, tok = train_seq2seq(cfg, progress=False)
    assert result.step == 4 and result.checkpoint.exists()
    log = [json.loads(l) for l in (tmp_path / backbone / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in log} == {"train", "eval"}
    # every logged train record carries the logged-only nll, computed on exactly those steps
    assert all(k in r for r in log if r["split"] == "train" for k in ("loss", "mse", "nll"))
    assert [r["step"] for r in log if r["split"] == "train"] == [4]
    loaded, tok2, cfg2 = load_seq2seq_model(tmp_path / backbone)
    assert cfg2.model.vocab_size == tok.vocab_size
    ds = load_seq2seq_split(tmp_path / backbone / "data", "test", tok2, cfg2.data.seq_len, limit=4)
    recs = generate(loaded, tok2, cfg2, ds, steps=3, samples=2, mbr=True, progress=False)
    assert len(recs) == 4
    for r in recs:
        assert set(r) >= {"source", "reference", "recover", "samples"}
        assert len(r["samples"]) == 2 and r["recover"] in r["samples"]
        assert r["source"] and r["reference"]


def test_resume_matches_uninterrupted(tmp_path):
    full_cfg = tiny_cfg(tmp_path / "full", "transformer", steps=6, extra=["model.dropout=0.1"])
    _, full_model, _ = train_seq2seq(full_cfg, progress=False)
    half = tiny_cfg(tmp_path / "half", "transformer", steps=3, extra=["model.dropout=0.1"])
    train_seq2seq(half, progress=False)
    rest = tiny_cfg(tmp_path / "half", "transformer", steps=6, extra=["model.dropout=0.1"])
    _, resumed_model, _ = train_seq2seq(rest, resume=True, progress=False)
    for (k, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k


def test_existing_run_needs_resume(tmp_path):
    cfg = tiny_cfg(tmp_path, "transformer", steps=1)
    train_seq2seq(cfg, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train_seq2seq(tiny_cfg(tmp_path, "transformer", steps=2), progress=False)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="model.backbone.d_modl"):
        load_config(Seq2SeqConfig, None, ["model.backbone.d_modl=3"])
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(Seq2SeqConfig, None, ["train.steps=many"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml line"):
        load_config(Seq2SeqConfig, bad)


def test_cli_train_bad_input_exits_nonzero(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--config", "demo", "train.stepz=3"])
    assert r.exit_code != 0 and "train.stepz" in r.output
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"src": "a b", "trg": "c d"}\n{"src": "x"}\n')
    r = runner.invoke(main, ["train", "--config", "demo", f"data.path={data}", f"run_dir={tmp_path / 'run'}",
                             "data.tokenizer=bert"])
    assert r.exit_code != 0
    assert "train.jsonl" in r.output and "line 2" in r.output and "trg" in r.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_generate_writes_diffuseq_fields(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", "transformer", steps=2)
    train_seq2seq(cfg, progress=False)
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(main, ["generate", "--checkpoint", str(tmp_path / "run"), "--data",
                                  str(tmp_path / "run" / "data" / "valid.jsonl"), "--steps", "2",
                                  "--samples", "2", "--limit", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 3 and all({"source", "reference", "recover", "samples"} <= set(x) for x in rows)


def test_shipped_configs_parameter_counts():
    from mambadiff.tasks.seq2seq import config_parameter_report
    total = {n: config_parameter_report(load_config(Seq2SeqConfig, n)) for n in
             ("demo", "qqp-mamba-small", "qqp-transformer-base", "qqp-mamba-cpu", "qqp-transformer-gaussian-cpu",
              "qqp-mamba2-cpu", "qqp-mamba2-hybrid-cpu")}
    assert 6.5e6 < total["qqp-mamba-small"]["total"] < 7.5e6
    assert 88e6 < total["qqp-transformer-base"]["total"] < 93e6
    a, b = total["qqp-mamba-cpu"]["total"], total["qqp-transformer-gaussian-cpu"]["total"]
    assert abs(a - b) / b < 0.01
    # the Mamba-2 CPU config trades 10% of the Transformer's parameters for speed (see its header)
    assert 0.85 * b < total["qqp-mamba2-cpu"]["total"] < b
    # the hybrid: qqp-mamba2-cpu with its middle layer one of qqp-transformer-gaussian-cpu's layers
    hybrid = load_config(Seq2SeqConfig, "qqp-mamba2-hybrid-cpu").model.backbone
    assert hybrid.attn_layers == [1] and hybrid.name == "mamba2"
    assert total["qqp-mamba2-cpu"]["total"] < total["qqp-mamba2-hybrid-cpu"]["total"] < b
    r = CliRunner().invoke(main, ["params"])
    assert r.exit_code == 0 and "qqp-transformer-base" in r.output


def test_qqp_transformer_cpu_is_qqp_cpu_with_another_backbone():
    """The Transformer counterpart differs from qqp-cpu in the backbone (and its own tuned learning rate) only,
    at backbone parameters within 2%."""
    import dataclasses

    from mambadiff.tasks.seq2seq import config_parameter_report
    ours, theirs = (dataclasses.asdict(load_config(Seq2SeqConfig, n)) for n in ("qqp-cpu", "qqp-transformer-cpu"))
    assert theirs["model"]["backbone"]["name"] == "transformer"
    assert theirs["model"]["backbone"]["pos_encoding"] == "rotary"
    for cfg in (ours, theirs):
        del cfg["model"]["backbone"], cfg["train"]["lr"], cfg["run_dir"]
    assert ours == theirs
    backbone = {n: config_parameter_report(load_config(Seq2SeqConfig, n))["backbone"]
                for n in ("qqp-cpu", "qqp-transformer-cpu")}
    assert abs(backbone["qqp-cpu"] - backbone["qqp-transformer-cpu"]) / backbone["qqp-cpu"] < 0.02


def test_cli_copy_accuracy_prints_and_writes_the_split(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", "mamba2", steps=2)
    train_seq2seq(cfg, progress=False)
    valid = str(tmp_path / "run" / "data" / "valid.jsonl")
    out = tmp_path / "acc.json"
    r = CliRunner().invoke(main, ["copy-accuracy", "--checkpoint", str(tmp_path / "run"), "--data", valid,
                                  "--t", "0,50", "--limit", "8", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert re.search(r"\|\s*t\s*\|\s*copy\s*\|\s*novel\s*\|", r.output)  # the table's header row
    acc = json.loads(out.read_text())["accuracy"]
    assert set(acc) == {"0", "50"}
    assert all(0.0 <= v["copy"] <= 1.0 and v["n_copy"] + v["n_novel"] > 0 for v in acc.values())
    bad = CliRunner().invoke(main, ["copy-accuracy", "--checkpoint", str(tmp_path / "run"), "--data", valid,
                                    "--t", "5000"])
    assert bad.exit_code != 0 and "--t must list steps" in bad.output


def test_leftover_tokenizer_of_another_kind_is_rebuilt_for_a_fresh_run(tmp_path, capsys):
    from mambadiff.data.tokenizer import bert_tokenizer, load_tokenizer

    run = tmp_path / "run"
    bert_tokenizer().save(run / "tokenizer")  # left by an earlier run that never saved a checkpoint
    result, model, tok = train_seq2seq(tiny_cfg(run, "transformer", steps=1, extra=["data.tokenizer=trained"]),
                                       progress=False)
    assert tok.kind == "trained" and tok.vocab_size <= 300
    assert load_tokenizer(run / "tokenizer").vocab_size == tok.vocab_size
    assert load_tokenizer(result.checkpoint / "tokenizer").vocab_size == tok.vocab_size
    assert "data.tokenizer=trained" in capsys.readouterr().out


def test_leftover_tokenizer_is_reused_only_when_it_matches(tmp_path, capsys):
    from mambadiff.data.tokenizer import load_tokenizer

    run = tmp_path / "run"
    train_seq2seq(tiny_cfg(run, "transformer", steps=1, extra=["data.tokenizer=trained"]), progress=False)
    first = load_tokenizer(run / "tokenizer").vocab_size
    for sub in ("checkpoints", "metrics.jsonl", "config.json"):  # a fresh run in the same folder
        path = run / sub
        __import__("shutil").rmtree(path) if path.is_dir() else path.unlink()
    capsys.readouterr()
    _, _, same = train_seq2seq(tiny_cfg(run, "transformer", steps=1, extra=["data.tokenizer=trained"]),
                               progress=False)
    assert same.vocab_size == first and "building a new tokenizer" not in capsys.readouterr().out
    __import__("shutil").rmtree(run / "checkpoints")
    _, _, smaller = train_seq2seq(tiny_cfg(run, "transformer", steps=1,
                                           extra=["data.tokenizer=trained", "data.vocab_size=120"]), progress=False)
    assert smaller.vocab_size <= 120 < first
    assert "data.vocab_size=120" in capsys.readouterr().out


def test_resumed_run_refuses_a_tokenizer_that_does_not_match(tmp_path):
    from mambadiff.data.tokenizer import bert_tokenizer

    run = tmp_path / "run"
    train_seq2seq(tiny_cfg(run, "transformer", steps=1, extra=["data.tokenizer=trained"]), progress=False)
    __import__("shutil").rmtree(run / "tokenizer")
    bert_tokenizer().save(run / "tokenizer")
    with pytest.raises(ValueError, match=r"tokenizer.*bert.*data\.tokenizer=trained"):
        train_seq2seq(tiny_cfg(run, "transformer", steps=2, extra=["data.tokenizer=trained"]), resume=True,
                      progress=False)


def test_truncated_checkpoint_is_named_and_resume_falls_back(tmp_path):
    from mambadiff.train.checkpoint import latest_checkpoint
    from mambadiff.train.loop import CheckpointFallbackWarning

    run = tmp_path / "run"
    train_seq2seq(tiny_cfg(run, "transformer", steps=2, extra=["train.save_every=1"]), progress=False)
    newest = latest_checkpoint(run)
    for name in ("model.safetensors", "ema.safetensors"):  # generate reads the EMA weights
        (newest / name).write_bytes((newest / name).read_bytes()[:64])
    r = CliRunner().invoke(main, ["generate", "--checkpoint", str(newest), "--data",
                                  str(run / "data" / "valid.jsonl"), "--steps", "2", "--limit", "2",
                                  "--out", str(tmp_path / "out.jsonl")])
    assert r.exit_code != 0 and "ema.safetensors" in r.output and "Traceback" not in r.output
    with pytest.warns(CheckpointFallbackWarning, match="model.safetensors"):
        result, _, _ = train_seq2seq(tiny_cfg(run, "transformer", steps=3, extra=["train.save_every=1"]),
                                     resume=True, progress=False)
    assert result.step == 3 and (run / "checkpoints" / "step_00000002.corrupt").is_dir()


def test_soft_absorbing_training_and_dpm_solver_sampling(tmp_path):
    """diffusion.soft_absorb trains (its draws change the run, and a rate outside [0, 1] is refused);
    sample.gaussian.solver dpm-solver++ samples it through the same generate path."""
    from mambadiff.tasks.paraphrase import Paraphraser
    plain, _, _ = train_seq2seq(tiny_cfg(tmp_path / "plain", steps=3), progress=False)
    absorbed, model, tok = train_seq2seq(tiny_cfg(tmp_path / "absorb", steps=3, extra=["diffusion.soft_absorb=0.5"]),
                                         progress=False)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["split"] == "train"] for name in ("plain", "absorb")]
    assert losses[0] != losses[1] and all(map(math.isfinite, losses[1]))
    with pytest.raises((ConfigError, ValueError), match="soft_absorb"):
        tiny_cfg(tmp_path / "bad", extra=["diffusion.soft_absorb=1.5"]).validate()
    para = Paraphraser.from_pretrained(tmp_path / "absorb")
    texts = ["how do i learn python?", "why is the sky blue?"]
    dpm = para(texts, steps=4, seed=1, solver="dpm-solver++")
    assert len(dpm) == 2 and all(isinstance(t, str) for t in dpm)
    assert para(texts, steps=4, seed=1, solver="dpm-solver++") == dpm  # deterministic given the seed
    with pytest.raises(ValueError, match="solver"):
        para(texts, steps=4, solver="euler")


def test_with_reversed_pairs_adds_each_pair_reversed_once():
    from mambadiff.tasks.seq2seq.training_data import training_pairs, with_reversed_pairs
    pairs = [("a b", "c d"), ("c d", "a b"), ("e", "f"), ("g", "g"), ("e", "f")]
    assert with_reversed_pairs(pairs) == [*pairs, ("f", "e")]  # (c d, a b) and (g, g) are there already
    d = load_config(Seq2SeqConfig, "demo", ["data.max_train=2", "data.both_directions=true"]).data
    assert training_pairs(pairs, d) == [("a b", "c d"), ("c d", "a b")]  # the first 2, reversed: no new pair


def test_both_directions_trains_on_the_reversed_pairs_too(tmp_path, capsys):
    """data.both_directions reaches the training set: the printed count doubles (the built-in pairs
    are distinct both ways) and training runs."""
    for both in (False, True):
        cfg = tiny_cfg(tmp_path / str(both), steps=1, extra=["data.max_train=100", f"data.both_directions={both}"])
        train_seq2seq(cfg, progress=False)
        assert f"; {200 if both else 100} training pairs" in capsys.readouterr().out


def test_source_dropout_trains_and_guided_generation_runs(tmp_path):
    """diffusion.source_dropout changes the masked training run (its draws mask whole sources) and a
    model trained with it samples with guidance through the generate command; the dropped sources
    are exactly the drawn rows' source words."""
    from mambadiff.tasks.seq2seq.train import build_seq2seq_trainer
    from mambadiff.train import StepContext
    masked = ["diffusion.process=masked", "train.progress=false"]
    runs = {p: tiny_cfg(tmp_path / f"p{p}", "mamba2", steps=3, extra=[*masked, f"diffusion.source_dropout={p}"])
            for p in (0.0, 0.5)}
    for cfg in runs.values():
        train_seq2seq(cfg, progress=False)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / f"p{p}" / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["split"] == "train"] for p in runs]
    assert losses[0] != losses[1] and all(map(math.isfinite, losses[1]))
    trainer, tok = build_seq2seq_trainer(runs[0.5])
    task = trainer.task
    items = task.get_batch(list(range(64)), "cpu")
    ctx = StepContext(0, 1, 0, 64, 0, "cpu")
    ctx.local_batch = 64
    dropped = task._drop_sources(items, ctx, torch.Generator().manual_seed(3))["input_ids"]
    changed = (dropped != items["input_ids"]).any(-1)  # (64,) rows whose source went
    assert 16 <= int(changed.sum()) <= 48
    source = items["input_mask"] == 0
    words = source & ~torch.isin(items["input_ids"], torch.tensor([tok.pad_id, tok.sep_id, tok.cls_id]))
    assert torch.equal(dropped[changed] == tok.mask_id, words[changed])
    assert torch.equal(dropped[~changed], items["input_ids"][~changed])
    out = tmp_path / "guided.jsonl"
    texts = ["how do i learn python?", "why is the sky blue?", "what is love?", "how to cook rice?"]
    text_args = [arg for t in texts for arg in ("--text", t)]
    r = CliRunner().invoke(main, ["generate", "--checkpoint", str(tmp_path / "p0.5"), *text_args,
                                  "--guidance", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 4
    r = CliRunner().invoke(main, ["generate", "--checkpoint", str(tmp_path / "p0.0"), "--text", texts[0],
                                  "--guidance", "2", "--out", str(tmp_path / "no.jsonl")])
    assert r.exit_code != 0 and "source_dropout" in r.output


def test_distilled_pairs_join_or_replace_the_training_pairs(tmp_path, capsys):
    """data.distill reads a generate output file (source, recover) as training pairs: joined to the
    data's own or in their place, reversed too with both_directions; a bad row names its line."""
    from mambadiff.data import DataError
    from mambadiff.tasks.seq2seq.training_data import distilled_pairs
    rows = [{"source": f"how do i learn python {i}?", "reference": "how to learn python?",
             "recover": f"what is the way to learn python {i}?" if i != 3 else ""} for i in range(6)]
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = distilled_pairs(teacher)
    assert len(pairs) == 5 and pairs[0] == ("how do i learn python 0?", "what is the way to learn python 0?")
    for mode, both, expect in (("join", False, 105), ("replace", False, 5), ("replace", True, 10)):
        cfg = tiny_cfg(tmp_path / f"{mode}{both}", steps=1,
                       extra=["data.max_train=100", f"data.distill={teacher}", f"data.distill_mode={mode}",
                              f"data.both_directions={both}", "train.batch_size=4"])
        train_seq2seq(cfg, progress=False)
        assert f"; {expect} training pairs" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"source": "a", "reference": "b"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl.*line 2.*recover"):
        distilled_pairs(bad)
    with pytest.raises(DataError, match="not found"):
        distilled_pairs(tmp_path / "missing.jsonl")
    with pytest.raises((ConfigError, ValueError), match="data.distill_mode"):
        tiny_cfg(tmp_path / "x", extra=["data.distill_mode=mix"])
