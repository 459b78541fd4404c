"""Tiny backbone configs shared by the language-model tests (every layer kind at width 8)."""
from mambadiff.models.backbones import BackboneConfig

V = 13  # vocab


def backbone(name: str, **kw) -> BackboneConfig:
    cfg = BackboneConfig(**{"name": name, "d_model": 8, "n_layers": 2, "n_heads": 2, **kw})
    sections = {"mamba": dict(d_state=4), "mamba2": dict(d_state=4, headdim=4, chunk_size=4),
                "s4d": dict(d_state=4), "s4": dict(d_state=4, l_max=32),
                "h3": dict(d_state=4, head_dim=4, shift_size=3)}
    return cfg.with_layer(**sections[name]) if name in sections else cfg
