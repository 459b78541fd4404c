"""The shared training loop: bit-for-bit resume, atomic checkpoints, LR schedule, metrics log."""
import json

import pytest
import torch
from torch import nn

from mambadiff.train import TrainConfig, Trainer
from mambadiff.train.checkpoint import latest_checkpoint
from mambadiff.train.optim import clock_decay, param_groups, warmup_linear_decay


class ToyTask:
    """Noisy linear regression; randomness drawn for the global batch from ctx.generator()."""

    def __init__(self, n=64, d=5):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, d, generator=g)
        self.y = self.x @ torch.randn(d, 1, generator=g)
        self.evals = 0

    def num_train_examples(self):
        return len(self.x)

    def get_batch(self, idx, device):
        return {"x": self.x[idx], "y": self.y[idx]}

    def loss(self, model, batch, ctx):
        noise = ctx.slice(torch.randn(ctx.global_batch, 1, generator=ctx.generator()))  # (b, 1)
        loss = ((model(batch["x"]) - batch["y"] - 0.01 * noise) ** 2).mean()
        return loss, {"loss": loss.item()}

    def evaluate(self, model):
        self.evals += 1
        with torch.no_grad():
            return {"mse": float(((model(self.x) - self.y) ** 2).mean())}

    def count_tokens(self, batch):
        return len(batch["x"])

    def state_dict(self):
        return {"evals": self.evals}

    def load_state_dict(self, s):
        self.evals = s["evals"]


def make_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))


def cfg(**kw):
    base = dict(steps=6, batch_size=8, grad_accum=2, lr=1e-2, warmup_steps=2, ema_decay=0.9,
                log_every=1, progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_is_bit_for_bit(tmp_path):
    full = Trainer(make_model(), ToyTask(), cfg(), tmp_path / "a", {}).fit()
    t_full = Trainer(make_model(), ToyTask(), cfg(), tmp_path / "b", {})
    t_full.fit()

    t1 = Trainer(make_model(), ToyTask(), cfg(steps=6), tmp_path / "c", {})
    t1.cfg.steps = 3
    t1.fit()
    t2 = Trainer(make_model(), ToyTask(), cfg(steps=6), tmp_path / "c", {})
    assert t2.resume()
    assert t2.step == 3
    t2.fit()
    for (k, a), b in zip(t_full.model.state_dict().items(), t2.model.state_dict().values()):
        assert torch.equal(a, b), k
    for k in t_full.ema.shadow:
        assert torch.equal(t_full.ema.shadow[k], t2.ema.shadow[k]), k
    assert full.step == 6
    # the metrics log of the resumed run holds each train step once
    steps = [json.loads(l)["step"] for l in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_interrupt_leaves_resumable_checkpoint(tmp_path):
    class Boom(ToyTask):
        calls = 0

        def loss(self, model, batch, ctx):
            Boom.calls += 1
            if Boom.calls == 5:
                raise KeyboardInterrupt
            return super().loss(model, batch, ctx)

    res = Trainer(make_model(), Boom(), cfg(), tmp_path, {}).fit()
    assert res.interrupted and res.step == 2
    ck = latest_checkpoint(tmp_path)
    assert ck is not None and ck.name == "step_00000002"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    t = Trainer(make_model(), ToyTask(), cfg(), tmp_path, {})
    assert t.resume() and t.step == 2


def test_training_reduces_loss(tmp_path):
    t = Trainer(make_model(), ToyTask(), cfg(steps=60, warmup_steps=5, ema_decay=0.0), tmp_path, {})
    before = ToyTask().evaluate(t.model)["mse"]
    res = t.fit()
    assert res.last_eval["mse"] < 0.5 * before


def test_bad_batch_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(make_model(), ToyTask(), cfg(batch_size=7), tmp_path, {})


def test_schedule_and_param_groups():
    f = warmup_linear_decay(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4))
    m[0].weight._no_weight_decay = True
    groups = param_groups(m, 0.1)
    decay = [g for g in groups if g["weight_decay"] == 0.1]
    assert len(decay) == 1 and decay[0]["params"] == [m[1].weight]


def test_clock_decay_follows_the_budget_fraction():
    used = [0.0]
    lin, cos = clock_decay(4, "linear", lambda: used[0]), clock_decay(4, "cosine", lambda: used[0])
    assert lin(0) == pytest.approx(0.25) and lin(3) == pytest.approx(1.0)  # warm-up by steps
    for frac, want_lin, want_cos in ((0.0, 1.0, 1.0), (0.25, 0.75, 0.8535534), (0.5, 0.5, 0.5), (1.0, 0.0, 0.0),
                                     (1.7, 0.0, 0.0)):
        used[0] = frac
        assert lin(100) == pytest.approx(want_lin) and cos(100) == pytest.approx(want_cos, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        clock_decay(0, "constant", lambda: 0.0)


def test_lr_decays_over_the_minutes_budget(tmp_path):
    """lr_decay_clock=minutes: the LR falls with the training clock and is near 0 when the budget ends."""
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(lr_decay_clock="minutes")
    with pytest.raises(ValueError, match="lr_decay_clock"):
        TrainConfig(lr_decay_clock="hours")
    cfg = TrainConfig(steps=10**7, batch_size=8, lr=0.01, warmup_steps=0, lr_decay="linear",
                      lr_decay_clock="minutes", max_minutes=0.02, log_every=1, progress=False)
    result = Trainer(nn.Linear(5, 1), ToyTask(), cfg, tmp_path / "run", {}).fit()
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
           if r.get("split") == "train"]
    assert result.step == len(lrs) and len(lrs) > 10
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert lrs[0] > 0.008 and lrs[-1] < 0.002


def test_ema_warms_up():
    from mambadiff.train.ema import EMA
    m = nn.Linear(2, 1)
    ema = EMA(m, 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10_000) == 0.999
    old = ema.shadow["weight"].clone()
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m, 0)
    torch.testing.assert_close(ema.shadow["weight"], 0.1 * old + 0.9)


