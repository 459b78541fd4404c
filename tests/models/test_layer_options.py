"""The backbone config's per-layer sections (``backbone.mamba``, ``.mamba2``, ``.s4d``, ``.s4``, ``.h3``).

Checked through the real config path (a YAML file and ``key=value`` overrides of ``Seq2SeqConfig``):
every field of every layer config reaches the built layer; unknown keys, wrong types and the old flat
keys are refused with the key named; S4's kernel length is ``s4.l_max``; a config saved in the old
flat layout builds the same model as the current layout.
"""
import dataclasses

import pytest
import torch
import yaml

from mambadiff.config import ConfigError, from_dict, load_config
from mambadiff.models.backbones import BackboneConfig, build_backbone
from mambadiff.models.layer_options import FLAT_OPTIONS, LAYER_KINDS
from mambadiff.tasks.seq2seq import Seq2SeqConfig

# A valid value other than the backbone's default, where doubling the default (numbers) or negating it
# (bools) does not give one. A field added to a layer config gets the generic value; if that is not
# valid for its layer (or it is a string), add it here.
NON_DEFAULT = {"dt_rank": 3, "dt_init": "constant", "scan_backend": "reference", "algorithm": "chunked",
               "discretization": "zoh", "init": "inv", "A_init_range": (2.0, 8.0)}


def _option_fields(kind):
    return [f for f in dataclasses.fields(kind.config) if f.name != "d_model"]


def _non_default_options(kind) -> dict:
    defaults = kind.options()
    options = {}
    for f in _option_fields(kind):
        default = getattr(defaults, f.name)
        if f.name in NON_DEFAULT:
            value = NON_DEFAULT[f.name]
        elif isinstance(default, bool):
            value = not default
        elif isinstance(default, (int, float)):
            value = default * 2
        else:
            raise AssertionError(f"no non-default value for {kind.config.__name__}.{f.name}: add one to NON_DEFAULT")
        assert value != default, (kind.config.__name__, f.name)
        options[f.name] = value
    return options


def _layer(backbone: BackboneConfig):
    mixer = build_backbone(backbone).mixers[0]
    return getattr(mixer, "forward_layer", mixer)  # the layer itself, also inside Bidirectional


def _override(key: str, value) -> str:
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, tuple):
        value = "[" + ",".join(map(str, value)) + "]"
    return f"{key}={value}"


@pytest.mark.parametrize("name", sorted(LAYER_KINDS))
def test_the_section_has_every_field_of_the_layer_config(name):
    kind = LAYER_KINDS[name]
    assert [f.name for f in dataclasses.fields(kind.options)] == [f.name for f in _option_fields(kind)]
    assert dataclasses.fields(BackboneConfig(name=name).layer_options) == dataclasses.fields(kind.options)


@pytest.mark.parametrize("name", sorted(LAYER_KINDS))
@pytest.mark.parametrize("path", ["yaml", "overrides"])
def test_every_layer_option_reaches_the_built_layer(name, path, tmp_path):
    options = _non_default_options(LAYER_KINDS[name])
    shape = {"name": name, "d_model": 32, "n_layers": 1, "bidirectional": False}
    if path == "yaml":
        section = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
        file = tmp_path / "cfg.yaml"
        file.write_text(yaml.safe_dump({"model": {"backbone": {**shape, name: section}}}))
        cfg = load_config(Seq2SeqConfig, file)
    else:
        cfg = load_config(Seq2SeqConfig, None, [_override(f"model.backbone.{k}", v) for k, v in shape.items()] +
                          [_override(f"model.backbone.{name}.{k}", v) for k, v in options.items()])
    layer_cfg = _layer(cfg.model.backbone).config
    assert isinstance(layer_cfg, LAYER_KINDS[name].config) and layer_cfg.d_model == 32
    for field_name, value in options.items():
        assert getattr(layer_cfg, field_name) == value, field_name


def test_unknown_layer_option_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.backbone\.mamba2\.head_dim"):
        load_config(Seq2SeqConfig, None, ["model.backbone.mamba2.head_dim=16"])
    file = tmp_path / "cfg.yaml"
    file.write_text("model:\n  backbone:\n    name: s4\n    s4:\n      l_max: 64\n      lmax: 64\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml line 6, key 'model\.backbone\.s4\.lmax'"):
        load_config(Seq2SeqConfig, file)
    with pytest.raises(ConfigError, match=r"model\.backbone\.s4\.l_max.*could not be converted"):
        load_config(Seq2SeqConfig, None, ["model.backbone.s4.l_max=long"])
    with pytest.raises(ConfigError, match=r"model\.backbone\.mamba\.dt_rank"):
        load_config(Seq2SeqConfig, None, ["model.backbone.mamba.dt_rank=0.5"])


@pytest.mark.parametrize("key", sorted(FLAT_OPTIONS))
def test_old_flat_keys_are_refused_in_yaml_and_overrides(key):
    # only saved run configs are upgraded; a config file or override uses the current keys
    with pytest.raises(ConfigError, match=rf"model\.backbone\.{key}"):
        load_config(Seq2SeqConfig, None, [f"model.backbone.{key}=8"])


