"""Difformer-style embedding space: normalised rows, the noise factor as a scale, the identity default."""
import torch

from mambadiff.diffusion import GaussianDiffusion
from mambadiff.diffusion.embedding_space import EmbeddingSpace, embedding_space
from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.denoiser import Denoiser, DenoiserConfig


def model():
    torch.manual_seed(0)
    return Denoiser(DenoiserConfig(vocab_size=20, emb_dim=8, diffusion_steps=50, dropout=0.0,
                                   backbone=BackboneConfig(name="transformer", d_model=16, n_layers=1, n_heads=2)))


def test_default_is_the_model_itself():
    m = model()
    assert embedding_space(m, False, 1.0) is m
    assert isinstance(embedding_space(m, True, 1.0), EmbeddingSpace)


def test_normalised_rows_and_scaled_noise():
    m = model()
    with torch.no_grad():
        m.word_embedding.weight.mul_(torch.linspace(0.1, 10, 20)[:, None])  # rows of very different norms
    space = EmbeddingSpace(m, normalize=True, noise_factor=2.0)
    rows = space.embed(torch.arange(20)[None])[0] * 2.0  # (v, e) at the embedding's scale
    torch.testing.assert_close(rows.mean(-1), torch.zeros(20), rtol=0, atol=1e-5)
    torch.testing.assert_close(rows.var(-1, unbiased=False), torch.ones(20), rtol=5e-3, atol=0)  # layer_norm eps 1e-5
    # x_t on the scaled rows, read back at the embedding's scale, is the process with noise std F sqrt(1-ab)
    diffusion = GaussianDiffusion.from_name("sqrt", 50)
    ids = torch.randint(0, 20, (2, 5))
    t = torch.tensor([10, 40])
    eps = torch.randn(2, 5, 8)
    x_t = diffusion.q_sample(space.embed(ids), t, noise=eps) * 2.0
    s = diffusion.schedule
    x0 = space.embed(ids) * 2.0
    want = s.gather(s.sqrt_alphas_cumprod, t, x0) * x0 + 2.0 * s.gather(s.sqrt_one_minus_alphas_cumprod, t, x0) * eps
    torch.testing.assert_close(x_t, want, rtol=1e-5, atol=1e-5)
    # the head sees h at the embedding's scale
    h = torch.randn(3, 8)
    torch.testing.assert_close(space.logits(h), m.logits(2.0 * h), rtol=0, atol=0)
    torch.testing.assert_close(space.token_cross_entropy(h, torch.tensor([1, 2, 3])),
                               m.token_cross_entropy(2.0 * h, torch.tensor([1, 2, 3])), rtol=0, atol=0)
