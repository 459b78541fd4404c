"""Backbone registry options: gated MLP blocks (mlp_dim) and attention layers (attn_layers, a hybrid).

Properties checked on tiny float64 models: padding never changes real positions, causal stacks stay
causal, bidirectional ones are not, the layers are what the config says (counted parameters), and bad
options fail validation with the field's name.
"""
import pytest
import torch
from torch import nn

from mambadiff.models.backbones import BackboneConfig, GatedMLP, ResidualStack, build_backbone, count_parameters
from mambadiff.models.layer_options import H3Options, S4Options
from mambadiff.models.classifier import ClassifierConfig, SequenceClassifier
from mambadiff.models.denoiser import Denoiser, DenoiserConfig
from mambadiff.ssm import H3, S4


def _backbone(name="mamba2", bidirectional=True, **kw):
    torch.manual_seed(0)
    cfg = BackboneConfig(name=name, d_model=16, n_layers=3, n_heads=2, ff_dim=24, bidirectional=bidirectional,
                         **kw).with_layer(d_state=8, **({"headdim": 8} if name == "mamba2" else {}))
    return build_backbone(cfg).double().eval()


VARIANTS = [dict(mlp_dim=12), dict(attn_layers=[1]), dict(attn_layers=[0, 2], mlp_dim=12)]


