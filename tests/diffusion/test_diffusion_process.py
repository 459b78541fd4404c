import math

import pytest
import torch
from torch import nn

from mambadiff.diffusion import GaussianDiffusion, NoiseSchedule


class TinyDenoiser(nn.Module):
    """Fake Denoiser: embedding table, tied head, forward returns a fixed tensor or a callable's value."""

    def __init__(self, weight: torch.Tensor, predict=None):
        super().__init__()
        self.emb = nn.Embedding(weight.shape[0], weight.shape[1], _weight=weight.clone())
        self.emb_dim = weight.shape[1]
        self.predict = predict
        self.calls = []

    def embed(self, input_ids):
        return self.emb(input_ids)

    def logits(self, h):
        return h @ self.emb.weight.T

    def forward(self, x_t, t, mask=None):
        self.calls.append((x_t.detach().clone(), t.clone(), None if mask is None else mask.clone()))
        out = self.predict(x_t, t) if callable(self.predict) else self.predict
        return out.expand_as(x_t) if out.shape != x_t.shape else out


def test_q_sample_keeps_source_and_noises_targets_with_right_variance():
    torch.manual_seed(0)
    diff = GaussianDiffusion.from_name("sqrt", 100)
    b, l, e = 4, 64, 256
    x0 = torch.randn(b, l, e)
    mask = torch.zeros(b, l, dtype=torch.long)
    mask[:, 20:] = 1
    for step in (0, 10, 50, 99):
        t = torch.full((b,), step)
        x_t = diff.q_sample(x0, t, input_mask=mask)
        src = mask == 0
        assert torch.equal(x_t[src], x0[src]), "source positions must be bit-identical"
        ab = float(diff.schedule.alphas_cumprod[step])
        resid = x_t[~src] - math.sqrt(ab) * x0[~src]  # the injected noise on targets
        n = resid.numel()  # ~180k samples: std of the variance estimate ~ 0.33%
        assert abs(float(resid.mean())) < 5 * math.sqrt((1 - ab) / n)
        assert float(resid.var()) == pytest.approx(1 - ab, rel=0.02)
    # explicit noise is used verbatim, and no mask noises everything
    noise = torch.randn(b, l, e)
    t = torch.full((b,), 30)
    ab = diff.schedule.alphas_cumprod[30].float()
    torch.testing.assert_close(diff.q_sample(x0, t, noise), ab.sqrt() * x0 + (1 - ab).sqrt() * noise)


def _tiny_problem():
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # (v=3, e=2)
    input_ids = torch.tensor([[0, 2, 1], [1, 1, 0]])  # (b=2, l=3)
    input_mask = torch.tensor([[0, 1, 1], [0, 0, 1]])
    g = torch.Generator().manual_seed(3)
    eps0 = torch.randn(2, 3, 2, generator=g)
    eps = torch.randn(2, 3, 2, generator=g)
    return weight, input_ids, input_mask, eps0, eps


@torch.no_grad()
def test_training_losses_oracle_gives_zero_mse():
    weight, input_ids, input_mask, eps0, eps = _tiny_problem()
    diff = GaussianDiffusion.from_name("sqrt", 10)
    std0 = math.sqrt(1 - float(diff.schedule.alphas_cumprod[0]))
    x_start = weight[input_ids] + std0 * eps0  # what DiffuSeq calls x_start: a sample of q(x0 | w)
    model = TinyDenoiser(weight, predict=x_start)
    out = diff.training_losses(model, input_ids, input_mask, torch.tensor([5, 9]), noise=eps, x_start_noise=eps0)
    assert set(out) == {"loss", "mse", "tT", "decoder_nll", "nll"}
    for v in out.values():
        assert v.shape == (2,)
    torch.testing.assert_close(out["mse"], torch.zeros(2), atol=1e-12, rtol=0)
    # t == 0 regresses onto the embedding mean instead: (x_start_mean - x_start)^2 = std0^2 eps0^2
    out0 = diff.training_losses(model, input_ids, input_mask, torch.tensor([0, 4]), noise=eps, x_start_noise=eps0)
    expected = (std0**2) * eps0[0].pow(2).mean()
    torch.testing.assert_close(out0["mse"][0], expected, rtol=1e-5, atol=0)
    assert float(out0["mse"][1]) < 1e-12


