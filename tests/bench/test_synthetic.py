"""Synthetic recall benchmark: the tasks' loss/evaluation and a tiny end-to-end run.

Whether Mamba beats S4D needs the real default budget; it is measured by running the benchmark, not here.
"""
import json

import pytest
import torch
from torch import nn

from mambadiff.bench.synthetic import (MQAR_SHAPES, RECORD_FIELDS, MQARShape, mqar_backbone_shape,
                                      run_synthetic_benchmark)
from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.layer_options import S4DOptions
from mambadiff.tasks.synthetic import SyntheticTask, SyntheticTaskConfig


class Oracle(nn.Module):
    """Reads the answers off the inputs: for selective copying, the non-noise body tokens in order."""

    def __init__(self, vocab_size, k, wrong_last=False):
        super().__init__()
        self.vocab_size, self.k, self.wrong_last = vocab_size, k, wrong_last
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, inputs, last=None):
        body = inputs[:, :-self.k]
        answers = torch.stack([row[row != 0] for row in body])  # (b, k)
        if self.wrong_last:
            answers[:, -1] = 0  # NOISE is never an answer
        assert last == self.k, "the task must ask for the logits of the last k positions only"
        return nn.functional.one_hot(answers, self.vocab_size).float() * 10  # (b, k, v)


def small_task(**kw):
    cfg = dict(task="selective_copy", seq_len=24, num_tokens=4, num_train=64, num_eval=40, eval_batch_size=16)
    cfg.update(kw)
    return SyntheticTask(SyntheticTaskConfig(**cfg))


def test_evaluate_scores_answer_positions():
    task = small_task()
    perfect = task.evaluate(Oracle(task.vocab_size, 4))
    assert perfect["accuracy"] == 1.0 and perfect["seq_accuracy"] == 1.0 and perfect["loss"] < 1e-3
    off_by_one = task.evaluate(Oracle(task.vocab_size, 4, wrong_last=True))
    assert off_by_one["accuracy"] == pytest.approx(0.75) and off_by_one["seq_accuracy"] == 0.0


def test_loss_uses_only_answer_positions():
    task = small_task(task="induction", seq_len=16)
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(name="lstm", d_model=16, n_layers=1))
    batch = task.get_batch(list(range(8)), "cpu")
    assert batch["inputs"].shape == (8, 16) and batch["answers"].shape == (8, 1)
    loss, metrics = task.loss(model, batch, None)
    logits = model(batch["inputs"])[:, -1]  # (b, v)
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(logits, batch["answers"][:, 0]).item(),
                                        rel=1e-5)
    assert set(metrics) == {"loss", "accuracy"}
    assert task.count_tokens(batch) == 8 * 16


def test_model_is_causal_and_rejects_bidirectional():
    task = small_task()
    with pytest.raises(ValueError, match="causal"):
        task.build_model(BackboneConfig(name="lstm", d_model=8, n_layers=1, bidirectional=True))
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(name="transformer", d_model=16, n_layers=1, n_heads=2)).eval()
    x = task.train.inputs[:2].clone()
    y = x.clone()
    y[:, -1] = 0
    with torch.no_grad():
        assert torch.allclose(model(x)[:, :-1], model(y)[:, :-1], atol=1e-6)


def test_resume_with_other_task_config_is_rejected():
    a, b = small_task(), small_task(seed=1)
    with pytest.raises(ValueError, match="synthetic task config"):
        b.load_state_dict(a.state_dict())
    b.load_state_dict(b.state_dict())