def test_best_checkpoint_tracks_best_eval(tmp_path):
    from mambadiff.train.checkpoint import load_state

    trainer = Trainer(make_model(), ToyTask(), cfg(steps=12, eval_every=1, best_metric="mse", best_mode="min",
                                                  lr=5e-2), tmp_path, {})
    result = trainer.fit()
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["split"] == "eval"]
    best = min(evals, key=lambda r: r["mse"])
    assert result.best["metric"] == "mse" and result.best["value"] == pytest.approx(best["mse"])
    assert result.best["step"] == best["step"]
    folder = tmp_path / "checkpoints" / "best"
    assert folder.is_dir() and not [p for p in folder.iterdir() if p.name.startswith("optimizer")]
    # the stored EMA weights reproduce the best evaluation
    model = make_model()
    model.load_state_dict(load_state(folder, ema=True))
    model.eval()
    assert ToyTask().evaluate(model)["mse"] == pytest.approx(best["mse"], rel=1e-6)
    assert latest_checkpoint(tmp_path).name.startswith("step_")  # resume never picks "best"


def test_best_metric_must_be_reported_by_the_task(tmp_path):
    trainer = Trainer(make_model(), ToyTask(), cfg(steps=2, eval_every=1, best_metric="accuracy"), tmp_path, {})
    with pytest.raises(ValueError, match=r"best_metric='accuracy'.*reports \['mse'\]"):
        trainer.fit()
    with pytest.raises(ValueError, match="best_mode"):
        TrainConfig(best_mode="up").validate()


