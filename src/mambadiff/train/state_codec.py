"""Training state as data: nested states split into JSON plus a flat dict of tensors (safetensors).

Checkpoints never hold pickles: an optimizer / scheduler / grad-scaler state becomes a JSON skeleton
(dicts, lists, numbers, strings) whose tensors are replaced by ``{"__tensor__": key}`` and stored
by ``key`` in a safetensors file. Decoding builds only dicts, lists, tuples, scalars and tensors, so
a planted file can make loading fail but never run anything.

RNG states (Python, NumPy, torch, CUDA) are plain lists of integers in JSON.
"""
from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import torch

_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
_MARKERS = (_TENSOR, _TUPLE, _ITEMS)
_SCALARS = (str, int, float, bool, type(None))


def encode_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able skeleton, tensors by key) of a nested state of dicts, lists, tuples, scalars, tensors."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = x.detach().cpu().contiguous().clone()
            return {_TENSOR: key}
        if isinstance(x, dict):
            if all(isinstance(k, str) and k not in _MARKERS for k in x):
                return {k: enc(v) for k, v in x.items()}
            return {_ITEMS: [[enc(k), enc(v)] for k, v in x.items()]}  # int keys (optimizer param ids)
        if isinstance(x, tuple):
            return {_TUPLE: [enc(v) for v in x]}
        if isinstance(x, list):
            return [enc(v) for v in x]
        if isinstance(x, _SCALARS):
            return x
        raise TypeError(f"cannot store a {type(x).__name__} in a checkpoint (only dicts, lists, tuples, "
                        f"numbers, strings and tensors)")

    return enc(obj), tensors


def decode_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``encode_state``; ValueError on anything it did not write."""

    def dec(x: Any) -> Any:
        if isinstance(x, dict):
            if _TENSOR in x:
                key = x[_TENSOR]
                if len(x) != 1 or not isinstance(key, str) or key not in tensors:
                    raise ValueError(f"tensor reference {x!r} has no tensor")
                return tensors[key]
            if _TUPLE in x:
                if len(x) != 1 or not isinstance(x[_TUPLE], list):
                    raise ValueError(f"malformed tuple {x!r}")
                return tuple(dec(v) for v in x[_TUPLE])
            if _ITEMS in x:
                items = x[_ITEMS]
                if len(x) != 1 or not isinstance(items, list) or not all(
                        isinstance(kv, list) and len(kv) == 2 for kv in items):
                    raise ValueError("malformed mapping")
                out = {}
                for k, v in items:
                    k = dec(k)
                    if not isinstance(k, (str, int)):
                        raise ValueError(f"mapping key {k!r} is not a str or int")
                    out[k] = dec(v)
                return out
            return {k: dec(v) for k, v in x.items()}
        if isinstance(x, list):
            return [dec(v) for v in x]
        if isinstance(x, _SCALARS):
            return x
        raise ValueError(f"unexpected {type(x).__name__}")

    return dec(skeleton)


# ---- RNG states ----------------------------------------------------------------------------------
def rng_state() -> dict:
    """The global RNG states of Python, NumPy, torch (and CUDA when present) as JSON data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state().tolist(),
             "python": {"version": version, "internal": list(internal), "gauss_next": gauss},
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


_LEGACY_PYTHON = re.compile(r"\((\d+), \(([\d, ]+)\), (None|[-+0-9.eE]+)\)")


def _python_state(s: Any) -> tuple:
    if isinstance(s, str):  # older checkpoints: repr(random.getstate()), parsed as digits only
        m = _LEGACY_PYTHON.fullmatch(s.strip())
        if m is None:
            raise ValueError("rng.python is not a Python RNG state")
        gauss = None if m.group(3) == "None" else float(m.group(3))
        s = {"version": int(m.group(1)), "internal": [int(v) for v in m.group(2).split(",") if v.strip()],
             "gauss_next": gauss}
    if not isinstance(s, dict) or set(s) != {"version", "internal", "gauss_next"}:
        raise ValueError("rng.python must hold version, internal, gauss_next")
    internal = s["internal"]
    if not isinstance(internal, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in internal):
        raise ValueError("rng.python.internal must be a list of ints")
    gauss = s["gauss_next"]
    if gauss is not None and not isinstance(gauss, (int, float)):
        raise ValueError("rng.python.gauss_next must be a number or null")
    return s["version"], tuple(internal), gauss


def _byte_tensor(values: Any, what: str) -> torch.Tensor:
    if not isinstance(values, list) or not all(isinstance(v, int) and 0 <= v < 256 for v in values):
        raise ValueError(f"{what} must be a list of bytes")
    return torch.tensor(values, dtype=torch.uint8)


def set_rng_state(state: Any) -> None:
    """Restore what ``rng_state`` returned; ValueError naming the entry when it is malformed."""
    if not isinstance(state, dict) or not {"torch", "python", "numpy"} <= set(state):
        raise ValueError("rng must hold torch, python and numpy states")
    torch_state = _byte_tensor(state["torch"], "rng.torch")
    python_state = _python_state(state["python"])
    n = state["numpy"]
    if not (isinstance(n, list) and len(n) == 5 and n[0] == "MT19937" and isinstance(n[1], list)):
        raise ValueError("rng.numpy is not a NumPy MT19937 state")
    try:
        numpy_state = (n[0], np.array(n[1], dtype=np.uint32), int(n[2]), int(n[3]), float(n[4]))
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    except (TypeError, ValueError, OverflowError, RuntimeError) as e:
        raise ValueError(f"rng state does not restore ({e})") from None
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if not isinstance(cuda, list):
            raise ValueError("rng.cuda must be a list of states")
        torch.cuda.set_rng_state_all([_byte_tensor(s, "rng.cuda") for s in cuda])
