import math

import pytest
import torch
from torch import nn

from mambadiff.diffusion import (
    GaussianDiffusion,
    embedding_matrix,
    round_to_vocab,
    sample_ancestral,
    sample_respaced,
    space_timesteps,
)

V, E = 10, 8


def _vocab_weight(seed: int = 0) -> torch.Tensor:
    # rows of equal norm: the tied head's argmax of w_i . w_j is then i itself
    w = torch.randn(V, E, generator=torch.Generator().manual_seed(seed))
    return 2.0 * w / w.norm(dim=-1, keepdim=True)


class FakeDenoiser(nn.Module):
    """Denoiser contract with a tied head. ``oracle`` (b, l, e): always predict it; else a small net."""

    def __init__(self, oracle: torch.Tensor | None = None, record: bool = False):
        super().__init__()
        self.emb = nn.Embedding(V, E, _weight=_vocab_weight())
        self.emb_dim = E
        self.net = nn.Linear(E + 1, E)
        self.oracle = oracle
        self.record = record
        self.seen = []  # (t, x_t) per call

    def embed(self, input_ids):
        return self.emb(input_ids)

    def logits(self, h):
        return h @ self.emb.weight.T

    def forward(self, x_t, t, mask=None):
        if self.record:
            self.seen.append((t.clone(), x_t.clone()))
        if self.oracle is not None:
            return self.oracle.clone()
        tt = (t.float() / 100.0)[:, None, None].expand(*x_t.shape[:2], 1)
        return 3.0 * torch.tanh(self.net(torch.cat([x_t, tt], dim=-1)))


def _batch(b=3, l=6, n_src=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, V, (b, l), generator=g)
    input_mask = torch.zeros(b, l, dtype=torch.long)
    input_mask[:, n_src:] = 1
    return input_ids, input_mask


def test_round_to_vocab_and_embedding_matrix():
    model = FakeDenoiser()
    w = embedding_matrix(model)
    assert torch.equal(w, model.emb.weight)
    x = w[torch.tensor([[3, 1], [0, 9]])] + 0.01 * torch.randn(2, 2, E)
    assert torch.equal(round_to_vocab(x, w), w[torch.tensor([[3, 1], [0, 9]])])
    brute = ((x.reshape(-1, 1, E) - w.reshape(1, V, E)) ** 2).sum(-1).argmin(-1)
    assert torch.equal(round_to_vocab(x, w), w[brute].view_as(x))


@pytest.mark.parametrize("run", ["ancestral", "respaced_ddim", "respaced_eta1"])
def test_source_positions_are_the_clean_source_embeddings(run):
    diff = GaussianDiffusion.from_name("sqrt", 40)
    model = FakeDenoiser()
    input_ids, input_mask = _batch()
    g = torch.Generator().manual_seed(0)
    if run == "ancestral":
        out = sample_ancestral(diff, model, input_ids, input_mask, generator=g)
    else:
        out = sample_respaced(diff, model, input_ids, input_mask, steps=7, eta=1.0 if run.endswith("1") else 0.0,
                              generator=g)
    assert out.embeddings.shape == (3, 6, E) and out.token_ids.shape == (3, 6)
    src = input_mask == 0
    assert torch.equal(out.embeddings[src], model.embed(input_ids)[src])
    assert torch.equal(out.token_ids[src], input_ids[src])
    assert not out.embeddings.requires_grad  # no_grad


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_respaced_with_all_steps_equals_ancestral(variance):
    T = 30
    diff = GaussianDiffusion.from_name("sqrt", T)
    model = FakeDenoiser()
    input_ids, input_mask = _batch()
    a = sample_ancestral(diff, model, input_ids, input_mask, generator=torch.Generator().manual_seed(4),
                         variance=variance)
    r = sample_respaced(diff, model, input_ids, input_mask, steps=T, eta=1.0, generator=torch.Generator().manual_seed(4),
                        variance=variance)
    assert torch.equal(a.embeddings, r.embeddings) and torch.equal(a.token_ids, r.token_ids)
    # and the seed matters (the sampler is stochastic)
    c = sample_ancestral(diff, model, input_ids, input_mask, generator=torch.Generator().manual_seed(5),
                         variance=variance, clamp=None)
    assert not torch.equal(a.embeddings, c.embeddings)