def test_tiny_benchmark_end_to_end(tmp_path):
    out = tmp_path / "res" / "synthetic.json"
    threads = torch.get_num_threads()
    records = run_synthetic_benchmark(models=("mamba", "s4d"), d_model=16, n_layers=1, steps=3, seq_len=24,
                                      seed=0, json_path=out, progress=False, batch_size=8, num_tokens=4,
                                      num_eval=32, run_dir=tmp_path / "runs", device="cpu",
                                      mqar_settings=((16, 4), (24, 6)), mqar_num_symbols=8, mqar_steps=2)
    assert [(r["task"], r["seq_len"], r["model"]) for r in records] == [
        ("selective_copy", 24, "mamba"), ("selective_copy", 24, "s4d"), ("induction", 24, "mamba"),
        ("induction", 24, "s4d"), ("mqar", 16, "mamba"), ("mqar", 16, "s4d"), ("mqar", 24, "mamba"),
        ("mqar", 24, "s4d")]
    for r in records:
        assert set(RECORD_FIELDS) <= set(r)
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["seq_accuracy"] <= r["accuracy"] + 1e-9
        assert r["params"] > 0 and r["train_seconds"] > 0
        # Mamba trades depth for width on MQAR only; every other run keeps the shared 1 x 16
        assert (r["n_layers"], r["d_model"]) == ((1, 32) if (r["task"], r["model"]) == ("mqar", "mamba")
                                                 else (1, 16))
        if r["task"] == "mqar":
            assert r["steps"] == 2 and r["chance"] == pytest.approx(1 / 8)
            assert r["num_kv_pairs"] == {16: 4, 24: 6}[r["seq_len"]]
        else:
            assert r["steps"] == 3 and r["num_kv_pairs"] is None
            assert r["chance"] == pytest.approx(1 / 16)  # 16 answer symbols by default in both tasks
    saved = json.loads(out.read_text())
    assert saved["results"] == records and saved["config"]["steps"] == 3
    assert saved["config"]["mqar_settings"] == [[16, 4], [24, 6]]
    assert not [p for p in out.parent.iterdir() if p.name != "synthetic.json"]  # no temp file left over
    assert (tmp_path / "runs" / "induction_s4d" / "metrics.jsonl").exists()
    assert (tmp_path / "runs" / "mqar_l24_kv6_s4d" / "metrics.jsonl").exists()
    assert torch.get_num_threads() == threads  # the benchmark's thread setting does not leak


def test_mqar_backbone_shape():
    # the defaults: Mamba gets one layer of width 112 for the shared two of width 64, the others keep 2 x 64
    assert mqar_backbone_shape("mamba", 64, 2) == {"d_model": 112, "n_layers": 1}
    assert MQAR_SHAPES["mamba"] == MQARShape(depth_divisor=2, width_scale=1.75)
    for name in ("mamba2", "s4d", "s4", "h3", "transformer"):
        assert mqar_backbone_shape(name, 64, 2) == {"d_model": 64, "n_layers": 2}
    assert mqar_backbone_shape("mamba", 64, 2, {}) == {"d_model": 64, "n_layers": 2}  # shared shape
    assert mqar_backbone_shape("mamba", 16, 1) == {"d_model": 32, "n_layers": 1}  # at least one layer
    assert mqar_backbone_shape("mamba", 100, 4) == {"d_model": 176, "n_layers": 2}  # width a multiple of 8
    custom = {"s4d": MQARShape(width_scale=2.0, extra={"s4d": S4DOptions(d_state=32)})}
    assert mqar_backbone_shape("s4d", 64, 2, custom) == {"d_model": 128, "n_layers": 2, "s4d": S4DOptions(d_state=32)}
    # 1.43x the shared shape's parameters, fewer than the 2 x 64 Transformer's (112,577 at 64 x 8)
    from mambadiff.models.backbones import BackboneConfig as BC
    from mambadiff.tasks.synthetic import SyntheticModel
    shared = SyntheticModel(65, BC(name="mamba", d_model=64, n_layers=2)).num_parameters()
    own = SyntheticModel(65, BC(name="mamba", **mqar_backbone_shape("mamba", 64, 2))).num_parameters()
    assert (shared, own) == (73_857, 105_569)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="models"):
        run_synthetic_benchmark(models=("nope",), progress=False)
    with pytest.raises(ValueError, match="seq_len"):
        run_synthetic_benchmark(tasks=("selective_copy",), seq_len=5, progress=False)
    with pytest.raises(ValueError, match="steps"):
        run_synthetic_benchmark(steps=0, progress=False)
    with pytest.raises(ValueError, match="mqar_settings"):
        run_synthetic_benchmark(tasks=("mqar",), mqar_settings=((20, 8),), progress=False)
    with pytest.raises(ValueError, match="mqar_num_symbols"):
        run_synthetic_benchmark(tasks=("mqar",), mqar_settings=((64, 8),), mqar_num_symbols=4, progress=False)


