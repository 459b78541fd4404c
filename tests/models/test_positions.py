"""The Transformer backbone's positions: every scheme keeps padding out of real positions and causal
stacks causal; rotary scores depend only on the offset between positions; absolute positions come at
the content's scale and, in the denoiser, before its input LayerNorm (DiffuSeq's order)."""
import pytest
import torch

from mambadiff.models.attention import rotate
from mambadiff.models.backbones import BackboneConfig, build_backbone
from mambadiff.models.denoiser import Denoiser, DenoiserConfig, timestep_embedding

SCHEMES = ["learned", "sinusoidal", "rotary", "none"]


def transformer(positions, bidirectional=True, **kw):
    torch.manual_seed(0)
    cfg = BackboneConfig(name="transformer", d_model=16, n_layers=2, n_heads=2, ff_dim=24, max_len=32,
                         bidirectional=bidirectional, pos_encoding=positions, **kw)
    return build_backbone(cfg).double().eval()


@pytest.mark.parametrize("positions", SCHEMES)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_never_changes_real_positions(positions, bidirectional):
    model = transformer(positions, bidirectional)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 16, generator=g, dtype=torch.float64)  # (b, l, d)
    mask = torch.arange(11)[None] < torch.tensor([11, 6, 2])[:, None]  # (b, l) right-padded
    with torch.no_grad():
        out = model(x, mask)  # (b, l, d)
        noisy = model(torch.where(mask[..., None], x, 5 * torch.randn_like(x)), mask)
        short = model(x[1:2, :6], None)  # row 1 alone, without its padding
    torch.testing.assert_close(out[mask], noisy[mask], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[1, :6], short[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("positions", SCHEMES)
def test_a_causal_transformer_ignores_the_future(positions):
    x = torch.randn(2, 9, 16, dtype=torch.float64)  # (b, l, d)
    later = x.clone()
    later[:, 6:] += torch.randn(2, 3, 16, dtype=torch.float64)  # not a constant shift: LayerNorm removes those
    with torch.no_grad():
        diff = (transformer(positions, False)(x) - transformer(positions, False)(later)).abs().amax(dim=(0, 2))
    assert diff[:6].max() < 1e-12 and diff[6:].min() > 1e-6


def test_rotary_scores_depend_only_on_the_offset():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 1, 1, 8, generator=g, dtype=torch.float64).expand(1, 1, 12, 8)  # one vector everywhere
    k = torch.randn(1, 1, 1, 8, generator=g, dtype=torch.float64).expand(1, 1, 12, 8)
    scores = (rotate(q) @ rotate(k).transpose(-1, -2))[0, 0]  # (l, l)
    for offset in range(-4, 5):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(torch.diagonal(scores, 0)[:1], torch.diagonal(scores, 3)[:1])  # offsets differ
    torch.testing.assert_close(rotate(q).norm(dim=-1), q.norm(dim=-1))  # a rotation: norms kept


def test_a_hybrid_with_rotary_attention_rotates_its_attention_layers():
    cfg = BackboneConfig(name="mamba2", d_model=16, n_layers=3, n_heads=2, ff_dim=24, bidirectional=True,
                         attn_layers=[1], pos_encoding="rotary").with_layer(d_state=8, headdim=8)
    assert type(build_backbone(cfg).mixers[1]).__name__ == "RotaryEncoderLayer"


def test_learned_positions_join_the_content_before_the_denoisers_layernorm():
    cfg = DenoiserConfig(vocab_size=40, emb_dim=8, diffusion_steps=10, dropout=0.0,
                         backbone=BackboneConfig(name="transformer", d_model=16, n_layers=1, n_heads=2, max_len=16))
    model = Denoiser(cfg).eval()
    assert 0.8 < float(model.backbone.pos.detach().std()) < 1.2  # the content's scale (N(0, 1) rows, as DiffuSeq's)
    seen = {}
    model.in_norm.register_forward_hook(lambda mod, inp, out: seen.setdefault("in", inp[0]))
    x = torch.randn(2, 6, 8)
    t = torch.tensor([3, 7])
    with torch.no_grad():
        model(x, t)
        temb = model.time_embed(timestep_embedding(t.float() * 100.0, 8))  # (b, d): T = 10 scaled to 1000
        expected = model.up_proj(x) + temb[:, None] + model.backbone.pos[:6]  # (b, l, d)
    torch.testing.assert_close(seen["in"], expected)
