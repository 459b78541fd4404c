import math

import pytest
import torch

from mambadiff.diffusion import NoiseSchedule, ScheduleConfig, named_betas, space_timesteps


def test_sqrt_schedule_values():
    T = 2000
    s = NoiseSchedule.from_name("sqrt", T)
    assert s.num_timesteps == T
    for name in ("betas", "alphas_cumprod", "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2"):
        table = getattr(s, name)
        assert table.shape == (T,) and table.dtype == torch.float64, name
    assert bool((s.betas > 0).all()) and bool((s.betas <= 0.999).all())
    assert float(s.betas[-1]) == 0.999  # alpha_bar(1) = 1 - sqrt(1.0001) < 0: the cap bites at the end only
    assert bool((s.betas[:-1] < 0.999).all())
    ab = s.alphas_cumprod
    assert bool((ab[1:] < ab[:-1]).all()), "alpha_bar must be strictly decreasing"

    # betas from consecutive ratios telescope: alpha_bar[t] = f((t+1)/T) / f(0), f(s) = 1 - sqrt(s + 1e-4)
    f = lambda x: 1.0 - math.sqrt(x + 1e-4)  # noqa: E731
    expected = torch.tensor([f((t + 1) / T) / f(0.0) for t in range(T - 1)], dtype=torch.float64)
    torch.testing.assert_close(ab[:-1], expected, rtol=1e-10, atol=0)
    # the continuous curve starts at 1 - sqrt(1e-4) = 0.99; the first discrete step is one step in.
    assert abs(f(0.0) - 0.99) < 1e-12
    assert 0.98 < float(ab[0]) < 0.99
    assert float(ab[-1]) < 1e-6


@pytest.mark.parametrize("name", ["linear", "cosine", "sqrt"])
def test_named_schedules_shapes_and_ranges(name):
    for T in ((21, 100, 1000) if name == "linear" else (1, 10, 1000)):
        betas = named_betas(name, T)
        assert betas.shape == (T,) and betas.dtype == torch.float64
        assert bool((betas > 0).all()) and bool((betas <= 0.999).all())
    s = NoiseSchedule.from_name(name, 1000)
    assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all())


def test_linear_endpoints_scale_with_T():
    with pytest.raises(ValueError, match="linear schedule needs"):
        named_betas("linear", 20)  # last beta would be 1.0
    b = named_betas("linear", 2000)
    assert float(b[0]) == pytest.approx(0.5 * 1e-4) and float(b[-1]) == pytest.approx(0.5 * 0.02)


def test_cosine_alpha_bar():
    T = 100
    s = NoiseSchedule.from_name("cosine", T)
    g = lambda x: math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([g((t + 1) / T) / g(0.0) for t in range(T - 1)], dtype=torch.float64)
    torch.testing.assert_close(s.alphas_cumprod[:-1], expected, rtol=1e-10, atol=1e-15)


def test_posterior_matches_bayes_rule():
    """Posterior of q(x_{t-1}|x_t,x0) from Gaussian conjugacy, derived independently of the tables."""
    s = NoiseSchedule.from_name("sqrt", 200)
    ab_prev, alpha, beta = s.alphas_cumprod_prev, s.alphas, s.betas
    # prior x_{t-1} ~ N(sqrt(ab_prev) x0, 1 - ab_prev); likelihood x_t ~ N(sqrt(alpha) x_{t-1}, beta)
    t = torch.arange(1, 200)
    precision = 1.0 / (1.0 - ab_prev[t]) + alpha[t] / beta[t]
    var = 1.0 / precision
    torch.testing.assert_close(s.posterior_variance[t], var, rtol=1e-9, atol=0)
    torch.testing.assert_close(s.posterior_mean_coef1[t], var * ab_prev[t].sqrt() / (1.0 - ab_prev[t]), rtol=1e-9, atol=0)
    torch.testing.assert_close(s.posterior_mean_coef2[t], var * alpha[t].sqrt() / beta[t], rtol=1e-9, atol=0)
    # at t = 0 the posterior is the point mass at x0
    assert float(s.posterior_variance[0]) == 0.0
    assert float(s.posterior_mean_coef1[0]) == pytest.approx(1.0, abs=1e-12)
    assert float(s.posterior_mean_coef2[0]) == 0.0
    # DiffuSeq's fixed-large reverse variance: betas, with index 0 replaced by posterior_variance[1]
    assert float(s.model_variance_large[0]) == float(s.posterior_variance[1])
    assert torch.equal(s.model_variance_large[1:], s.betas[1:])


def test_space_timesteps():
    assert space_timesteps(2000, 2000) == list(range(2000))
    assert space_timesteps(2000, 1) == [1999]
    assert space_timesteps(10, 2) == [0, 9]
    for T, K in [(2000, 10), (2000, 200), (2000, 1999), (7, 3), (50, 49)]:
        kept = space_timesteps(T, K)
        assert len(kept) == K and kept[0] == 0 and kept[-1] == T - 1
        assert all(a < b for a, b in zip(kept, kept[1:]))
    for bad in (0, 11, 2.0, True):
        with pytest.raises(ValueError):
            space_timesteps(10, bad)


def test_respace_keeps_real_noise_levels():
    s = NoiseSchedule.from_name("sqrt", 2000)
    full = s.respace(range(2000))
    for name in ("betas", "alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2", "posterior_variance",
                 "model_variance_large"):
        assert torch.equal(getattr(full, name), getattr(s, name)), name
    kept = space_timesteps(2000, 10)
    r = s.respace(kept)
    assert r.timesteps.tolist() == kept
    torch.testing.assert_close(r.alphas_cumprod, s.alphas_cumprod[kept], rtol=1e-10, atol=0)
    torch.testing.assert_close(r.alphas_cumprod_prev[1:], s.alphas_cumprod[kept[:-1]], rtol=1e-10, atol=0)
    assert float(r.alphas_cumprod_prev[0]) == 1.0
    # respacing composes and maps back to ORIGINAL timesteps
    rr = r.respace([0, 5, 9])
    assert rr.timesteps.tolist() == [kept[0], kept[5], kept[9]]
    torch.testing.assert_close(rr.alphas_cumprod, s.alphas_cumprod[rr.timesteps], rtol=1e-10, atol=0)
    for bad in ([3, 2], [], [0, 2000], [-1]):
        with pytest.raises(ValueError):
            s.respace(bad)


def test_gather_shape_dtype():
    s = NoiseSchedule.from_name("sqrt", 10)
    t = torch.tensor([0, 9, 3])
    out = s.gather(s.sqrt_alphas_cumprod, t, torch.zeros(3, 4, 5))
    assert out.shape == (3, 1, 1) and out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), s.sqrt_alphas_cumprod[t].float())
    out64 = s.gather(s.sqrt_alphas_cumprod, t, torch.zeros(3, 2, dtype=torch.float64))
    assert out64.shape == (3, 1) and torch.equal(out64.flatten(), s.sqrt_alphas_cumprod[t])
    assert s.gather(s.betas, t, torch.zeros(3, 2, dtype=torch.bfloat16)).dtype == torch.float32


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        named_betas("quadratic", 10)
    with pytest.raises(ValueError):
        named_betas("sqrt", 0)
    with pytest.raises(ValueError):
        NoiseSchedule(torch.tensor([0.1, 0.0]))
    assert ScheduleConfig().build().num_timesteps == 2000