@torch.no_grad()
def test_training_losses_hand_computed():
    weight, input_ids, input_mask, eps0, eps = _tiny_problem()
    T = 4
    diff = GaussianDiffusion.from_name("cosine", T)
    ab = diff.schedule.alphas_cumprod.tolist()
    pred = torch.tensor([[[0.5, -0.2], [0.1, 0.3], [-0.4, 0.9]], [[1.0, 1.0], [0.0, -0.5], [0.2, 0.2]]])
    model = TinyDenoiser(weight, predict=pred)
    t = torch.tensor([0, 2])
    attention_mask = torch.tensor([[True, True, True], [True, True, False]])
    out = diff.training_losses(model, input_ids, input_mask, t, attention_mask=attention_mask, noise=eps,
                               x_start_noise=eps0)

    W = weight.tolist()
    std0 = math.sqrt(1 - ab[0])
    for i in range(2):
        ti = int(t[i])
        xs = [[W[int(input_ids[i, j])][k] + std0 * float(eps0[i, j, k]) for k in range(2)] for j in range(3)]
        mean = [[W[int(input_ids[i, j])][k] for k in range(2)] for j in range(3)]
        P = pred[i].tolist()
        target = mean if ti == 0 else xs
        mse = sum((target[j][k] - P[j][k]) ** 2 for j in range(3) for k in range(2)) / 6
        tT = sum((math.sqrt(ab[T - 1]) * xs[j][k]) ** 2 for j in range(3) for k in range(2)) / 6

        def ce(h, w_id):
            scores = [sum(h[k] * W[c][k] for k in range(2)) for c in range(3)]
            return math.log(sum(math.exp(s) for s in scores)) - scores[w_id]

        dec = sum(ce(xs[j], int(input_ids[i, j])) for j in range(3)) / 3  # ALL positions
        tgt = [j for j in range(3) if int(input_mask[i, j]) == 1]
        nll = sum(ce(P[j], int(input_ids[i, j])) for j in tgt) / len(tgt)  # target positions only
        assert float(out["mse"][i]) == pytest.approx(mse, rel=1e-5)
        assert float(out["tT"][i]) == pytest.approx(tT, rel=1e-5)
        assert float(out["decoder_nll"][i]) == pytest.approx(dec, rel=1e-5)
        assert float(out["nll"][i]) == pytest.approx(nll, rel=1e-5)
        assert float(out["loss"][i]) == pytest.approx(mse + dec + tT, rel=1e-5)

        # the model saw x_t: source = x_start (unnoised), targets = q_sample of x_start
        x_t, t_seen, mask_seen = model.calls[-1]
        for j in range(3):
            for k in range(2):
                if int(input_mask[i, j]) == 0:
                    assert float(x_t[i, j, k]) == pytest.approx(xs[j][k], rel=1e-6)
                else:
                    want = math.sqrt(ab[ti]) * xs[j][k] + math.sqrt(1 - ab[ti]) * float(eps[i, j, k])
                    assert float(x_t[i, j, k]) == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert torch.equal(model.calls[-1][1], t)
    assert torch.equal(model.calls[-1][2], attention_mask)  # forwarded verbatim


def test_training_losses_backprop_and_nll_guard():
    weight, input_ids, _, eps0, eps = _tiny_problem()
    diff = GaussianDiffusion.from_name("sqrt", 10)
    lin = nn.Linear(2, 2)
    model = TinyDenoiser(weight, predict=lambda x, t: lin(x))
    no_targets = torch.zeros_like(input_ids)
    out = diff.training_losses(model, input_ids, no_targets, torch.tensor([3, 7]), noise=eps, x_start_noise=eps0)
    assert torch.equal(out["nll"], torch.zeros(2))  # DiffuSeq would divide by zero here
    out["loss"].mean().backward()
    assert model.emb.weight.grad is not None and lin.weight.grad is not None


