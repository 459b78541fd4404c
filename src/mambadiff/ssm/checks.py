"""Input checks shared by every mixer in ``mambadiff.ssm``.

Glossary: b batch, l length, d model width.

Each check raises ``ValueError`` naming the argument and the expected shape / type, so a wrong
call fails at the layer boundary instead of deep inside a kernel.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["validate_sequence", "validate_token", "validate_state_tensor", "at_least_f32",
           "check_positive_int", "check_dt_range"]


def _param_dtype(module: nn.Module) -> torch.dtype | None:
    for p in module.parameters():
        return p.dtype
    return None


def _check_dtype(name: str, t: torch.Tensor, module: nn.Module) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    want = _param_dtype(module)
    # Under autocast the parameters stay float32 while activations may be half: allowed.
    if want is not None and t.dtype != want and not torch.is_autocast_enabled(t.device.type):
        raise ValueError(
            f"{name} has dtype {t.dtype} but {type(module).__name__}'s parameters are {want}; "
            f"convert one of them (e.g. module.to({t.dtype}))"
        )


def validate_sequence(module: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
                      d_model: int) -> None:
    """Check ``x`` (b, l, d_model) and the optional right-padded bool ``mask`` (b, l).

    Raises ValueError naming the argument and the expected shape.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape (b, l, d_model={d_model}), "
                         f"got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"x must have shape (b, l, d_model={d_model}), got {tuple(x.shape)}")
    _check_dtype("x", x, module)
    if mask is None:
        return
    b, l = x.shape[:2]
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor of shape (b, l)=({b}, {l}) "
                         f"(True at real tokens), got {got}")
    if tuple(mask.shape) != (b, l):
        raise ValueError(f"mask must have shape (b, l)=({b}, {l}) matching x, "
                         f"got {tuple(mask.shape)}")
    if mask.device != x.device:
        raise ValueError(f"mask is on {mask.device} but x is on {x.device}")
    if l > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must be right-padded: True at the real tokens of each row, "
                         "then only False (padding at the end)")


def validate_token(module: nn.Module, x_t: torch.Tensor, d_model: int) -> None:
    """Check one step's input ``x_t`` (b, d_model)."""
    if not isinstance(x_t, torch.Tensor):
        raise ValueError(f"x_t must be a torch.Tensor of shape (b, d_model={d_model}), "
                         f"got {type(x_t).__name__}")
    if x_t.ndim != 2 or x_t.shape[-1] != d_model:
        raise ValueError(f"x_t must have shape (b, d_model={d_model}), got {tuple(x_t.shape)}")
    _check_dtype("x_t", x_t, module)


def validate_state_tensor(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Check one tensor of a recurrent state against its expected shape."""
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shape):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"state.{name} must have shape {tuple(shape)}, got {got}; "
                         f"build it with allocate_state(batch_size)")


def at_least_f32(t: torch.Tensor) -> torch.Tensor:
    """Upcast half-precision tensors to float32 (state-space parameters need the range)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_dt_range(dt_min: float, dt_max: float, dt_init_floor: float) -> None:
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"dt_min/dt_max must satisfy 0 < dt_min <= dt_max, "
                         f"got dt_min={dt_min}, dt_max={dt_max}")
    if dt_init_floor <= 0:
        raise ValueError(f"dt_init_floor must be > 0, got {dt_init_floor}")
