import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mambadiff.diffusion import LossAwareSampler, UniformSampler, create_timestep_sampler


def _fill(sampler: LossAwareSampler, loss_of_t, rounds: int | None = None):
    T = sampler.num_timesteps
    for _ in range(rounds or sampler.history_per_term):
        t = torch.arange(T)
        sampler.update(t, loss_of_t(t))


def test_uniform_sampler():
    s = UniformSampler(50)
    g = torch.Generator().manual_seed(0)
    t, w = s.sample(1000, "cpu", generator=g)
    assert t.shape == (1000,) and t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) < 50
    assert torch.equal(w, torch.ones(1000))
    t2, _ = s.sample(1000, "cpu", generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, t2)
    s.update(t, torch.rand(1000))  # no-op
    assert isinstance(create_timestep_sampler("uniform", 5), UniformSampler)
    with pytest.raises(ValueError):
        create_timestep_sampler("fixstep", 5)


def test_loss_aware_uniform_before_warmup():
    T = 20
    s = LossAwareSampler(T)
    torch.testing.assert_close(s.probabilities(), torch.full((T,), 1.0 / T, dtype=torch.float64))
    # partially filled (every t but the last has a full history): still uniform
    t = torch.arange(T - 1).repeat(10)
    s.update(t, (t + 1.0) * 100)
    assert not s.warmed_up()
    torch.testing.assert_close(s.probabilities(), torch.full((T,), 1.0 / T, dtype=torch.float64))
    _, w = s.sample(64, "cpu", generator=torch.Generator().manual_seed(1))
    assert torch.equal(w, torch.ones(64))


def test_loss_aware_oversamples_high_loss_and_is_unbiased():
    T = 10
    s = LossAwareSampler(T)
    loss = torch.arange(1, T + 1, dtype=torch.float64) ** 2  # high loss at large t
    _fill(s, lambda t: loss[t])
    assert s.warmed_up()
    p = s.probabilities()
    expected = loss / loss.sum() * (1 - 0.001) + 0.001 / T  # RMS of a constant history is the loss itself
    torch.testing.assert_close(p, expected)
    assert bool((p[1:] > p[:-1]).all())

    g = torch.Generator().manual_seed(0)
    n = 200_000
    t, w = s.sample(n, "cpu", generator=g)
    freq = torch.bincount(t, minlength=T).double() / n
    torch.testing.assert_close(freq, p, atol=4e-3, rtol=0)
    torch.testing.assert_close(w.double(), 1.0 / (T * p[t]), rtol=1e-6, atol=0)
    # unbiased: E_p[w * L] = (1/T) sum_t L(t) exactly, and the Monte Carlo estimate agrees
    assert float((p * (1.0 / (T * p)) * loss).sum()) == pytest.approx(float(loss.mean()), rel=1e-12)
    assert float((w.double() * loss[t]).mean()) == pytest.approx(float(loss.mean()), rel=0.02)


def test_loss_aware_history_is_a_sliding_window():
    s = LossAwareSampler(3, history_per_term=4)
    for value in range(1, 7):
        s.update(torch.tensor([1]), torch.tensor([float(value)]))
    assert s.loss_counts.tolist() == [0, 4, 0]
    assert s.loss_history[1].tolist() == [3.0, 4.0, 5.0, 6.0]
    zero = LossAwareSampler(4)
    _fill(zero, lambda t: torch.zeros(t.shape))
    assert torch.isfinite(zero.probabilities()).all()  # all-zero history: uniform, not NaN


def test_loss_aware_state_dict_round_trip_is_bit_exact():
    T = 16
    a = LossAwareSampler(T)
    gen = torch.Generator().manual_seed(5)
    _fill(a, lambda t: torch.rand(t.shape, generator=gen) + t)
    a.update(torch.tensor([3, 3, 7]), torch.tensor([9.0, 8.0, 0.5]))
    b = LossAwareSampler(T)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # as trainer_state.json holds it
    assert torch.equal(a.probabilities(), b.probabilities())
    ga, gb = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for _ in range(3):
        ta, wa = a.sample(32, "cpu", generator=ga)
        tb, wb = b.sample(32, "cpu", generator=gb)
        assert torch.equal(ta, tb) and torch.equal(wa, wb)
        losses = ta.double() * 0.37 + 1
        a.update(ta, losses)
        b.update(tb, losses)
    assert torch.equal(a.loss_history, b.loss_history) and torch.equal(a.loss_counts, b.loss_counts)
    with pytest.raises(ValueError):
        LossAwareSampler(T + 1).load_state_dict(a.state_dict())


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        s = LossAwareSampler(6, history_per_term=3)
        g = torch.Generator().manual_seed(100 + rank)  # ranks draw different t
        for step in range(8):
            bs = 3 + rank  # unequal batch sizes across ranks
            t, _ = s.sample(bs, "cpu", generator=g)
            losses = t.double() + 0.1 * rank + step
            s.update(t, losses)
            torch.save((t, losses), os.path.join(out_dir, f"batch_{step}_{rank}.pt"))
        torch.save(s.state_dict(), os.path.join(out_dir, f"state_{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_loss_aware_ddp_all_gather(tmp_path):
    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    states = [torch.load(tmp_path / f"state_{r}.pt") for r in range(world)]
    assert states[0]["loss_history"] == states[1]["loss_history"]
    assert states[0]["loss_counts"] == states[1]["loss_counts"]
    # identical to a local sampler fed every rank's batch in rank order
    ref = LossAwareSampler(6, history_per_term=3)
    for step in range(8):
        for r in range(world):
            t, losses = torch.load(tmp_path / f"batch_{step}_{r}.pt")
            ref.update(t, losses)
    assert ref.loss_history.tolist() == states[0]["loss_history"]
    assert ref.loss_counts.tolist() == states[0]["loss_counts"]