def test_a_bad_layer_option_fails_validation_with_the_section_named():
    cfg = load_config(Seq2SeqConfig, None, ["model.backbone.name=mamba2", "model.backbone.d_model=24",
                                            "model.backbone.mamba2.headdim=20"])
    with pytest.raises(ValueError, match=r"backbone\.mamba2: headdim must divide"):
        cfg.model.backbone.validate()
    with pytest.raises(ValueError, match=r"backbone\.mamba2 has no option\(s\) \['head_dim'\]"):
        cfg.model.backbone.with_layer(head_dim=8)
    with pytest.raises(ValueError, match="no layer options"):
        BackboneConfig(name="lstm").with_layer(d_state=8)


def test_s4_kernel_length_is_its_own_key():
    cfg = load_config(Seq2SeqConfig, None, ["model.backbone.name=s4", "model.backbone.d_model=16",
                                            "model.backbone.n_layers=1", "model.backbone.bidirectional=false",
                                            "model.backbone.s4.d_state=8", "model.backbone.s4.l_max=24",
                                            "model.backbone.max_len=8"])  # the transformer's: no effect on S4
    backbone = build_backbone(cfg.model.backbone)
    assert _layer(cfg.model.backbone).config.l_max == 24
    assert backbone(torch.randn(1, 24, 16)).shape == (1, 24, 16)
    with pytest.raises(ValueError, match="l_max"):
        backbone(torch.randn(1, 25, 16))


def test_cover_length_raises_only_the_length_bound_settings():
    s4 = BackboneConfig(name="s4")
    assert s4.cover_length(2000).s4.l_max == 2000 and s4.cover_length(2000).max_len == s4.max_len
    assert s4.cover_length(100) == s4
    learned = BackboneConfig(name="transformer")
    assert learned.cover_length(2000).max_len == 2000 and learned.cover_length(2000).s4 == learned.s4
    assert BackboneConfig(name="transformer", pos_encoding="sinusoidal").cover_length(2000).max_len == 512
    assert BackboneConfig(name="mamba").cover_length(2000) == BackboneConfig(name="mamba")


# What earlier versions saved for model.backbone (dataclasses.asdict of the flat BackboneConfig).
OLD_FLAT_DEFAULTS = dict(name="mamba", d_model=128, n_layers=6, bidirectional=False, dropout=0.0, d_state=16,
                         d_conv=4, expand=2, headdim=32, chunk_size=64, s4d_init="lin", h3_head_dim=8,
                         h3_shift_size=4, scan_backend="auto", mlp_dim=0, attn_layers=[], n_heads=4, ff_dim=0,
                         pos_encoding="learned", max_len=512)
SHAPE = dict(d_model=32, n_layers=3, bidirectional=True)
# (a saved backbone in the flat layout, the same backbone in the current layout)
OLD_AND_NEW = [
    (dict(name="mamba2", d_state=8, headdim=16, chunk_size=8, d_conv=3, attn_layers=[1], n_heads=4, ff_dim=48),
     dict(name="mamba2", attn_layers=[1], n_heads=4, ff_dim=48, mamba2=dict(d_state=8, headdim=16, chunk_size=8,
                                                                            d_conv=3))),
    (dict(name="mamba", d_state=8, d_conv=3, expand=3, scan_backend="reference", mlp_dim=12),
     dict(name="mamba", mlp_dim=12, mamba=dict(d_state=8, d_conv=3, expand=3, scan_backend="reference"))),
    (dict(name="s4d", d_state=8, s4d_init="legs"), dict(name="s4d", s4d=dict(d_state=8, init="legs"))),
    (dict(name="s4", d_state=8, max_len=40), dict(name="s4", max_len=40, s4=dict(d_state=8, l_max=40))),
    (dict(name="h3", d_state=8, h3_head_dim=4, h3_shift_size=2, s4d_init="inv"),
     dict(name="h3", h3=dict(d_state=8, head_dim=4, shift_size=2, init="inv"))),
    (dict(name="transformer", n_heads=2, ff_dim=40, max_len=40, d_state=8, headdim=8),
     dict(name="transformer", n_heads=2, ff_dim=40, max_len=40)),
    (dict(name="lstm", d_state=8), dict(name="lstm")),
]


@pytest.mark.parametrize("old,new", OLD_AND_NEW, ids=[new["name"] for _, new in OLD_AND_NEW])
def test_a_saved_flat_config_builds_the_same_model(old, new, tmp_path):
    saved = {"model": {"backbone": {**OLD_FLAT_DEFAULTS, **SHAPE, **old}}}
    old_cfg = from_dict(Seq2SeqConfig, saved).model.backbone  # upgraded through the nested configs
    file = tmp_path / "new.yaml"
    file.write_text(yaml.safe_dump({"model": {"backbone": {**SHAPE, **new}}}))
    new_cfg = load_config(Seq2SeqConfig, file).model.backbone
    assert old_cfg == new_cfg
    models = []
    for cfg in (old_cfg, new_cfg):
        torch.manual_seed(0)
        models.append(build_backbone(cfg).double().eval())
    old_state, new_state = (m.state_dict() for m in models)
    assert [(k, v.shape) for k, v in old_state.items()] == [(k, v.shape) for k, v in new_state.items()]
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    x = torch.randn(2, 11, 32, dtype=torch.float64)  # (b, l, d)
    mask = torch.arange(11)[None] < torch.tensor([11, 7])[:, None]  # (b, l)
    with torch.no_grad():
        assert torch.equal(models[0](x, mask), models[1](x, mask))


def test_the_current_layout_round_trips_unchanged():
    cfg = load_config(Seq2SeqConfig, "qqp-cpu")
    assert from_dict(Seq2SeqConfig, dataclasses.asdict(cfg)) == cfg
