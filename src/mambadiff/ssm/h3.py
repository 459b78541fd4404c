"""H3: Hungry Hungry Hippos, Fu et al. 2023, "Hungry Hungry Hippos: Towards Language Modeling with
State Space Models" (ICLR 2023), section 3.1.

Glossary: b batch, l length, d model width, h heads, p head dim (d = h p), n diagonal SSM state size
(m = n/2 complex modes per channel), s shift SSM state size (taps).

Two SSMs between attention-like projections (per head, with i and j indexing the head's p channels):

    q, k, v = W_q x, W_k x, W_v x                               (b, l, d) each
    k~      = SSM_shift(k)          k~_t = sum_{j<s} T_j k_{t-j}  per channel: a shift-matrix SSM
                                    (A = shift, B = e_1) is a causal FIR filter of s learned taps T
    kv      = k~_i v_j              outer product per head       (b, h, p_i, p_j, l)
    y       = SSM_diag(kv)          a diagonal SSM per key channel (h, i), shared across j, as S4D:
                                    kernel K[t] = 2 Re(sum_m C dB dA^t) (ZOH, B = 1) plus D kv
    o_j     = sum_i q_i y_ij        (b, h, p_j, l)
    out     = W_o o                 (b, l, d)

The shift SSM remembers which key came just before (so k~ at a value token holds its key), the
diagonal SSM accumulates the key-value products over time, and the query reads them out: the
linear-attention-like mechanism that lets H3 recall associations which S4 / S4D cannot.

The parallel path computes both SSMs as causal convolutions by FFT (``fft_causal_conv``); ``step``
runs them as recurrences: a buffer of the last s keys (b, d, s) and the diagonal SSM's complex state
(b, h, p, p, m). ``prefill`` is the parallel path that also returns each row's state after its own
length: its last s keys and sum_t dA^(n-1-t) dB kv_t over its n products, by chunks
(``mambadiff.ssm.lti.modal_sums``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .checks import check_positive_int, validate_sequence, validate_state_tensor, validate_token
from .prefill import check_lengths, has_padding, lengths_mask, trailing_window
from .lti import (check_dt_and_lr_scale, complex_dtype, fft_causal_conv, log_uniform_log_dt, modal_sums,
                  work_dtype_for)
from .s4d import INITS, s4d_init_imag

__all__ = ["H3Config", "H3State", "H3"]



@dataclass
class H3Config:
    """H3 block: d_model = n_heads * head_dim."""

    d_model: int
    head_dim: int = 8  # p; the diagonal SSM runs over h * p * p products, so cost grows with p
    d_state: int = 64  # n of the diagonal SSM (m = n/2 complex modes); even
    shift_size: int = 4  # s taps of the shift SSM (its state size)
    init: str = "lin"  # diagonal SSM init, as S4D: lin | inv | legs
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    bias: bool = True  # projection biases
    lr_scale: float = 0.1  # `_lr_scale` hint on the diagonal SSM's A and log_dt

    def __post_init__(self):
        for name in ("d_model", "head_dim", "d_state", "shift_size"):
            check_positive_int(name, getattr(self, name))
        if self.d_model % self.head_dim:
            raise ValueError(f"d_model={self.d_model} must be divisible by head_dim={self.head_dim}")
        if self.d_state % 2:
            raise ValueError(f"d_state must be even (n/2 complex modes), got {self.d_state}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        check_dt_and_lr_scale(self.dt_min, self.dt_max, self.lr_scale)

    @property
    def n_heads(self) -> int:
        return self.d_model // self.head_dim


@dataclass
class H3State:
    """Recurrent state of one H3 block."""

    shift_state: torch.Tensor  # (b, d, s) the last s keys, newest first
    ssm_state: torch.Tensor  # (b, h, p, p, m) complex


class H3(nn.Module):
    """H3 sequence mixer (causal).

    Shape contract:
      forward(x (b, l, d_model), mask (b, l) bool | None) -> (b, l, d_model)
        mask is True at real tokens, right-padded; padded inputs are zeroed and padded outputs
        are zero, so padding never affects real positions.
      kernels(l) -> (shift kernel (d, l), diagonal kernel (d, l))
      allocate_state(batch_size) -> H3State (zeros)
      step(x_t (b, d_model), state) -> (y_t (b, d_model), new H3State); reproduces ``forward``.
    """

    def __init__(self, config: H3Config):
        super().__init__()
        self.config = cfg = config
        self.d_model = d = cfg.d_model
        m = cfg.d_state // 2
        self.in_proj = nn.Linear(d, 3 * d, bias=cfg.bias)  # d -> (q, k, v)
        self.out_proj = nn.Linear(d, d, bias=cfg.bias)  # d -> d
        self.shift_taps = nn.Parameter(torch.randn(d, cfg.shift_size) / math.sqrt(cfg.shift_size))  # (d, s)
        self.log_dt = nn.Parameter(log_uniform_log_dt(d, cfg.dt_min, cfg.dt_max))  # (d,)
        self.log_A_real = nn.Parameter(torch.full((d, m), math.log(0.5)))  # (d, m) Re A = -1/2
        self.A_imag = nn.Parameter(s4d_init_imag(cfg.init, cfg.d_state).float().repeat(d, 1))  # (d, m)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(d, m, dtype=torch.cfloat)).clone())  # (d, m, 2)
        self.D = nn.Parameter(torch.randn(d))  # (d,)
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._no_weight_decay = True
            p._lr_scale = cfg.lr_scale

    # ------------------------------------------------------------------ SSM parameters

    def _discrete(self, work: torch.dtype):
        """Diagonal SSM, ZOH with B = 1: dtA, dA, dB, C (d, m) complex."""
        cdtype = complex_dtype(work)
        dt = torch.exp(self.log_dt.to(work))  # (d,)
        A = torch.complex(-torch.exp(self.log_A_real.to(work)), self.A_imag.to(work))  # (d, m)
        dtA = A * dt.unsqueeze(-1)  # (d, m)
        dA = torch.exp(dtA)  # (d, m)
        dB = (dA - 1.0) / A  # (d, m)
        C = torch.view_as_complex(self.C.to(work).contiguous()).to(cdtype)  # (d, m)
        return dtA, dA, dB, C

    def kernels(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift kernel (d, length) (the taps, zero past s) and diagonal kernel (d, length)."""
        check_positive_int("length", length)
        work = work_dtype_for(self.log_dt)
        taps = self.shift_taps.to(work)[:, :length]  # (d, min(s, l))
        shift = nn.functional.pad(taps, (0, length - taps.shape[1]))  # (d, l)
        dtA, _, dB, C = self._discrete(work)
        j = torch.arange(length, device=dtA.device, dtype=dtA.real.dtype)  # (l,)
        vandermonde = torch.exp(dtA.unsqueeze(-1) * j)  # (d, m, l) dA^j
        diag = 2.0 * torch.einsum("dm,dml->dl", C * dB, vandermonde).real  # (d, l)
        return shift, diag

    # ------------------------------------------------------------------ parallel

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.parallel(x, mask)[0]

    def parallel(self, x: torch.Tensor, mask: torch.Tensor | None):
        """The output (b, l, d), the keys k (b, d, l) and their products kv (b, h, p, p, l) with the
        shifted keys (both in the work dtype, zero at padding)."""
        validate_sequence(self, x, mask, self.d_model)
        b, l, d = x.shape
        h, p = self.config.n_heads, self.config.head_dim
        work = work_dtype_for(self.log_dt)
        qkv = self.in_proj(x)  # (b, l, 3d)
        if mask is not None:
            qkv = qkv * mask.unsqueeze(-1).to(qkv.dtype)  # (b, l, 3d) padding contributes nothing
        q, k, v = qkv.to(work).transpose(1, 2).chunk(3, dim=1)  # (b, d, l) each
        shift, diag = self.kernels(l)  # (d, l) each
        k_shift = fft_causal_conv(k, shift)  # (b, d, l)
        kv = k_shift.view(b, h, p, 1, l) * v.reshape(b, h, 1, p, l)  # (b, h, p_i, p_j, l)
        y = fft_causal_conv(kv, diag.view(h, p, 1, l)) + self.D.to(work).view(h, p, 1, 1) * kv  # (b, h, p, p, l)
        o = torch.einsum("bhil,bhijl->bhjl", q.reshape(b, h, p, l), y)  # (b, h, p, l)
        out = self.out_proj(o.reshape(b, d, l).transpose(1, 2).to(x.dtype))  # (b, l, d)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)  # (b, l, d)
        return out, k, kv

    def prefill(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, H3State]:
        """The parallel path over right-padded ``x (b, l, d)`` with ``lengths (b,)`` real tokens per row:
        ``(forward(x, mask), state after each row's last token)``; ``step`` continues from the state."""
        validate_sequence(self, x, None, self.d_model)
        b, l, _ = x.shape
        h, p, m = self.config.n_heads, self.config.head_dim, self.config.d_state // 2
        lengths = check_lengths(lengths, b, l, x.device)  # (b,)
        mask = lengths_mask(lengths, l) if has_padding(lengths, l) else None  # (b, l); full rows need none
        out, k, kv = self.parallel(x, mask)  # (b, l, d), (b, d, l), (b, h, p, p, l)
        keys = trailing_window(k, lengths, self.config.shift_size).flip(-1)  # (b, d, s) newest first
        dtA, _, dB, _ = self._discrete(work_dtype_for(self.log_dt))  # (d, m) each
        # key channel (h, i) is the diagonal SSM's channel; its p value channels j share its dA. The
        # products lie time-major (j fastest, from the broadcast), so (b, h p_i, l, p_j) is a view
        sums = modal_sums(kv.transpose(-1, -2).reshape(b, h * p, l, p), lengths, dtA)  # (b, h p_i, p_j, m)
        ssm = dB.view(h, p, 1, m) * sums.view(b, h, p, p, m)  # (b, h, p, p, m)
        return out, H3State(shift_state=keys, ssm_state=ssm)

    # ------------------------------------------------------------------ recurrent

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> H3State:
        """Zeros; ``dtype`` is the real dtype (the SSM state is its complex counterpart)."""
        check_positive_int("batch_size", batch_size)
        cfg = self.config
        device = self.log_dt.device if device is None else device
        dtype = work_dtype_for(self.log_dt) if dtype is None else dtype
        shift = torch.zeros(batch_size, cfg.d_model, cfg.shift_size, device=device, dtype=dtype)  # (b, d, s)
        ssm = torch.zeros(batch_size, cfg.n_heads, cfg.head_dim, cfg.head_dim, cfg.d_state // 2,
                          device=device, dtype=complex_dtype(dtype))  # (b, h, p, p, m)
        return H3State(shift_state=shift, ssm_state=ssm)

    def step(self, x_t: torch.Tensor, state: H3State) -> tuple[torch.Tensor, H3State]:
        validate_token(self, x_t, self.d_model)
        cfg = self.config
        b, d = x_t.shape
        h, p, m = cfg.n_heads, cfg.head_dim, cfg.d_state // 2
        if not isinstance(state, H3State):
            raise ValueError(f"state must be an H3State, got {type(state).__name__}")
        validate_state_tensor("shift_state", state.shift_state, (b, d, cfg.shift_size))
        validate_state_tensor("ssm_state", state.ssm_state, (b, h, p, p, m))
        if not state.ssm_state.is_complex():
            raise ValueError(f"state.ssm_state must be complex, got {state.ssm_state.dtype}")

        work = work_dtype_for(self.log_dt)
        q, k, v = self.in_proj(x_t).to(work).chunk(3, dim=-1)  # (b, d) each
        keys = torch.cat([k.unsqueeze(-1), state.shift_state.to(work)[..., :-1]], dim=-1)  # (b, d, s) newest first
        k_shift = (keys * self.shift_taps.to(work)).sum(-1)  # (b, d)
        kv = k_shift.view(b, h, p, 1) * v.view(b, h, 1, p)  # (b, h, p_i, p_j)
        _, dA, dB, C = self._discrete(work)  # (d, m) each
        s = dA.view(h, p, 1, m) * state.ssm_state.to(dA.dtype) + dB.view(h, p, 1, m) * kv.unsqueeze(-1)  # (b, h, p, p, m)
        y = 2.0 * (s * C.view(h, p, 1, m)).sum(-1).real + self.D.to(work).view(h, p, 1) * kv  # (b, h, p, p)
        o = torch.einsum("bhi,bhij->bhj", q.view(b, h, p), y)  # (b, h, p)
        out = self.out_proj(o.reshape(b, d).to(x_t.dtype))  # (b, d)
        return out, H3State(shift_state=keys, ssm_state=s)

    def extra_repr(self) -> str:
        c = self.config
        return (f"d_model={c.d_model}, heads={c.n_heads}, head_dim={c.head_dim}, d_state={c.d_state}, "
                f"shift_size={c.shift_size}, init={c.init!r}")
