"""Sequence mixers: Mamba (S6), Mamba-2 (SSD), S4, S4D, H3, and a bidirectional wrapper; HiPPO matrices.

Glossary: b batch, l length, d model width, e inner width, n state size, h heads, p head dim.

Every mixer maps x (b, l, d_model) -> (b, l, d_model), takes an optional right-padded bool
mask (b, l), and (except ``Bidirectional``) streams with ``allocate_state`` / ``step``.
"""
from __future__ import annotations

from .bidirectional import Bidirectional
from .h3 import H3, H3Config, H3State
from .mamba import Mamba, MambaConfig, MambaState, param_groups
from .mamba2 import Mamba2, Mamba2Config, Mamba2State, ssd_chunked, ssd_reference
from .norm import RMSNorm
from .s4 import S4, S4Config, S4State
from .s4d import S4D, S4DConfig, S4DState
from .scan import selective_scan

__all__ = [
    "Bidirectional",
    "H3",
    "H3Config",
    "H3State",
    "Mamba",
    "MambaConfig",
    "MambaState",
    "Mamba2",
    "Mamba2Config",
    "Mamba2State",
    "RMSNorm",
    "S4",
    "S4Config",
    "S4State",
    "S4D",
    "S4DConfig",
    "S4DState",
    "param_groups",
    "selective_scan",
    "ssd_chunked",
    "ssd_reference",
]
