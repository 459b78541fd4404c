"""Self-conditioning: the denoiser's extra input, the no-grad first pass in training, the samplers' feedback."""
import pytest
import torch
from torch import nn

from mambadiff.config import load_config
from mambadiff.diffusion import GaussianDiffusion, sample_respaced
from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.denoiser import Denoiser, DenoiserConfig
from mambadiff.tasks.seq2seq import Seq2SeqConfig, self_condition_step

E = 8


def small_denoiser(self_condition=True):
    torch.manual_seed(0)
    cfg = DenoiserConfig(vocab_size=20, emb_dim=E, diffusion_steps=50, dropout=0.0, self_condition=self_condition,
                         backbone=BackboneConfig(name="transformer", d_model=16, n_layers=1, n_heads=2,
                                                 bidirectional=True))
    return Denoiser(cfg)


class Spy(nn.Module):
    """Wraps a denoiser and records (self_cond given, output) of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.emb_dim, self.calls = inner, inner.emb_dim, []

    def embed(self, ids):
        return self.inner.embed(ids)

    def logits(self, h):
        return self.inner.logits(h)

    def forward(self, x, t, mask=None, self_cond=None):
        out = self.inner(x, t, mask=mask, self_cond=self_cond)
        self.calls.append((self_cond, out.detach().clone()))
        return out


def test_denoiser_self_cond_input():
    model = small_denoiser().eval()
    x = torch.randn(2, 6, E)
    t = torch.tensor([3, 40])
    plain = model(x, t)
    torch.testing.assert_close(model(x, t, self_cond=torch.zeros_like(x)), plain, rtol=0, atol=0)
    with torch.no_grad():  # a trained (non-zero) projection makes the estimate matter
        model.self_cond_proj.weight.normal_()
    assert (model(x, t, self_cond=torch.randn_like(x)) - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="self_cond"):
        small_denoiser(self_condition=False)(x, t, self_cond=x)
    with pytest.raises(ValueError, match="shape"):
        model(x, t, self_cond=x[:, :3])


def test_gaussian_training_with_zeros_vs_estimate():
    diffusion = GaussianDiffusion.from_name("sqrt", 50)
    spy = Spy(small_denoiser())
    ids = torch.randint(5, 20, (2, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2)
    t = torch.tensor([5, 30])
    diffusion.training_losses(spy, ids, mask, t)
    assert len(spy.calls) == 1 and spy.calls[0][0] is None  # zeros: no estimate
    spy.calls.clear()
    losses = diffusion.training_losses(spy, ids, mask, t, self_condition=True)
    (first_in, first_out), (second_in, _) = spy.calls
    assert first_in is None and not second_in.requires_grad
    torch.testing.assert_close(second_in, first_out, rtol=0, atol=0)
    losses["loss"].mean().backward()  # the gradient flows through the second pass only
    assert spy.inner.self_cond_proj.weight.grad is not None


def test_gaussian_sampler_feeds_each_estimate_into_the_next_step():
    diffusion = GaussianDiffusion.from_name("sqrt", 50)
    spy = Spy(small_denoiser().eval())
    ids = torch.randint(5, 20, (2, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2)
    sample_respaced(diffusion, spy, ids, mask, steps=4, eta=1.0, clamp="logits",
                    generator=torch.Generator().manual_seed(0), self_condition=True)
    assert len(spy.calls) == 4 and spy.calls[0][0] is None
    for (_, out), (given, _) in zip(spy.calls, spy.calls[1:]):
        torch.testing.assert_close(given, out, rtol=0, atol=0)


def test_training_conditions_on_half_of_the_steps():
    cfg = load_config(Seq2SeqConfig, "demo", ["model.self_condition=true"])
    draws = [self_condition_step(cfg, torch.Generator().manual_seed(s)) for s in range(400)]
    assert 0.4 < sum(draws) / 400 < 0.6  # 400 fair coins: 4 sigma = 0.1
    off = load_config(Seq2SeqConfig, "demo", [])
    assert not any(self_condition_step(off, torch.Generator().manual_seed(s)) for s in range(20))
