"""The layer options of a backbone config: one typed section per state-space layer kind.

A ``BackboneConfig`` carries the sections ``mamba``, ``mamba2``, ``s4d``, ``s4`` and ``h3``; a stack
named ``mamba2`` builds each of its layers from ``Mamba2Config(d_model=<the backbone's>, **<its
mamba2 section>)``, as mamba_ssm hands its ``ssm_cfg`` to the mixer. In YAML::

    model:
      backbone:
        name: mamba2
        d_model: 128
        n_layers: 3
        mamba2: {d_state: 16, headdim: 32, A_init_range: [1.0, 8.0]}

or as an override, ``model.backbone.s4.l_max=2048``.

Each section's dataclass is derived from the layer's config (every field except ``d_model``, with the
same names and types), so a field added to a layer config is a backbone option at once, and OmegaConf
refuses an unknown key or a value of the wrong type with the key named. The defaults are the layer's,
except the few in ``BACKBONE_DEFAULTS``.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from mambadiff.ssm.h3 import H3, H3Config
from mambadiff.ssm.mamba import Mamba, MambaConfig
from mambadiff.ssm.mamba2 import Mamba2, Mamba2Config
from mambadiff.ssm.s4 import S4, S4Config
from mambadiff.ssm.s4d import S4D, S4DConfig

__all__ = ["BACKBONE_DEFAULTS", "FLAT_OPTIONS", "LAYER_KINDS", "H3Options", "LayerKind", "MambaOptions",
           "Mamba2Options", "S4DOptions", "S4Options", "layer_options_class", "move_flat_options"]

# Where a backbone's defaults depart from the layer's own: the small CPU-sized stacks the backbones
# have always built (state size 16 for every kind, Mamba-2 heads of 32, an S4 kernel of 512).
# Configs and benchmarks that leave these unset rely on them.
BACKBONE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mamba2": {"d_state": 16, "headdim": 32},
    "s4d": {"d_state": 16},
    "s4": {"d_state": 16, "l_max": 512},
    "h3": {"d_state": 16},
}


def layer_options_class(config: type, name: str, defaults: Mapping[str, Any] | None = None) -> type:
    """A dataclass named ``name`` with every field of the layer config ``config`` except ``d_model``
    (same type, default from ``defaults`` or else the layer's)."""
    defaults = defaults or {}
    hints = typing.get_type_hints(config)  # the layer modules use string annotations
    names = {f.name for f in dataclasses.fields(config)} - {"d_model"}
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise TypeError(f"{config.__name__} has no field(s) {unknown}")
    specs = []
    for f in dataclasses.fields(config):
        if f.name == "d_model":
            continue
        if f.name in defaults:
            default = dataclasses.field(default=defaults[f.name])
        elif f.default_factory is not dataclasses.MISSING:
            default = dataclasses.field(default_factory=f.default_factory)
        else:
            default = dataclasses.field(default=f.default)
        specs.append((f.name, hints[f.name], default))
    cls = dataclasses.make_dataclass(name, specs)
    cls.__module__ = __name__  # (make_dataclass's module= is Python 3.12+) for pickling and the docs
    cls.__doc__ = (f"The options of a backbone's {config.__name__} layers: every field of {config.__name__} "
                   f"except d_model, which the backbone gives.")
    return cls


MambaOptions = layer_options_class(MambaConfig, "MambaOptions")
Mamba2Options = layer_options_class(Mamba2Config, "Mamba2Options", BACKBONE_DEFAULTS["mamba2"])
S4DOptions = layer_options_class(S4DConfig, "S4DOptions", BACKBONE_DEFAULTS["s4d"])
S4Options = layer_options_class(S4Config, "S4Options", BACKBONE_DEFAULTS["s4"])
H3Options = layer_options_class(H3Config, "H3Options", BACKBONE_DEFAULTS["h3"])


@dataclass(frozen=True)
class LayerKind:
    """A state-space layer a backbone stacks: its module, its config and its options section."""

    layer: type[nn.Module]
    config: type
    options: type

    def build_config(self, d_model: int, options: Any) -> Any:
        """The layer's config: ``d_model`` and every option of the section ``options``."""
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(self.options)}
        return self.config(d_model=d_model, **values)


# backbone name (= its section's key in BackboneConfig) -> the layer kind
LAYER_KINDS: dict[str, LayerKind] = {
    "mamba": LayerKind(Mamba, MambaConfig, MambaOptions),
    "mamba2": LayerKind(Mamba2, Mamba2Config, Mamba2Options),
    "s4d": LayerKind(S4D, S4DConfig, S4DOptions),
    "s4": LayerKind(S4, S4Config, S4Options),
    "h3": LayerKind(H3, H3Config, H3Options),
}

# The flat BackboneConfig keys of earlier versions: old key -> {layer kind that read it: its option}.
# ``max_len`` stays a backbone key (the transformer's positions); S4 read it as its kernel length.
FLAT_OPTIONS: dict[str, dict[str, str]] = {
    "d_state": {"mamba": "d_state", "mamba2": "d_state", "s4d": "d_state", "s4": "d_state", "h3": "d_state"},
    "d_conv": {"mamba": "d_conv", "mamba2": "d_conv"},
    "expand": {"mamba": "expand", "mamba2": "expand"},
    "scan_backend": {"mamba": "scan_backend"},
    "headdim": {"mamba2": "headdim"},
    "chunk_size": {"mamba2": "chunk_size"},
    "s4d_init": {"s4d": "init", "h3": "init"},
    "h3_head_dim": {"h3": "head_dim"},
    "h3_shift_size": {"h3": "shift_size"},
}


def move_flat_options(data: dict) -> dict:
    """A saved backbone config (a dict) of the flat layout in the sectioned one: the flat keys the
    layer of ``data['name']`` read move into its section, the others are dropped (they built nothing).
    A dict without flat keys is returned as it is."""
    if not any(key in data for key in FLAT_OPTIONS):
        return data
    data = dict(data)
    name = data.get("name", "mamba")  # BackboneConfig's default name
    moved = {}
    for key, readers in FLAT_OPTIONS.items():
        if key in data:
            value = data.pop(key)
            if name in readers:
                moved[readers[name]] = value
    if name == "s4" and "max_len" in data:
        moved["l_max"] = data["max_len"]
    if name in LAYER_KINDS:
        data[name] = {**moved, **(data.get(name) or {})}
    return data