def test_step_context_says_which_steps_are_logged(tmp_path):
    """Tasks may skip log-only work: ctx.log_metrics is True exactly on the steps the log records."""
    seen = []

    class Recording(ToyTask):
        def loss(self, model, batch, ctx):
            seen.append((ctx.step + 1, ctx.micro, ctx.log_metrics))
            return super().loss(model, batch, ctx)

    Trainer(make_model(), Recording(), cfg(steps=7, log_every=3), tmp_path, {}).fit()
    logged = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if json.loads(l)["split"] == "train"]
    assert logged == [3, 6, 7]  # every 3rd step and the last
    assert sorted({s for s, _, flag in seen if flag}) == logged
    assert all(flag == (s in logged) for s, _, flag in seen) and len(seen) == 7 * 2  # both micro-batches


def test_resumes_checkpoints_of_the_earlier_format(tmp_path):
    """optimizer.pt (read with weights_only=True) and the Python RNG state as a repr string."""
    import random

    from mambadiff.train.checkpoint import load_optimizer_state

    t_full = Trainer(make_model(), ToyTask(), cfg(), tmp_path / "full", {})
    t_full.fit()
    t1 = Trainer(make_model(), ToyTask(), cfg(), tmp_path / "old", {})
    t1.cfg.steps = 3
    t1.fit()
    folder = latest_checkpoint(tmp_path / "old")
    torch.save(load_optimizer_state(folder), folder / "optimizer.pt")
    (folder / "optimizer.json").unlink()
    (folder / "optimizer.safetensors").unlink()
    state = json.loads((folder / "trainer_state.json").read_text())
    py = state["rng"]["python"]
    state["rng"]["python"] = repr((py["version"], tuple(py["internal"]), py["gauss_next"]))
    (folder / "trainer_state.json").write_text(json.dumps(state))
    t2 = Trainer(make_model(), ToyTask(), cfg(), tmp_path / "old", {})
    random.seed(99)
    assert t2.resume() and t2.step == 3
    assert random.random() == pytest.approx(_next_random(py))
    t2.fit()
    for (k, a), b in zip(t_full.model.state_dict().items(), t2.model.state_dict().values()):
        assert torch.equal(a, b), k


def _next_random(py_state) -> float:
    import random
    r = random.Random()
    r.setstate((py_state["version"], tuple(py_state["internal"]), py_state["gauss_next"]))
    return r.random()


def test_train_seconds_accumulate_across_a_resume(tmp_path):
    """Every log record carries the training clock; a resumed run continues it from its checkpoint."""
    class Slow(ToyTask):
        def loss(self, model, batch, ctx):
            import time
            time.sleep(0.01)
            return super().loss(model, batch, ctx)

    t1 = Trainer(make_model(), Slow(), cfg(steps=6), tmp_path, {})
    t1.cfg.steps = 3
    t1.fit()
    saved = json.loads((latest_checkpoint(tmp_path) / "trainer_state.json").read_text())["train_seconds"]
    assert saved >= 3 * 2 * 0.01  # 3 steps of 2 micro-batches
    t2 = Trainer(make_model(), Slow(), cfg(steps=6), tmp_path, {})
    assert t2.resume()
    t2.fit()
    recs = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    clock = [r["train_seconds"] for r in recs if r["split"] == "train"]
    assert len(clock) == 6 and all(b > a for a, b in zip(clock, clock[1:]))
    assert clock[3] > saved  # step 4 comes after the resumed checkpoint's clock
    assert all("train_seconds" in r for r in recs if r["split"] == "eval")


def test_the_data_order_refuses_a_resume_on_other_data():
    from mambadiff.train.batches import EpochOrder
    saved = EpochOrder(12, seed=0)
    saved.take(5)
    with pytest.raises(ValueError, match="trained on 12 examples, the data now gives 10"):
        EpochOrder(10, seed=0).load_state_dict(saved.state_dict())
    order = EpochOrder(12, seed=0)
    order.load_state_dict({"epoch": 0, "cursor": 5})  # saved before the count was recorded
    assert order.take(7) == saved.take(7)
