"""Mamba (S6) block: input-dependent selective state space, Gu & Dao 2023.

Glossary: b batch, l length, d model width, e inner width (expand*d), n state size,
k conv width, r dt rank.

Data flow of ``Mamba.forward`` (x (b, l, d) -> (b, l, d)):

    x, z   = in_proj(x).chunk(2)                  (b, l, e) each
    x      = silu(causal_depthwise_conv(x))        (b, l, e)   fused: mambadiff.ssm.conv
    dt,B,C = x_proj(x).split(r, n, n)              (b, l, r), (b, l, n), (b, l, n)
    dt     = dt_proj.weight @ dt                    (b, l, e)   bias + softplus happen in the scan
    y      = selective_scan(x, dt, A, B, C, D, z)   (b, l, e)   y = (S6(x) + D x) * silu(z)
    out    = out_proj(y)                            (b, l, d)

``step`` runs the same computation for one token with an explicit ``MambaState``
(conv_state (b, e, k-1) holding the last k-1 conv inputs, ssm_state (b, e, n)). ``prefill`` is the
parallel path over right-padded rows that also returns each row's state after its own length: dt is
zeroed at padding (exp(0 * A) = 1 and dt * x = 0, so the scan's last state is the state at the
row's last token) and the conv state is the row's last k-1 conv inputs.

This module also holds ``param_groups``; the input checks shared by every mixer live in
``mambadiff.ssm.checks`` (re-exported here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn

from .checks import (at_least_f32, check_dt_range, check_positive_int, validate_sequence,
                     validate_state_tensor, validate_token)
from .conv import CONV_BACKEND_FOR_SCAN, causal_conv1d_silu
from .prefill import check_lengths, has_padding, lengths_mask, trailing_window
from .scan import BACKENDS, selective_scan


__all__ = [
    "MambaConfig",
    "MambaState",
    "Mamba",
    "param_groups",
    "validate_sequence",
    "validate_token",
    "validate_state_tensor",
    "init_dt_bias",
    "at_least_f32",
]


# --------------------------------------------------------------------------- shared init


def init_dt_bias(size: int, dt_min: float, dt_max: float, dt_init_floor: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Bias whose softplus is log-uniform in [dt_min, dt_max] (floored at dt_init_floor).

    Returns (size,). Uses the inverse of softplus: inv(y) = y + log(-expm1(-y)).
    """
    u = torch.rand(size, generator=generator, dtype=torch.float64)  # (size,)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))  # (size,)
    dt = dt.clamp(min=dt_init_floor)  # (size,)
    return (dt + torch.log(-torch.expm1(-dt))).float()  # (size,)


