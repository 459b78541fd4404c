"""Parameter matching across backbones (``param_match``).

By default every backbone is sized to the *non-embedding* parameter count (everything except the token
embedding and a learned position table) of the ``param_match.reference`` backbone (Mamba) at
``model.backbone.d_model``. The knob is ``d_model`` for mamba / mamba2 / s4d / lstm (the LSTM's hidden
size is its d_model; Mamba-2's head dim becomes the largest divisor of expand * d_model that divides
``backbone.mamba2.headdim``) and ``ff_dim`` for the transformer (its d_model stays as configured). The
embedding is left out of the match because with a 30k-entry vocab it dominates the total (~94% at
d=128) and would make any sizes look matched. Both counts are printed and saved.
"""
from __future__ import annotations

import dataclasses
import math

from torch import nn

from mambadiff.models.backbones import BackboneConfig, build_backbone, count_parameters
from mambadiff.models.classifier import SequenceClassifier

from .config import BACKBONE_NAMES


def _position_parameters(backbone: nn.Module) -> int:
    pos = getattr(backbone, "pos", None)
    return pos.numel() if isinstance(pos, nn.Parameter) else 0


def parameter_counts(model: SequenceClassifier) -> dict[str, int]:
    """total, embedding (token table + learned positions) and non_embedding parameter counts."""
    total = count_parameters(model)
    emb = model.embedding.weight.numel() + _position_parameters(model.backbone)
    return {"total": total, "embedding": emb, "non_embedding": total - emb}


def non_embedding_parameters(backbone: BackboneConfig, num_classes: int) -> int:
    """Non-embedding parameters of a classifier with this backbone: backbone (less learned positions)
    plus the linear head. Builds the backbone only (cheap), never the vocab-sized embedding."""
    net = build_backbone(backbone)
    return count_parameters(net) - _position_parameters(net) + backbone.d_model * num_classes + num_classes


def _mamba2_headdim(cfg: BackboneConfig, d: int) -> int:
    """Mamba-2 head dim for width d: the largest divisor of e = expand * d that divides backbone.mamba2.headdim."""
    return math.gcd(cfg.mamba2.expand * d, cfg.mamba2.headdim)


def _valid_d_model(cfg: BackboneConfig, d: int, min_headdim: int = 16) -> bool:
    if cfg.name == "mamba2":  # heads of at least min_headdim channels (or the configured head dim if smaller)
        return _mamba2_headdim(cfg, d) >= min(min_headdim, cfg.mamba2.headdim)
    if cfg.name == "lstm" and cfg.bidirectional:
        return d % 2 == 0
    if cfg.name == "h3":  # heads of h3.head_dim channels, or the narrower ones _h3_head_dim picks
        return _h3_head_dim(cfg, d) >= min(min_headdim, cfg.h3.head_dim)
    return True


def _h3_head_dim(cfg: BackboneConfig, d: int) -> int:
    """H3 head dim for width d: the largest divisor of d that divides backbone.h3.head_dim."""
    return math.gcd(d, cfg.h3.head_dim)


def _closest(count, lo: int, hi: int, target: int, valid=lambda v: True) -> int:
    """The value v in [lo, hi] (valid(v)) whose count(v) is closest to target; count is increasing."""
    candidates = [v for v in range(lo, hi + 1) if valid(v)]
    if not candidates:
        raise ValueError(f"no valid size in [{lo}, {hi}]")
    a, b = 0, len(candidates) - 1  # binary search for the first candidate with count >= target
    while a < b:
        m = (a + b) // 2
        if count(candidates[m]) >= target:
            b = m
        else:
            a = m + 1
    best = [candidates[a]] + ([candidates[a - 1]] if a > 0 else [])
    return min(best, key=lambda v: (abs(count(v) - target), v))


def match_backbone(name: str, reference: BackboneConfig, num_classes: int, target: int = 0,
                   reference_name: str = "mamba", tolerance: float = 0.10) -> tuple[BackboneConfig, dict]:
    """The backbone ``name`` sized to ``target`` non-embedding parameters.

    ``reference`` carries every setting (d_model, n_layers, d_state, heads, ...); ``target`` 0 means
    the count of ``reference`` built as ``reference_name``. The knob is d_model for mamba, mamba2,
    s4d and lstm, and ff_dim for the transformer (d_model fixed). Returns the config and a report
    ``{target, params, rel_error, knob, value}``; raises ValueError when the closest size is more
    than ``tolerance`` (relative) away.
    """
    if name not in BACKBONE_NAMES:
        raise ValueError(f"backbone name must be one of {BACKBONE_NAMES}, got {name!r}")
    if target <= 0:
        target = non_embedding_parameters(dataclasses.replace(reference, name=reference_name), num_classes)
    base = dataclasses.replace(reference, name=name)
    cache: dict[int, int] = {}
    if name == "transformer":
        knob = "ff_dim"

        def count(v: int) -> int:
            if v not in cache:
                cache[v] = non_embedding_parameters(dataclasses.replace(base, ff_dim=v), num_classes)
            return cache[v]
        value = _closest(count, 1, 64 * base.d_model, target)
        cfg = dataclasses.replace(base, ff_dim=value)
    else:
        knob = "d_model"

        def sized(v: int) -> BackboneConfig:
            if name == "mamba2":
                return dataclasses.replace(base, d_model=v).with_layer(headdim=_mamba2_headdim(base, v))
            if name == "h3":
                return dataclasses.replace(base, d_model=v).with_layer(head_dim=_h3_head_dim(base, v))
            return dataclasses.replace(base, d_model=v)

        def count(v: int) -> int:
            if v not in cache:
                cache[v] = non_embedding_parameters(sized(v), num_classes)
            return cache[v]
        # Mamba-2 (H3) widths step by their head dim; at small widths that step is too coarse,
        # so narrower heads are allowed only when needed to get within the tolerance
        for min_headdim in {"mamba2": (16, 8, 4), "h3": (8, 4, 2)}.get(name, (16,)):
            value = _closest(count, 8, 16 * max(base.d_model, 64), target,
                             lambda v: _valid_d_model(base, v, min_headdim))
            if abs(count(value) - target) <= tolerance * target:
                break
        cfg = sized(value)
    params = count(value)
    rel = (params - target) / target
    report = {"target": target, "params": params, "rel_error": rel, "knob": knob, "value": value}
    if abs(rel) > tolerance:
        raise ValueError(f"param_match: the closest {name} ({knob}={value}) has {params:,} non-embedding "
                         f"parameters, {rel:+.1%} from the target {target:,} (tolerance {tolerance:.0%}); "
                         f"change model.backbone settings or set param_match.enabled=false")
    return cfg, report