def test_training_losses_validation():
    weight, input_ids, input_mask, _, _ = _tiny_problem()
    diff = GaussianDiffusion(NoiseSchedule.from_name("sqrt", 10))
    model = TinyDenoiser(weight, predict=torch.zeros(2))
    with pytest.raises(ValueError, match="t must lie in"):
        diff.training_losses(model, input_ids, input_mask, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="t must be"):
        diff.training_losses(model, input_ids, input_mask, torch.tensor([0]))
    with pytest.raises(ValueError, match="input_mask"):
        diff.training_losses(model, input_ids, input_mask[:, :2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="noise"):
        diff.training_losses(model, input_ids, input_mask, torch.tensor([0, 1]), noise=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError):
        GaussianDiffusion("sqrt")


@torch.no_grad()
def test_training_on_a_respaced_schedule_feeds_original_timesteps():
    weight, input_ids, input_mask, _, _ = _tiny_problem()
    diff = GaussianDiffusion(NoiseSchedule.from_name("sqrt", 100).respace([0, 50, 99]))
    assert diff.num_timesteps == 3
    model = TinyDenoiser(weight, predict=torch.zeros(2))
    diff.training_losses(model, input_ids, input_mask, torch.tensor([1, 2]))
    assert model.calls[-1][1].tolist() == [50, 99]


def test_masked_token_nll_equals_masked_mean_of_full_cross_entropy():
    """token_nll with a mask sends only the masked positions through the head: same values."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(11, 4, generator=g)  # (v, e)
    model = TinyDenoiser(weight)
    x = torch.randn(3, 6, 4, generator=g, requires_grad=True)  # (b, l, e)
    ids = torch.randint(0, 11, (3, 6), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    got = GaussianDiffusion.token_nll(model, x, ids, mask=mask)  # (b,)
    ce = torch.nn.functional.cross_entropy((x @ weight.T).reshape(-1, 11), ids.reshape(-1),
                                           reduction="none").view(3, 6)
    m = mask.float()
    want = (ce * m).sum(-1) / m.sum(-1).clamp_min(1)
    torch.testing.assert_close(got, want)
    assert got.detach()[1].item() == 0.0  # no target positions: 0, not NaN
    gx, = torch.autograd.grad(got.sum(), x)
    assert torch.count_nonzero(gx[0, :2]) == 0 and torch.count_nonzero(gx[0, 2:5]) > 0


def _losses_with_a_learnable_prediction(**kwargs):
    """training_losses on the tiny problem with a prediction that has a gradient; kwargs go to it."""
    weight, input_ids, input_mask, eps0, eps = _tiny_problem()
    pred = torch.zeros(2, 3, 2, requires_grad=True)
    model = TinyDenoiser(weight, predict=lambda x_t, t: pred * 1.0)
    return GaussianDiffusion.from_name("sqrt", 10).training_losses(
        model, input_ids, input_mask, torch.tensor([3, 7]), noise=eps, x_start_noise=eps0, **kwargs)


def test_nll_grad_false_builds_no_graph_for_the_logged_nll():
    with_grad = _losses_with_a_learnable_prediction()
    without = _losses_with_a_learnable_prediction(nll_grad=False)
    assert with_grad["nll"].requires_grad and not without["nll"].requires_grad
    assert without["loss"].requires_grad
    for key in with_grad:
        torch.testing.assert_close(with_grad[key].detach(), without[key])


def test_with_nll_false_leaves_the_logged_nll_out_and_changes_nothing_else():
    full = _losses_with_a_learnable_prediction(nll_grad=False)
    lean = _losses_with_a_learnable_prediction(nll_grad=False, with_nll=False)
    assert "nll" in full and "nll" not in lean
    for key in lean:
        torch.testing.assert_close(full[key].detach(), lean[key].detach())
    # an optimised nll (nll_grad=True) is always computed
    assert _losses_with_a_learnable_prediction(with_nll=False)["nll"].requires_grad


def test_token_nll_uses_the_models_fused_cross_entropy_when_it_has_one():
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(9, 4, generator=g)
    plain = TinyDenoiser(weight)
    calls = []

    class Fused(TinyDenoiser):
        def token_cross_entropy(self, h, ids):
            calls.append(h.shape)
            return torch.nn.functional.cross_entropy(self.logits(h), ids, reduction="none")

    fused = Fused(weight)
    x = torch.randn(2, 5, 4, generator=g)
    ids = torch.randint(0, 9, (2, 5), generator=g)
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    for m in (None, mask):
        torch.testing.assert_close(GaussianDiffusion.token_nll(fused, x, ids, mask=m),
                                   GaussianDiffusion.token_nll(plain, x, ids, mask=m))
    assert calls == [torch.Size([10, 4]), torch.Size([7, 4])]


@torch.no_grad()
def test_soft_absorbing_state_noises_the_mask_embedding_and_targets_the_words():
    """DiffuSeq-v2: absorbed target positions enter q_sample as the [MASK] row; the mse still targets x0."""
    weight, input_ids, input_mask, eps0, eps = _tiny_problem()
    diff = GaussianDiffusion.from_name("sqrt", 10)
    t = torch.tensor([5, 9])
    std0 = math.sqrt(1 - float(diff.schedule.alphas_cumprod[0]))
    x_start = weight[input_ids] + std0 * eps0  # (b, l, e)
    absorb = torch.tensor([[False, True, False], [False, False, True]])
    model = TinyDenoiser(weight, predict=x_start)
    out = diff.training_losses(model, input_ids, input_mask, t, noise=eps, x_start_noise=eps0, absorb=absorb, mask_id=2)
    x_t = model.calls[-1][0]  # (b, l, e)
    noised = torch.where(absorb.unsqueeze(-1), weight[2].expand_as(x_start), x_start)
    torch.testing.assert_close(x_t, diff.q_sample(noised, t, noise=eps, input_mask=input_mask))
    assert not torch.allclose(x_t, diff.q_sample(x_start, t, noise=eps, input_mask=input_mask))
    torch.testing.assert_close(out["mse"], torch.zeros(2), atol=1e-12, rtol=0)  # the oracle of the words
    with pytest.raises(ValueError, match="absorb"):
        diff.training_losses(model, input_ids, input_mask, t, absorb=absorb)  # no mask_id