# --------------------------------------------------------------------------- optimizer groups


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """AdamW parameter groups: decayed weights vs. parameters that must not be decayed.

    No weight decay for: every parameter flagged ``_no_weight_decay`` (A_log, D, dt bias, S4D
    kernel parameters), every bias (name ends in ``bias``) and every 1-D parameter (norm
    weights). Parameters carrying ``_lr_scale`` get their own group with ``lr_scale`` set (and
    ``lr = lr * lr_scale`` when ``lr`` is given; without ``lr`` the training loop must apply it).
    Groups come decay first; each carries ``param_names``. Frozen parameters are skipped.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    buckets: dict[tuple[bool, float], tuple[list, list]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = (bool(getattr(p, "_no_weight_decay", False)) or p.ndim < 2
                    or name.endswith("bias"))
        scale = float(getattr(p, "_lr_scale", 1.0))
        params, names = buckets.setdefault((no_decay, scale), ([], []))
        params.append(p)
        names.append(name)
    groups = []
    # decay before no-decay, then unscaled before scaled
    for (no_decay, scale) in sorted(buckets, key=lambda key: (key[0], key[1] != 1.0, key[1])):
        params, names = buckets[(no_decay, scale)]
        group = {"params": params, "param_names": names,
                 "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale}
        if lr is not None:
            group["lr"] = lr * scale
        groups.append(group)
    return groups


# --------------------------------------------------------------------------- Mamba


@dataclass
class MambaConfig:
    """Mamba (S6) block; defaults are the paper's.

    dt_rank "auto" resolves to ceil(d_model / 16) in ``__post_init__``.
    """

    d_model: int
    d_state: int = 16  # n
    d_conv: int = 4  # k
    expand: int = 2  # e = expand * d_model
    dt_rank: int | str = "auto"  # r
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init: str = "random"  # "random" (uniform +-r^-0.5*dt_scale) or "constant"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj bias
    scan_backend: str = "auto"  # passed to selective_scan(backend=)

    def __post_init__(self):
        for name in ("d_model", "d_state", "d_conv", "expand"):
            check_positive_int(name, getattr(self, name))
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        check_positive_int("dt_rank", self.dt_rank)
        check_dt_range(self.dt_min, self.dt_max, self.dt_init_floor)
        if self.dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {self.dt_init!r}")
        if self.scan_backend not in BACKENDS:
            raise ValueError(f"scan_backend must be one of {BACKENDS}, got {self.scan_backend!r}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


@dataclass
class MambaState:
    """Recurrent state of one Mamba block: conv_state (b, e, k-1), ssm_state (b, e, n)."""

    conv_state: torch.Tensor  # (b, e, k-1) last k-1 conv inputs, oldest first
    ssm_state: torch.Tensor  # (b, e, n)


class Mamba(nn.Module):
    """Mamba (S6) sequence mixer.

    Shape contract:
      forward(x (b, l, d_model), mask (b, l) bool | None) -> (b, l, d_model)
        mask is True at real tokens, right-padded; padded inputs are zeroed and padded
        outputs are zero. The layer is causal, so padding never affects real positions.
      allocate_state(batch_size) -> MambaState (zeros)
      step(x_t (b, d_model), state) -> (y_t (b, d_model), new MambaState); the state is not
        modified in place. Feeding a sequence token by token reproduces ``forward``.
    """

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = cfg = config
        self.d_model = cfg.d_model
        e, n, r, k = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv

        self.in_proj = nn.Linear(cfg.d_model, 2 * e, bias=cfg.bias)  # d -> (x, z)
        self.conv1d = nn.Conv1d(e, e, kernel_size=k, groups=e, padding=k - 1,
                                bias=cfg.conv_bias)  # depthwise; weight (e, 1, k)
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)  # e -> (dt, B, C)
        self.dt_proj = nn.Linear(r, e, bias=True)  # r -> e

        dt_init_std = r ** -0.5 * cfg.dt_scale
        with torch.no_grad():
            if cfg.dt_init == "random":
                nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
            else:
                nn.init.constant_(self.dt_proj.weight, dt_init_std)
            self.dt_proj.bias.copy_(init_dt_bias(e, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
        self.dt_proj.bias._no_weight_decay = True

        # S4D-real init: A = -(1..n) for every channel, stored as log for positivity.
        A = torch.arange(1, n + 1, dtype=torch.float32).repeat(e, 1)  # (e, n)
        self.A_log = nn.Parameter(torch.log(A))  # (e, n)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(e))  # (e,)
        self.D._no_weight_decay = True

        self.out_proj = nn.Linear(e, cfg.d_model, bias=cfg.bias)  # e -> d

    # ------------------------------------------------------------------ parallel

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        validate_sequence(self, x, mask, self.d_model)
        cfg = self.config
        b, l, _ = x.shape
        n, r = cfg.d_state, cfg.dt_rank
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)  # (b, l, d) padded inputs zeroed

        # Everything stays time-major (b, l, .): the scan reads the transposed views below in place,
        # so no layout copies are made.
        # in_proj as two products: each output is then contiguous, and the backward needs no
        # concatenation of the two (b, l, e) gradients into one (b, l, 2e) tensor.
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)  # (e, d) each
        b_x, b_z = (None, None) if self.in_proj.bias is None else self.in_proj.bias.chunk(2)
        xs = F.linear(x, w_x, b_x)  # (b, l, e)
        z = F.linear(x, w_z, b_z)  # (b, l, e)
        xs = causal_conv1d_silu(xs, self.conv1d.weight[:, 0, :], self.conv1d.bias,
                                backend=CONV_BACKEND_FOR_SCAN.get(cfg.scan_backend, "auto"))  # (b, l, e)

        x_dbl = self.x_proj(xs)  # (b, l, r + 2n)
        dt, B, C = torch.split(x_dbl, [r, n, n], dim=-1)  # (b, l, r), (b, l, n), (b, l, n)
        dt = dt @ self.dt_proj.weight.t()  # (b, l, e) pre-bias, pre-softplus
        A = -torch.exp(at_least_f32(self.A_log))  # (e, n)

        y = selective_scan(
            xs.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2),
            at_least_f32(self.D), z.transpose(1, 2),
            delta_bias=at_least_f32(self.dt_proj.bias), delta_softplus=True,
            backend=cfg.scan_backend,
        )  # (b, e, l) views of time-major (b, l, e) on the cpu backend
        out = self.out_proj(y.transpose(1, 2).to(x.dtype))  # (b, l, d)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)  # (b, l, d)
        return out

    # ------------------------------------------------------------------ recurrent

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        check_positive_int("batch_size", batch_size)
        ref = self.A_log
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        e, n, k = self.config.d_inner, self.config.d_state, self.config.d_conv
        return MambaState(
            conv_state=torch.zeros(batch_size, e, k - 1, device=device, dtype=dtype),
            ssm_state=torch.zeros(batch_size, e, n, device=device, dtype=dtype),
        )

    def step(self, x_t: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        validate_token(self, x_t, self.d_model)
        cfg = self.config
        b = x_t.shape[0]
        e, n, r, k = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
        if not isinstance(state, MambaState):
            raise ValueError(f"state must be a MambaState, got {type(state).__name__}")
        validate_state_tensor("conv_state", state.conv_state, (b, e, k - 1))
        validate_state_tensor("ssm_state", state.ssm_state, (b, e, n))

        xs, z = self.in_proj(x_t).chunk(2, dim=-1)  # (b, e) each
        window = torch.cat([state.conv_state, xs.unsqueeze(-1)], dim=-1)  # (b, e, k)
        xs = (window * self.conv1d.weight[:, 0, :]).sum(-1)  # (b, e)
        if self.conv1d.bias is not None:
            xs = xs + self.conv1d.bias  # (b, e)
        xs = F.silu(xs)  # (b, e)

        dt, B, C = torch.split(self.x_proj(xs), [r, n, n], dim=-1)  # (b, r), (b, n), (b, n)
        dt = F.softplus(self.dt_proj(dt))  # (b, e)
        A = -torch.exp(self.A_log)  # (e, n)
        dA = torch.exp(dt.unsqueeze(-1) * A)  # (b, e, n)
        dBx = (dt * xs).unsqueeze(-1) * B.unsqueeze(1)  # (b, e, n)
        h = dA * state.ssm_state + dBx  # (b, e, n)
        y = (h * C.unsqueeze(1)).sum(-1) + self.D * xs  # (b, e)
        y = y * F.silu(z)  # (b, e)
        return self.out_proj(y), MambaState(conv_state=window[..., 1:], ssm_state=h)

    def prefill(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, MambaState]:
        """The parallel path over right-padded ``x (b, l, d)`` with ``lengths (b,)`` real tokens per row:
        ``(forward(x, mask), state after each row's last token)``; ``step`` continues from the state.
        When every row is full (a single prompt) this is ``forward``'s own computation plus the scan's last
        state; padded rows take dt's softplus out of the scan to zero it at padding."""
        validate_sequence(self, x, None, self.d_model)
        cfg = self.config
        b, l, _ = x.shape
        n, r, k = cfg.d_state, cfg.dt_rank, cfg.d_conv
        lengths = check_lengths(lengths, b, l, x.device)  # (b,)
        padded = has_padding(lengths, l)
        keep = lengths_mask(lengths, l).unsqueeze(-1).to(x.dtype) if padded else None  # (b, l, 1)
        if padded:
            x = x * keep  # (b, l, d)
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)  # (e, d) each: two products, as forward
        b_x, b_z = (None, None) if self.in_proj.bias is None else self.in_proj.bias.chunk(2)
        xs, z = F.linear(x, w_x, b_x), F.linear(x, w_z, b_z)  # (b, l, e) each
        conv_state = trailing_window(xs.transpose(1, 2), lengths, k - 1)  # (b, e, k-1)
        xs = causal_conv1d_silu(xs, self.conv1d.weight[:, 0, :], self.conv1d.bias,
                                backend=CONV_BACKEND_FOR_SCAN.get(cfg.scan_backend, "auto"))  # (b, l, e)
        dt, B, C = torch.split(self.x_proj(xs), [r, n, n], dim=-1)  # (b, l, r), (b, l, n), (b, l, n)
        dt = dt @ self.dt_proj.weight.t()  # (b, l, e) pre-bias, pre-softplus
        bias = at_least_f32(self.dt_proj.bias)  # (e,)
        if padded:  # zero at padding: exp(0 A) = 1 and 0 x = 0 keep each row's state at its last token
            dt, bias = (F.softplus(at_least_f32(dt) + bias) * keep).to(xs.dtype), None  # (b, l, e)
        y, last = selective_scan(
            xs.transpose(1, 2), dt.transpose(1, 2), -torch.exp(at_least_f32(self.A_log)),
            B.transpose(1, 2), C.transpose(1, 2), at_least_f32(self.D), z.transpose(1, 2),
            delta_bias=bias, delta_softplus=not padded, return_last_state=True, backend=cfg.scan_backend,
        )  # (b, e, l), (b, e, n)
        out = self.out_proj(y.transpose(1, 2).to(x.dtype))  # (b, l, d)
        if padded:
            out = out * keep  # (b, l, d)
        return out, MambaState(conv_state=conv_state, ssm_state=last.to(self.A_log.dtype))

    def extra_repr(self) -> str:
        c = self.config
        return (f"d_model={c.d_model}, d_inner={c.d_inner}, d_state={c.d_state}, "
                f"d_conv={c.d_conv}, dt_rank={c.dt_rank}, scan_backend={c.scan_backend!r}")