@pytest.mark.parametrize("clamp", ["round", None])
def test_oracle_model_recovers_the_target(clamp):
    diff = GaussianDiffusion.from_name("sqrt", 50)
    input_ids, input_mask = _batch(b=4, l=7, n_src=3, seed=2)
    oracle = _vocab_weight()[input_ids]  # true x0 of the fixed target (and of the source)
    model = FakeDenoiser(oracle=oracle)
    runs = [
        sample_ancestral(diff, model, input_ids, input_mask, clamp=clamp, generator=torch.Generator().manual_seed(0)),
        sample_respaced(diff, model, input_ids, input_mask, steps=5, eta=0.0, clamp=clamp),
        sample_respaced(diff, model, input_ids, input_mask, steps=5, eta=1.0, clamp=clamp,
                        generator=torch.Generator().manual_seed(0)),
        sample_respaced(diff, model, input_ids, input_mask, steps=1, eta=0.5, clamp=clamp),
    ]
    for out in runs:
        assert torch.equal(out.token_ids, input_ids)
        torch.testing.assert_close(out.embeddings, oracle, atol=1e-5, rtol=0)


def test_respaced_model_sees_kept_original_timesteps_and_their_noise_levels():
    """DDIM (eta 0) with an exact x0 keeps x_t on sqrt(ab[tau]) x0 + sqrt(1 - ab[tau]) eps for ONE eps,
    at the REAL noise level of each kept step tau; DiffuSeq's strided DDIM would use ab[tau - 1]."""
    T, K = 200, 8
    diff = GaussianDiffusion.from_name("sqrt", T)
    input_ids, input_mask = _batch(b=2, l=5, n_src=1)
    x0 = _vocab_weight()[input_ids]
    model = FakeDenoiser(oracle=x0, record=True)
    sample_respaced(diff, model, input_ids, input_mask, steps=K, eta=0.0, clamp=None,
                    generator=torch.Generator().manual_seed(1))
    kept = space_timesteps(T, K)
    seen_t = [int(t[0]) for t, _ in model.seen]
    assert seen_t == kept[::-1]
    assert all(bool((t == t[0]).all()) for t, _ in model.seen)
    ab = diff.schedule.alphas_cumprod
    tgt = input_mask.bool()
    eps = None
    for (t, x), tau in zip(model.seen, kept[::-1]):
        resid = ((x - ab[tau].sqrt().float() * x0) / (1 - ab[tau]).sqrt().float())[tgt]
        if eps is None:
            eps = resid
        torch.testing.assert_close(resid, eps, atol=2e-5, rtol=1e-5)
        if tau != kept[-1]:
            # the t-1 level (DiffuSeq's) would NOT be consistent: make sure the test can tell them apart
            wrong = ((x - ab[tau - 1].sqrt().float() * x0) / (1 - ab[tau - 1]).sqrt().float())[tgt]
            assert (wrong - eps).abs().max() > 1e-3


def test_respaced_stochastic_marginals_match_forward_process():
    """eta = 1, fixed_small, oracle x0: the posterior chain's marginal at kept step tau is q(x_tau | x0)."""
    T, K = 200, 6
    diff = GaussianDiffusion.from_name("sqrt", T)
    b, l = 64, 16
    input_ids, input_mask = _batch(b=b, l=l, n_src=1, seed=3)
    x0 = _vocab_weight()[input_ids]
    model = FakeDenoiser(oracle=x0, record=True)
    sample_respaced(diff, model, input_ids, input_mask, steps=K, eta=1.0, variance="fixed_small", clamp=None,
                    generator=torch.Generator().manual_seed(7))
    ab = diff.schedule.alphas_cumprod
    tgt = input_mask.bool()
    for (t, x), tau in zip(model.seen, space_timesteps(T, K)[::-1]):
        noise = (x - ab[tau].sqrt().float() * x0)[tgt]  # ~ N(0, 1 - ab[tau]) if the levels are right
        n = noise.numel()  # 7680 samples: std of the variance estimate ~1.6%
        assert float(noise.var()) == pytest.approx(1 - float(ab[tau]), rel=0.07), tau
        assert abs(float(noise.mean())) < 5 * math.sqrt((1 - float(ab[tau])) / n)