@pytest.mark.parametrize("name", ["mamba", "mamba2", "s4d", "s4", "h3"])
@pytest.mark.parametrize("kw", VARIANTS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_never_changes_real_positions(name, kw, bidirectional):
    model = _backbone(name, bidirectional, **kw)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 16, generator=g, dtype=torch.float64)  # (b, l, d)
    mask = torch.arange(11)[None] < torch.tensor([11, 6, 2])[:, None]  # (b, l) right-padded
    with torch.no_grad():
        out = model(x, mask)  # (b, l, d)
        noisy = model(torch.where(mask[..., None], x, 5 * torch.randn_like(x)), mask)  # other padding content
        short = model(x[1:2, :6], None)  # row 1 alone, without its padding
    torch.testing.assert_close(out[mask], noisy[mask], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[1, :6], short[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw", VARIANTS)
def test_causal_stack_ignores_the_future_and_bidirectional_does_not(kw):
    x = torch.randn(2, 9, 16, dtype=torch.float64)  # (b, l, d)
    later = x.clone()
    later[:, 6:] += 1.0  # change only positions 6..8
    for bidirectional in (False, True):
        model = _backbone("mamba2", bidirectional, **kw)
        with torch.no_grad():
            diff = (model(x) - model(later)).abs().amax(dim=(0, 2))  # (l,)
        if bidirectional:
            assert diff[:6].min() > 1e-6  # earlier positions see the change
        else:
            assert diff[:6].max() < 1e-12  # causal: positions before 6 do not
        assert diff[6:].min() > 1e-6


def test_layers_are_what_the_config_says():
    plain = _backbone()
    mlp = _backbone(mlp_dim=12)
    hybrid = _backbone(attn_layers=[1])
    assert isinstance(hybrid.mixers[1], nn.TransformerEncoderLayer) and isinstance(hybrid.norms[1], nn.Identity)
    assert not isinstance(hybrid.mixers[0], nn.TransformerEncoderLayer)
    assert plain.mlps is None and all(isinstance(m, GatedMLP) for m in mlp.mlps)
    # a gated MLP of width m holds 3 d m weights, plus its RMSNorm's d
    assert count_parameters(mlp) - count_parameters(plain) == 3 * (3 * 16 * 12 + 16)
    # the hybrid's layer 1 is exactly one transformer layer in place of one SSM block (norm + mixer)
    layer = nn.TransformerEncoderLayer(16, 2, 24, batch_first=True, norm_first=True)
    ssm_block = count_parameters(plain.mixers[1]) + count_parameters(plain.norms[1])
    assert count_parameters(hybrid) == count_parameters(plain) - ssm_block + count_parameters(layer)
    # hybrid + MLP: no MLP on the attention layer (it has its own FFN)
    both = _backbone(attn_layers=[1], mlp_dim=12)
    assert isinstance(both.mlps[1], nn.Identity) and isinstance(both.mlps[0], GatedMLP)


def test_plain_stack_state_dict_keys_unchanged():
    # checkpoints of plain SSM stacks (saved before these options existed) must still load
    keys = set(_backbone().state_dict())
    assert not any(k.startswith(("mlps.", "mlp_norms.")) for k in keys)
    assert {"norms.0.weight", "final_norm.weight"} <= keys


def test_hybrid_gradients_reach_every_parameter():
    model = _backbone(attn_layers=[1], mlp_dim=12).train()
    model(torch.randn(2, 7, 16, dtype=torch.float64)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("kw,field", [
    (dict(mlp_dim=-1), "mlp_dim"),
    (dict(attn_layers=[3]), "attn_layers"),
    (dict(attn_layers=[1, 1]), "attn_layers"),
    (dict(attn_layers=[0], n_heads=3), "n_heads"),
    (dict(name="transformer", mlp_dim=8), "mlp_dim"),
    (dict(name="lstm", attn_layers=[0]), "attn_layers"),
    (dict(name="h3", h3=H3Options(head_dim=5)), "backbone.h3: .*head_dim"),
    (dict(name="s4", s4=S4Options(d_state=7)), "backbone.s4: d_state"),
])
def test_bad_options_name_the_field(kw, field):
    cfg = BackboneConfig(**{"name": "mamba2", "d_model": 16, "n_layers": 3, **kw})
    with pytest.raises(ValueError, match=field):
        cfg.validate()


def test_stack_refuses_attention_layers_without_a_builder():
    with pytest.raises(ValueError, match="make_attention"):
        ResidualStack(8, lambda: nn.Identity(), 2, 0.0, attn_layers=[0])


@pytest.mark.parametrize("name,layer_type", [("s4", S4), ("h3", H3)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_s4_and_h3_stacks_are_causal_or_not_as_configured(name, layer_type, bidirectional):
    model = _backbone(name, bidirectional)
    inner = model.mixers[0].forward_layer if bidirectional else model.mixers[0]
    assert isinstance(inner, layer_type)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    later = x.clone()
    later[:, 6:] += 1.0
    with torch.no_grad():
        diff = (model(x) - model(later)).abs().amax(dim=(0, 2))  # (l,)
    if bidirectional:
        assert diff[:6].min() > 1e-6
    else:
        assert diff[:6].max() < 1e-12
    assert diff[6:].min() > 1e-6


@pytest.mark.parametrize("name", ["s4", "h3"])
def test_tiny_denoiser_and_classifier_train_with_s4_and_h3(name):
    torch.manual_seed(0)
    backbone = BackboneConfig(name=name, d_model=16, n_layers=2, bidirectional=True,
                              s4=S4Options(d_state=8, l_max=32), h3=H3Options(d_state=8))
    denoiser = Denoiser(DenoiserConfig(vocab_size=30, emb_dim=8, diffusion_steps=10, dropout=0.0, backbone=backbone))
    classifier = SequenceClassifier(ClassifierConfig(vocab_size=30, num_classes=3, dropout=0.0, backbone=backbone))
    mask = torch.arange(12)[None] < torch.tensor([12, 7])[:, None]  # (b, l)
    x_t = torch.randn(2, 12, 8)
    out = denoiser(x_t, torch.tensor([3, 9]), mask)  # (b, l, e)
    assert out.shape == (2, 12, 8) and torch.isfinite(out).all()
    out.square().mean().backward()
    logits = classifier(torch.randint(0, 30, (2, 12)), mask)  # (b, c)
    assert logits.shape == (2, 3)
    nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    for model in (denoiser, classifier):
        grads = [p.grad for p in model.backbone.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
