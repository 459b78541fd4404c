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

The parallel path is ``ssd_chunked``: the sequence is cut into chunks of q tokens; inside a
chunk the output is a masked attention-like matmul (C B^T weighted by a decay matrix built
with a stable segment sum in log space); across chunks only the (h, p, n) states are passed.
``ssd_reference`` is the plain sequential loop it is tested against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .mamba import (
    _check_dt_range,
    _check_positive_int,
    at_least_f32,
    init_dt_bias,
    validate_sequence,
    validate_state_tensor,
    validate_token,
)
from .norm import RMSNorm
from .scan import BACKENDS, selective_scan

__all__ = ["Mamba2Config", "Mamba2State", "Mamba2", "ssd_chunked", "ssd_reference", "segsum"]

ALGORITHMS = ("chunked", "scan")


# --------------------------------------------------------------------------- SSD kernels


def _check_ssd_inputs(x, dt, A, B, C, D, initial_state) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must have shape (b, l, h, p), got {tuple(x.shape)}")
    b, l, h, p = x.shape
    if tuple(dt.shape) != (b, l, h):
        raise ValueError(f"dt must have shape (b, l, h)=({b}, {l}, {h}), got {tuple(dt.shape)}")
    if tuple(A.shape) != (h,):
        raise ValueError(f"A must have shape (h,)=({h},), got {tuple(A.shape)}")
    if B.ndim != 3 or tuple(B.shape[:2]) != (b, l):
        raise ValueError(f"B must have shape (b, l, n) with (b, l)=({b}, {l}), "
                         f"got {tuple(B.shape)}")
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f"C must have the shape of B {tuple(B.shape)}, got {tuple(C.shape)}")
    if D is not None and tuple(D.shape) != (h,):
        raise ValueError(f"D must have shape (h,)=({h},), got {tuple(D.shape)}")
    n = B.shape[-1]
    if initial_state is not None and tuple(initial_state.shape) != (b, h, p, n):
        raise ValueError(f"initial_state must have shape (b, h, p, n)=({b}, {h}, {p}, {n}), "
                         f"got {tuple(initial_state.shape)}")


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Segment sums of log-decays: a (..., t) -> S (..., t, t) with

        S[..., i, j] = a[j+1] + ... + a[i]   for i >= j  (0 on the diagonal)
        S[..., i, j] = -inf                  for i <  j  (exp gives the causal zero)

    Computed as a cumulative sum of masked copies rather than as cumsum[i] - cumsum[j], which
    would subtract two large numbers and lose all precision for long, strongly decaying spans.
    """
    t = a.shape[-1]
    strictly_lower = torch.ones(t, t, dtype=torch.bool, device=a.device).tril(-1)  # (t, t)
    rep = a.unsqueeze(-1).expand(*a.shape, t)  # (..., t, t)  rep[..., k, j] = a[k]
    rep = rep.masked_fill(~strictly_lower, 0.0)  # keep a[k] only for k > j
    s = rep.cumsum(dim=-2)  # (..., t, t)  s[..., i, j] = sum_{j < k <= i} a[k]
    lower = torch.ones(t, t, dtype=torch.bool, device=a.device).tril(0)  # (t, t)
    return s.masked_fill(~lower, -math.inf)  # (..., t, t)


def ssd_chunked(
    x: torch.Tensor,  # (b, l, h, p)
    dt: torch.Tensor,  # (b, l, h) already positive (after softplus)
    A: torch.Tensor,  # (h,) negative
    B: torch.Tensor,  # (b, l, n)
    C: torch.Tensor,  # (b, l, n)
    chunk_size: int = 64,
    D: torch.Tensor | None = None,  # (h,)
    initial_state: torch.Tensor | None = None,  # (b, h, p, n)
    return_final_state: bool = False,
):
    """SSD by the chunked matmul algorithm. Returns y (b, l, h, p) [, final state (b, h, p, n)].

    l need not be a multiple of ``chunk_size``: the tail is padded with dt = 0 and x = 0, which
    neither decays nor feeds the state, so the final state is unaffected. Half-precision inputs
    are computed in float32 and y is returned in x's dtype.
    """
    _check_ssd_inputs(x, dt, A, B, C, D, initial_state)
    _check_positive_int("chunk_size", chunk_size)
    out_dtype = x.dtype
    x, dt, A, B, C = (at_least_f32(t) for t in (x, dt, A, B, C))
    b, l, h, p = x.shape
    n = B.shape[-1]
    q = chunk_size
    pad = (-l) % q
    x_in = x
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))  # (b, l', h, p)
        dt = F.pad(dt, (0, 0, 0, pad))  # (b, l', h)
        B = F.pad(B, (0, 0, 0, pad))  # (b, l', n)
        C = F.pad(C, (0, 0, 0, pad))  # (b, l', n)
    c = (l + pad) // q

    X = (x * dt.unsqueeze(-1)).reshape(b, c, q, h, p)  # (b, c, q, h, p) input scaled by dt
    a = (dt * A).reshape(b, c, q, h).permute(0, 3, 1, 2)  # (b, h, c, q) log-decay per token
    Bc = B.reshape(b, c, q, n)  # (b, c, q, n)
    Cc = C.reshape(b, c, q, n)  # (b, c, q, n)

    # 1) intra-chunk: y_i = sum_{j<=i} (C_i . B_j) exp(a_{j+1} + ... + a_i) X_j
    L = torch.exp(segsum(a))  # (b, h, c, q, q)
    scores = Cc @ Bc.transpose(-1, -2)  # (b, c, q, q)  [i, j] = C_i . B_j
    M = scores.unsqueeze(1) * L  # (b, h, c, q, q)
    y_diag = torch.einsum("bhcij,bcjhp->bcihp", M, X)  # (b, c, q, h, p)

    # 2) state contributed by each chunk on its own, at the chunk's end
    decay_to_end = L[..., -1, :]  # (b, h, c, q)  exp(a_{j+1} + ... + a_{q-1})
    Xw = X * decay_to_end.permute(0, 2, 3, 1).unsqueeze(-1)  # (b, c, q, h, p)
    chunk_states = torch.einsum("bcjhp,bcjn->bchpn", Xw, Bc)  # (b, c, h, p, n)

    # 3) inter-chunk: pass states along chunks, S_{z} = sum_{c' < z} decay(c'..z) * states_{c'}
    if initial_state is None:
        initial_state = x.new_zeros(b, h, p, n)  # (b, h, p, n)
    all_states = torch.cat([at_least_f32(initial_state).to(x.dtype).unsqueeze(1),
                            chunk_states], dim=1)  # (b, c+1, h, p, n)
    chunk_decay = F.pad(a.sum(-1), (1, 0))  # (b, h, c+1)  total log-decay of each chunk
    decay_chunk = torch.exp(segsum(chunk_decay))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, all_states)  # (b, c+1, h, p, n)
    prev_states = states[:, :-1]  # (b, c, h, p, n) state entering each chunk
    final_state = states[:, -1]  # (b, h, p, n)

    # 4) contribution of the entering state to each position: C_i . (decay(0..i) * S)
    decay_from_start = torch.exp(a.cumsum(-1)).permute(0, 2, 3, 1)  # (b, c, q, h)
    y_off = torch.einsum("bcin,bchpn->bcihp", Cc, prev_states)  # (b, c, q, h, p)
    y_off = y_off * decay_from_start.unsqueeze(-1)  # (b, c, q, h, p)

    y = (y_diag + y_off).reshape(b, c * q, h, p)[:, :l]  # (b, l, h, p)
    if D is not None:
        y = y + x_in * at_least_f32(D)[:, None]  # (b, l, h, p)
    y = y.to(out_dtype)
    return (y, final_state) if return_final_state else y


def ssd_reference(
    x: torch.Tensor,  # (b, l, h, p)
    dt: torch.Tensor,  # (b, l, h)
    A: torch.Tensor,  # (h,)
    B: torch.Tensor,  # (b, l, n)
    C: torch.Tensor,  # (b, l, n)
    D: torch.Tensor | None = None,  # (h,)
    initial_state: torch.Tensor | None = None,  # (b, h, p, n)
    return_final_state: bool = False,
):
    """SSD as a plain sequential loop (the oracle). Returns y (b, l, h, p) [, state (b, h, p, n)]."""
    _check_ssd_inputs(x, dt, A, B, C, D, initial_state)
    b, l, h, p = x.shape
    n = B.shape[-1]
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state  # (b, h, p, n)
    ys = []
    for t in range(l):
        dA = torch.exp(dt[:, t] * A)  # (b, h)
        dBx = (dt[:, t, :, None] * x[:, t]).unsqueeze(-1) * B[:, t, None, None, :]  # (b, h, p, n)
        state = dA[..., None, None] * state + dBx  # (b, h, p, n)
        ys.append((state * C[:, t, None, None, :]).sum(-1))  # (b, h, p)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)  # (b, l, h, p)
    if D is not None:
        y = y + x * D[:, None]  # (b, l, h, p)
    return (y, state) if return_final_state else y


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
    algorithm: str = "chunked"  # "chunked" (SSD matmuls) or "scan" (selective_scan backend)
    scan_backend: str = "auto"  # passed to selective_scan(backend=) when algorithm == "scan"

    def __post_init__(self):
        for name in ("d_model", "d_state", "d_conv", "expand", "headdim", "chunk_size"):
            _check_positive_int(name, getattr(self, name))
        if self.d_inner % self.headdim != 0:
            raise ValueError(f"headdim must divide d_inner = expand * d_model = {self.d_inner}, "
                             f"got headdim={self.headdim}")
        _check_dt_range(self.dt_min, self.dt_max, self.dt_init_floor)
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
        cfg = self.config
        e, n, h = cfg.d_inner, cfg.d_state, cfg.nheads
        return torch.split(zxbcdt, [e, e + 2 * n, h], dim=-1)  # z (.., e), xBC (.., e+2n), dt

    # ------------------------------------------------------------------ parallel

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        validate_sequence(self, x, mask, self.d_model)
        cfg = self.config
        b, l, _ = x.shape
        e, n, h, p = cfg.d_inner, cfg.d_state, cfg.nheads, cfg.headdim
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)  # (b, l, d) padded inputs zeroed

        z, xBC, dt = self._split_in_proj(self.in_proj(x))  # (b, l, e), (b, l, e+2n), (b, l, h)
        xBC = self.conv1d(xBC.transpose(1, 2))[..., :l].transpose(1, 2)  # (b, l, e+2n) causal
        xs, B, C = torch.split(F.silu(xBC), [e, n, n], dim=-1)  # (b, l, e), (b, l, n), (b, l, n)
        dt = F.softplus(at_least_f32(dt) + at_least_f32(self.dt_bias))  # (b, l, h)
        A = -torch.exp(at_least_f32(self.A_log))  # (h,)
        D = at_least_f32(self.D)  # (h,)

        if cfg.algorithm == "chunked":
            y = ssd_chunked(xs.reshape(b, l, h, p), dt, A, B, C, cfg.chunk_size, D)  # (b,l,h,p)
            y = y.reshape(b, l, e)  # (b, l, e)
        else:
            # SSD is S6 with A and dt shared by the p channels of a head: channel i = head*p + j
            A_e = A.repeat_interleave(p).unsqueeze(-1).expand(e, n)  # (e, n)
            dt_e = dt.repeat_interleave(p, dim=-1).transpose(1, 2)  # (b, e, l)
            y = selective_scan(xs.transpose(1, 2), dt_e, A_e, B.transpose(1, 2),
                               C.transpose(1, 2), D.repeat_interleave(p), None,
                               delta_bias=None, delta_softplus=False,
                               backend=cfg.scan_backend)  # (b, e, l)
            y = y.transpose(1, 2)  # (b, l, e)

        y = self.norm(y.to(z.dtype), z)  # (b, l, e) gated RMSNorm
        out = self.out_proj(y)  # (b, l, d)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)  # (b, l, d)
        return out

    # ------------------------------------------------------------------ recurrent

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> Mamba2State:
        _check_positive_int("batch_size", batch_size)
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

    def extra_repr(self) -> str:
        c = self.config
        return (f"d_model={c.d_model}, d_inner={c.d_inner}, nheads={c.nheads}, "
                f"headdim={c.headdim}, d_state={c.d_state}, chunk_size={c.chunk_size}, "
                f"algorithm={c.algorithm!r}")