def test_reproducible_with_generator_and_eta0_deterministic_given_noise():
    diff = GaussianDiffusion.from_name("sqrt", 100)
    model = FakeDenoiser()
    input_ids, input_mask = _batch()
    a = sample_respaced(diff, model, input_ids, input_mask, steps=10, eta=0.3, generator=torch.Generator().manual_seed(9))
    b = sample_respaced(diff, model, input_ids, input_mask, steps=10, eta=0.3, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.embeddings, b.embeddings)
    # eta = 0 draws only the initial noise: afterwards the generator is where one (b, l, e) draw leaves it
    g = torch.Generator().manual_seed(9)
    sample_respaced(diff, model, input_ids, input_mask, steps=10, eta=0.0, generator=g)
    h = torch.Generator().manual_seed(9)
    torch.randn(3, 6, E, generator=h)
    assert torch.equal(g.get_state(), h.get_state())
    out = sample_ancestral(diff, model, input_ids, input_mask, progress=True, generator=torch.Generator().manual_seed(0))
    assert out.token_ids.dtype == torch.long


def test_sampler_validation():
    diff = GaussianDiffusion.from_name("sqrt", 20)
    model = FakeDenoiser()
    input_ids, input_mask = _batch()
    with pytest.raises(ValueError, match="steps"):
        sample_respaced(diff, model, input_ids, input_mask, steps=21)
    with pytest.raises(ValueError, match="eta"):
        sample_respaced(diff, model, input_ids, input_mask, steps=5, eta=1.5)
    with pytest.raises(ValueError, match="clamp"):
        sample_ancestral(diff, model, input_ids, input_mask, clamp="clip")
    with pytest.raises(ValueError, match="variance"):
        sample_ancestral(diff, model, input_ids, input_mask, variance="learned")
    with pytest.raises(ValueError, match="input_mask"):
        sample_ancestral(diff, model, input_ids, input_mask[:, :3])


# ---- DPM-Solver++ ------------------------------------------------------------------------------
class GaussianDataOracle(FakeDenoiser):
    """The exact x0 predictor E[x0 | x_t] for data x0 ~ N(0, s^2 I): alpha s^2 x_t / (alpha^2 s^2 + sigma^2)."""

    def __init__(self, diffusion, scale=1.5):
        super().__init__()
        self.ab = diffusion.schedule.alphas_cumprod.to(torch.float64)  # (T,)
        self.scale = scale

    def forward(self, x_t, t, mask=None):
        ab = self.ab[t][:, None, None]  # (b, 1, 1)
        s2 = self.scale**2
        return ab.sqrt() * s2 * x_t / (ab * s2 + (1 - ab))


def test_dpm_solver_order_1_is_ddim():
    """First-order DPM-Solver++ with x0 prediction is DDIM (eta 0) step for step."""
    from mambadiff.diffusion import sample_dpm_solver
    diffusion = GaussianDiffusion.from_name("sqrt", 200)
    ids, imask = _batch()
    model = FakeDenoiser()
    ddim = sample_respaced(diffusion, model, ids, imask, steps=10, eta=0.0, clamp=None,
                           generator=torch.Generator().manual_seed(3))
    dpm1 = sample_dpm_solver(diffusion, model, ids, imask, steps=10, order=1, clamp=None,
                             generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(dpm1.embeddings, ddim.embeddings, rtol=1e-4, atol=1e-5)


def test_dpm_solver_order_2_follows_the_ode_closer_than_ddim():
    """On Gaussian data with the exact x0 predictor, 8 steps of the second-order solver end nearer the
    probability-flow ODE's solution (DDIM with 1,000 steps) than 8 DDIM steps do, and it keeps the
    source positions clean."""
    from mambadiff.diffusion import sample_dpm_solver
    diffusion = GaussianDiffusion.from_name("cosine", 1000)
    ids, imask = _batch(b=16, l=8)
    model = GaussianDataOracle(diffusion).double()
    run = lambda fn, **kw: fn(diffusion, model, ids, imask, clamp=None,  # noqa: E731
                              generator=torch.Generator().manual_seed(5), **kw).embeddings.double()
    reference = run(sample_respaced, steps=1000, eta=0.0)
    target = imask.bool()
    err_ddim = (run(sample_respaced, steps=8, eta=0.0) - reference)[target].norm()
    err_dpm2 = (run(sample_dpm_solver, steps=8, order=2) - reference)[target].norm()
    assert err_dpm2 < 0.5 * err_ddim, (err_dpm2, err_ddim)
    out = sample_dpm_solver(diffusion, model, ids, imask, steps=8, clamp="round")
    torch.testing.assert_close(out.embeddings[~target], model.embed(ids)[~target].to(out.embeddings.dtype))
    assert out.token_ids.shape == ids.shape
    with pytest.raises(ValueError, match="order"):
        sample_dpm_solver(diffusion, model, ids, imask, steps=8, order=3)
