"""Mamba-2 (SSD) block: state space duality with a scalar decay per head, Dao & Gu 2024.

Glossary: b batch, l length, d model width, e inner width (expand*d), n state size,
h heads, p head dim (e = h*p), k conv width, c number of chunks, q chunk length.

Recurrence per head (state (p, n); B, C shared by all heads, ngroups = 1):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        x_t (p,), B_t, C_t (n,)
    y_t = h_t C_t + D * x_t

Block data flow (x (b, l, d) -> (b, l, d)):

    z, xBC, dt = in_proj(x).split(e, e + 2n, h)
    xBC        = silu(causal_depthwise_conv(xBC));  x, B, C = xBC.split(e, n, n)
    dt         = softplus(dt + dt_bias)                         (b, l, h)
    y          = SSD(x, dt, A, B, C) + D x                      (b, l, h, p)
    out        = out_proj(RMSNorm(y * silu(z)))                 (b, l, d)

The SSD itself lives in ``mambadiff.ssm.ssd``; ``Mamba2Config.algorithm`` picks how it runs:
``auto`` (the fused C recurrence on CPU, the chunked matmul algorithm elsewhere), ``chunked``,
``cpu``, ``reference`` (the sequential oracle), or ``scan`` (the S6 ``selective_scan`` with A and dt
repeated over each head's channels, on its own ``scan_backend``).

``prefill`` is the parallel path over right-padded rows that also returns each row's state after
its own length, for ``step`` to continue from: the SSD with dt zeroed at padding (no decay, no input:
the final state is the state at the row's last token), by the fused CPU kernel that writes its final
state (the chunked SSD elsewhere), and the row's last k-1 conv inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .conv import CONV_BACKEND_FOR_SCAN, causal_conv1d_silu
from .linear import split_linear
from .checks import (
    at_least_f32,
    check_dt_range,
    check_positive_int,
    validate_sequence,
    validate_state_tensor,
    validate_token,
)
from .mamba import init_dt_bias
from .norm import RMSNorm
from .prefill import check_lengths, has_padding, lengths_mask, trailing_window
from .scan import BACKENDS, selective_scan
from .ssd import (SSD_ALGORITHMS, resolve_algorithm, segsum, ssd, ssd_chunked, ssd_reference,
                  ssd_scan_cpu_packed)

__all__ = ["Mamba2Config", "Mamba2State", "Mamba2", "ssd_chunked", "ssd_reference", "segsum"]

ALGORITHMS = (*SSD_ALGORITHMS, "scan")


# --------------------------------------------------------------------------- Mamba-2 block


@dataclass
class Mamba2Config:
    """Mamba-2 (SSD) block. Defaults follow the paper; shrink d_state/headdim for tests."""

    d_model: int
    d_state: int = 64  # n
    d_conv: int = 4  # k
    expand: int = 2  # e = expand * d_model
    headdim: int = 64  # p; must divide e (h = e / p heads)
    chunk_size: int = 64  # q, for the chunked algorithm
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    A_init_range: tuple[float, float] = (1.0, 16.0)  # A = -uniform(range) per head
    norm_eps: float = 1e-5
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj bias
    algorithm: str = "auto"  # one of ALGORITHMS (see the module docstring)
    scan_backend: str = "auto"  # passed to selective_scan(backend=) when algorithm == "scan"

    def __post_init__(self):
        for name in ("d_model", "d_state", "d_conv", "expand", "headdim", "chunk_size"):
            check_positive_int(name, getattr(self, name))
        if self.d_inner % self.headdim != 0:
            raise ValueError(f"headdim must divide d_inner = expand * d_model = {self.d_inner}, "
                             f"got headdim={self.headdim}")
        check_dt_range(self.dt_min, self.dt_max, self.dt_init_floor)
        lo, hi = self.A_init_range
        if not (0 < lo <= hi):
            raise ValueError(f"A_init_range must satisfy 0 < low <= high, got {self.A_init_range}")
        self.A_init_range = (float(lo), float(hi))
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.scan_backend not in BACKENDS:
            raise ValueError(f"scan_backend must be one of {BACKENDS}, got {self.scan_backend!r}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim


@dataclass
class Mamba2State:
    """Recurrent state of one Mamba-2 block: conv_state (b, e+2n, k-1), ssm_state (b, h, p, n)."""

    conv_state: torch.Tensor  # (b, e+2n, k-1) last k-1 conv inputs (x, B, C), oldest first
    ssm_state: torch.Tensor  # (b, h, p, n)


class Mamba2(nn.Module):
    """Mamba-2 (SSD) sequence mixer.

    Shape contract:
      forward(x (b, l, d_model), mask (b, l) bool | None) -> (b, l, d_model)
        mask is True at real tokens, right-padded; padded inputs are zeroed and padded
        outputs are zero. The layer is causal, so padding never affects real positions.
      allocate_state(batch_size) -> Mamba2State (zeros)
      step(x_t (b, d_model), state) -> (y_t (b, d_model), new Mamba2State); the state is not
        modified in place. Feeding a sequence token by token reproduces ``forward``.
    """

    def __init__(self, config: Mamba2Config):
        super().__init__()
        self.config = cfg = config
        self.d_model = cfg.d_model
        e, n, h, k = cfg.d_inner, cfg.d_state, cfg.nheads, cfg.d_conv
        conv_dim = e + 2 * n

        self.in_proj = nn.Linear(cfg.d_model, 2 * e + 2 * n + h, bias=cfg.bias)  # d -> z,xBC,dt
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel_size=k, groups=conv_dim,
                                padding=k - 1, bias=cfg.conv_bias)  # weight (e+2n, 1, k)
        self.dt_bias = nn.Parameter(init_dt_bias(h, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
        self.dt_bias._no_weight_decay = True  # (h,)
        lo, hi = cfg.A_init_range
        A = torch.empty(h).uniform_(lo, hi)  # (h,)
        self.A_log = nn.Parameter(torch.log(A))  # (h,)  A = -exp(A_log)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(h))  # (h,)
        self.D._no_weight_decay = True
        self.norm = RMSNorm(e, eps=cfg.norm_eps)
        self.out_proj = nn.Linear(e, cfg.d_model, bias=cfg.bias)  # e -> d

    def _split_in_proj(self, zxbcdt: torch.Tensor):
        """in_proj's output (.., 2e+2n+h) -> z (.., e), xBC (.., e+2n), dt (.., h)."""
        cfg = self.config
        e, n, h = cfg.d_inner, cfg.d_state, cfg.nheads
        return torch.split(zxbcdt, [e, e + 2 * n, h], dim=-1)

    # ------------------------------------------------------------------ parallel

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, reverse: bool = False) -> torch.Tensor:
        """reverse=True (no mask): the layer run over the time-flipped sequence, its output flipped back,
        i.e. ``self(x.flip(1)).flip(1)``; the CPU kernels compute it in place (anti-causal conv, SSD walking
        time backwards), so the backward direction of a ``Bidirectional`` layer makes no flipped copies."""
        validate_sequence(self, x, mask, self.d_model)
        cfg = self.config
        e, n, h, p = cfg.d_inner, cfg.d_state, cfg.nheads, cfg.headdim
        algorithm = cfg.algorithm if cfg.algorithm == "scan" else resolve_algorithm(cfg.algorithm, x.device)
        if reverse:
            if mask is not None:
                raise ValueError("reverse=True takes no mask (it flips whole sequences); Bidirectional "
                                 "reverses padded rows within their lengths instead")
            if algorithm != "cpu":  # in-place reversal is a CPU-kernel feature: flip around the layer
                return self.forward(x.flip(1)).flip(1)
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)  # (b, l, d) padded inputs zeroed

        # in_proj as three products (weight row blocks), each output contiguous; split_linear's backward
        # takes the three gradients as they come: no concatenation, no adds of three input gradients
        z, xBC, dt = split_linear(x, self.in_proj.weight, self.in_proj.bias,
                                  (e, e + 2 * n, h))  # (b, l, e), (b, l, e+2n), (b, l, h)
        # the oracle paths (reference SSD, reference / torch scans) keep to plain PyTorch
        if algorithm == "scan":
            conv_backend = CONV_BACKEND_FOR_SCAN.get(cfg.scan_backend, "auto")
        else:
            conv_backend = "torch" if algorithm == "reference" else "auto"
        xBC = causal_conv1d_silu(xBC, self.conv1d.weight[:, 0, :], self.conv1d.bias,
                                 backend=conv_backend, reverse=reverse)  # (b, l, e+2n) time-major
        dt = F.softplus(at_least_f32(dt) + at_least_f32(self.dt_bias))  # (b, l, h)
        A = -torch.exp(at_least_f32(self.A_log))  # (h,)
        D = at_least_f32(self.D)  # (h,)

        if algorithm == "cpu":  # reads x, B, C inside xBC in place
            y = ssd_scan_cpu_packed(xBC, dt, A, D, n, reverse=reverse)  # (b, l, e)
        else:
            xs, B, C = torch.split(xBC, [e, n, n], dim=-1)  # (b, l, e), (b, l, n), (b, l, n)
            if algorithm == "scan":
                # SSD is S6 with A and dt shared by the p channels of a head: channel i = head*p + j
                A_e = A.repeat_interleave(p).unsqueeze(-1).expand(e, n)  # (e, n)
                dt_e = dt.repeat_interleave(p, dim=-1).transpose(1, 2)  # (b, e, l)
                y = selective_scan(xs.transpose(1, 2), dt_e, A_e, B.transpose(1, 2),
                                   C.transpose(1, 2), D.repeat_interleave(p), None,
                                   delta_bias=None, delta_softplus=False,
                                   backend=cfg.scan_backend).transpose(1, 2)  # (b, l, e)
            else:
                y = ssd(xs.unflatten(-1, (h, p)), dt, A, B, C, D, algorithm=algorithm,
                        chunk_size=cfg.chunk_size).flatten(2)  # (b, l, e)

        y = self.norm(y.to(z.dtype), z)  # (b, l, e) gated RMSNorm
        out = self.out_proj(y)  # (b, l, d)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)  # (b, l, d)
        return out

    # ------------------------------------------------------------------ recurrent

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> Mamba2State:
        check_positive_int("batch_size", batch_size)
        cfg = self.config
        device = self.A_log.device if device is None else device
        dtype = self.A_log.dtype if dtype is None else dtype
        return Mamba2State(
            conv_state=torch.zeros(batch_size, cfg.d_inner + 2 * cfg.d_state, cfg.d_conv - 1,
                                   device=device, dtype=dtype),
            ssm_state=torch.zeros(batch_size, cfg.nheads, cfg.headdim, cfg.d_state,
                                  device=device, dtype=dtype),
        )

    def step(self, x_t: torch.Tensor, state: Mamba2State) -> tuple[torch.Tensor, Mamba2State]:
        validate_token(self, x_t, self.d_model)
        cfg = self.config
        b = x_t.shape[0]
        e, n, h, p, k = cfg.d_inner, cfg.d_state, cfg.nheads, cfg.headdim, cfg.d_conv
        if not isinstance(state, Mamba2State):
            raise ValueError(f"state must be a Mamba2State, got {type(state).__name__}")
        validate_state_tensor("conv_state", state.conv_state, (b, e + 2 * n, k - 1))
        validate_state_tensor("ssm_state", state.ssm_state, (b, h, p, n))

        z, xBC, dt = self._split_in_proj(self.in_proj(x_t))  # (b, e), (b, e+2n), (b, h)
        window = torch.cat([state.conv_state, xBC.unsqueeze(-1)], dim=-1)  # (b, e+2n, k)
        xBC = (window * self.conv1d.weight[:, 0, :]).sum(-1)  # (b, e+2n)
        if self.conv1d.bias is not None:
            xBC = xBC + self.conv1d.bias  # (b, e+2n)
        xs, B, C = torch.split(F.silu(xBC), [e, n, n], dim=-1)  # (b, e), (b, n), (b, n)
        xs = xs.reshape(b, h, p)  # (b, h, p)

        dt = F.softplus(dt + self.dt_bias)  # (b, h)
        dA = torch.exp(dt * -torch.exp(self.A_log))  # (b, h)
        dBx = (dt.unsqueeze(-1) * xs).unsqueeze(-1) * B[:, None, None, :]  # (b, h, p, n)
        hs = dA[..., None, None] * state.ssm_state + dBx  # (b, h, p, n)
        y = (hs * C[:, None, None, :]).sum(-1) + self.D[:, None] * xs  # (b, h, p)
        y = self.norm(y.reshape(b, e), z)  # (b, e)
        return self.out_proj(y), Mamba2State(conv_state=window[..., 1:], ssm_state=hs)

    def prefill(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, Mamba2State]:
        """The parallel path over right-padded ``x (b, l, d)`` with ``lengths (b,)`` real tokens per row:
        ``(forward(x, mask), state after each row's last token)``. dt is zeroed at padding (no decay, no
        input), so the state after the whole sequence is each row's state at its own last token: the
        fused CPU kernel (algorithm auto / cpu) hands it back beside y, at the forward's cost; other
        algorithms, and calls that need a gradient through the state, take the chunked SSD."""
        validate_sequence(self, x, None, self.d_model)
        cfg = self.config
        b, l, _ = x.shape
        e, n, h, p = cfg.d_inner, cfg.d_state, cfg.nheads, cfg.headdim
        lengths = check_lengths(lengths, b, l, x.device)  # (b,)
        padded = has_padding(lengths, l)  # full rows (a single prompt) skip every mask product
        keep = lengths_mask(lengths, l).unsqueeze(-1) if padded else None  # (b, l, 1)
        if padded:
            x = x * keep.to(x.dtype)  # (b, l, d)
        z, xBC, dt = split_linear(x, self.in_proj.weight, self.in_proj.bias,
                                  (e, e + 2 * n, h))  # (b, l, e), (b, l, e+2n), (b, l, h)
        conv_state = trailing_window(xBC.transpose(1, 2), lengths, cfg.d_conv - 1)  # (b, e+2n, k-1)
        xBC = causal_conv1d_silu(xBC, self.conv1d.weight[:, 0, :], self.conv1d.bias)  # (b, l, e+2n)
        dt = F.softplus(at_least_f32(dt) + at_least_f32(self.dt_bias))  # (b, l, h)
        if padded:
            dt = dt * keep  # (b, l, h) zero at padding: the state stops at each row's last token
        A, D = -torch.exp(at_least_f32(self.A_log)), at_least_f32(self.D)  # (h,), (h,)
        if self._kernel_prefill(x):
            y, last = ssd_scan_cpu_packed(xBC, dt, A, D, n, return_final_state=True)  # (b, l, e), (b, h, p, n)
        else:
            xs, B, C = torch.split(xBC, [e, n, n], dim=-1)  # (b, l, e), (b, l, n), (b, l, n)
            y, last = ssd_chunked(xs.unflatten(-1, (h, p)), dt, A, B, C, cfg.chunk_size, D,
                                  return_final_state=True)  # (b, l, h, p), (b, h, p, n)
            y = y.flatten(2)  # (b, l, e)
        out = self.out_proj(self.norm(y.to(z.dtype), z))  # (b, l, d)
        if padded:
            out = out * keep.to(out.dtype)  # (b, l, d)
        return out, Mamba2State(conv_state=conv_state, ssm_state=last.to(self.A_log.dtype))

    def _kernel_prefill(self, x: torch.Tensor) -> bool:
        """Whether prefill takes the fused CPU kernel: the algorithm resolves to it, and no gradient is
        asked for (the kernel's final state takes none; the chunked SSD's does)."""
        algorithm = self.config.algorithm
        if algorithm == "scan" or resolve_algorithm(algorithm, x.device) != "cpu":
            return False
        return not (torch.is_grad_enabled() and (x.requires_grad or any(q.requires_grad for q in self.parameters())))

    def extra_repr(self) -> str:
        c = self.config
        return (f"d_model={c.d_model}, d_inner={c.d_inner}, nheads={c.nheads}, "
                f"headdim={c.headdim}, d_state={c.d_state}, chunk_size={c.chunk_size}, "
                f"algorithm={c.algorithm!r}")