def test_command(tmp_path, run_cli):
    out = tmp_path / "s.json"
    res = run_cli("bench", "synthetic", "--task", "induction", "--model", "lstm", "--d-model", "8",
                  "--layers", "1", "--steps", "2", "--seq-len", "12",
                  "--json", str(out))
    assert res.exit_code == 0, res.output
    assert "induction" in res.output and "lstm" in res.output
    assert [r["model"] for r in json.loads(out.read_text())["results"]] == ["lstm"]
    bad = run_cli("bench", "synthetic", "--model", "nope")
    assert bad.exit_code == 2 and "nope" in bad.output
    for args in (["--task", "mqar", "--mqar", "64by8"], ["--task", "mqar", "--mqar", "20x8"]):
        bad = run_cli("bench", "synthetic", *args)
        assert bad.exit_code == 2 and "Traceback" not in bad.output and "mqar" in bad.output


def test_mqar_command(tmp_path, run_cli):
    out = tmp_path / "m.json"
    res = run_cli("bench", "synthetic", "--task", "mqar", "--model", "h3", "--model", "s4", "--d-model", "8",
                  "--layers", "1", "--mqar", "12x3,18x4", "--mqar-steps", "2",
                  "--mqar-symbols", "6", "--json", str(out))
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())["results"]
    assert [(r["seq_len"], r["num_kv_pairs"], r["model"]) for r in results] == [
        (12, 3, "h3"), (12, 3, "s4"), (18, 4, "h3"), (18, 4, "s4")]
    shared = tmp_path / "shared.json"
    res = run_cli("bench", "synthetic", "--task", "mqar", "--model", "mamba", "--d-model", "8", "--layers", "2",
                  "--mqar", "12x3", "--mqar-steps", "1", "--mqar-symbols", "6", "--mqar-shared-shape",
                  "--json", str(shared))
    assert res.exit_code == 0, res.output
    (record,) = json.loads(shared.read_text())["results"]
    assert (record["n_layers"], record["d_model"]) == (2, 8)


class MQAROracle(nn.Module):
    """Looks every queried key up in the pairs at the start of the row (positions given by the task)."""

    def __init__(self, vocab_size, num_kv_pairs):
        super().__init__()
        self.vocab_size, self.n = vocab_size, num_kv_pairs
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, inputs, last=None, positions=None):
        assert last is None and positions is not None, "MQAR answers sit at the query positions"
        keys, values = inputs[:, 0:2 * self.n:2], inputs[:, 1:2 * self.n:2]  # (b, N)
        queried = inputs.gather(1, positions)  # (b, k)
        match = (queried.unsqueeze(-1) == keys.unsqueeze(1)).float()  # (b, k, N)
        answers = (match * values.unsqueeze(1)).sum(-1).long()  # (b, k)
        return nn.functional.one_hot(answers, self.vocab_size).float() * 10  # (b, k, v)


def test_mqar_task_scores_query_positions():
    task = small_task(task="mqar", seq_len=20, num_kv_pairs=5, num_symbols=8)
    assert task.num_answers == 5 and task.vocab_size == 17 and not task.answers_at_end
    perfect = task.evaluate(MQAROracle(task.vocab_size, 5))
    assert perfect["accuracy"] == 1.0 and perfect["seq_accuracy"] == 1.0
    batch = task.get_batch(list(range(6)), "cpu")
    assert batch["positions"].shape == (6, 5) and batch["answers"].shape == (6, 5)
    loss, metrics = task.loss(MQAROracle(task.vocab_size, 5), batch, None)
    assert metrics["accuracy"] == 1.0 and loss.item() < 1e-3
    # a real model: the task's loss is the cross-entropy of the logits gathered at the query positions
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(name="lstm", d_model=8, n_layers=1))
    loss, _ = task.loss(model, batch, None)
    full = model(batch["inputs"])  # (b, l, v)
    picked = full.gather(1, batch["positions"].unsqueeze(-1).expand(-1, -1, full.shape[-1]))  # (b, k, v)
    expect = nn.functional.cross_entropy(picked.flatten(0, 1), batch["answers"].flatten())
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
