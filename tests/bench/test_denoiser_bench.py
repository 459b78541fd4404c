"""`mambadiff bench denoiser` on tiny built-in data: records, ratios, that it times real training, errors."""
import json
import statistics

import torch

from mambadiff.config import load_config
from mambadiff.tasks.seq2seq import Seq2SeqConfig, build_seq2seq_trainer

TINY = ("data.builtin_train=200 data.builtin_valid=20 data.builtin_test=20 data.vocab_size=200 "
        "data.seq_len=32 model.emb_dim=16 model.backbone.d_model=32 model.backbone.n_layers=1 "
        "train.batch_size=8 diffusion.steps=100 diffusion.process=gaussian model.backbone.attn_layers=[]")


def test_records_and_ratios(tmp_path, run_cli):
    out = tmp_path / "bench.json"
    specs = [f"demo model.backbone.name=transformer {TINY}", f"demo model.backbone.name=mamba2 {TINY}"]
    res = run_cli("bench", "denoiser", "--config", specs[0], "--config", specs[1],
                  "--steps", "2", "--rounds", "2", "--warmup", "1",
                  "--train-pairs", "64", "--json", str(out))
    assert res.exit_code == 0, res.output
    records = json.loads(out.read_text())
    assert [r["config"] for r in records] == specs
    first, second = records
    assert first["speed_vs_first"] == 1.0  # the median of its own ratios, all 1
    # steps are paired slot by slot: the ratio is the median of first / second within a slot
    assert len(first["step_ms"]) == len(second["step_ms"]) == 2 * 2
    assert second["speed_vs_first"] == statistics.median(
        f / s for f, s in zip(first["step_ms"], second["step_ms"]))
    assert first["ms_per_step"] == statistics.median(first["step_ms"])
    for r in records:
        assert len(r["round_ms"]) == 2 and min(r["round_ms"]) == r["round_ms_min"]
        assert max(r["round_ms"]) == r["round_ms_max"] and r["ms_per_step"] > 0
        assert r["tokens_per_step"] == 8 * 32  # batch x seq_len
        assert abs(r["tokens_per_s"] - r["tokens_per_step"] * 1000 / r["ms_per_step"]) < 1e-6
    # the parameter counts are those of the model `mambadiff train` builds from the same config
    cfg = load_config(Seq2SeqConfig, "demo", ["model.backbone.name=mamba2", *TINY.split(),
                                              f"run_dir={tmp_path / 'ref'}"])
    trainer, _ = build_seq2seq_trainer(cfg)
    assert second["backbone_params"] == trainer.model.parameter_report()["backbone"]
    assert "speed_vs_first" in res.output and "mambadiff-bench-" not in res.output


def test_train_step_is_the_training_loops_step(tmp_path):
    """The benchmark's unit changes the weights and the optimiser's step count, as training does."""
    cfg = load_config(Seq2SeqConfig, "demo", ["model.backbone.name=mamba2", *TINY.split(),
                                              f"run_dir={tmp_path}"])
    trainer, _ = build_seq2seq_trainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    metrics, tokens = trainer.train_step()
    assert trainer.step == 1 and tokens == 8 * 32 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))


def test_bad_config_and_options_fail_clearly(tmp_path, run_cli):
    res = run_cli("bench", "denoiser", "--config", f"demo model.no_such_key=1 {TINY}")
    assert res.exit_code != 0 and "no_such_key" in res.output
    res = run_cli("bench", "denoiser", "--config", "demo", "--rounds", "0")
    assert res.exit_code != 0 and "--rounds" in res.output
