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

The parallel path computes the shift SSM as a depthwise convolution of s taps and the diagonal SSM
by chunks of matrix products (``mambadiff.ssm.chunked``: each key channel's kernel is shared by the
b p value channels of its products, so the products are wide); ``step`` runs them as recurrences: a buffer of the last s keys (b, d, s) and the diagonal SSM's complex state
(b, h, p, p, m). ``prefill`` is the parallel path that also returns each row's state after its own
length: its last s keys and sum_t dA^(n-1-t) dB kv_t over its n products, by chunks
(``mambadiff.ssm.lti.modal_sums``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_positive_int, validate_sequence, validate_state_tensor, validate_token
from .prefill import check_lengths, has_padding, lengths_mask, trailing_window
from .channel_first import linear_from_channels, linear_to_channels
from .chunked import chunk_length, chunked_conv, modal_tables
from .lti import check_dt_and_lr_scale, complex_dtype, log_uniform_log_dt, modal_sums, vandermonde_kernel, work_dtype_for
from .s4d import INITS, s4d_init_imag

__all__ = ["H3Config", "H3State", "H3"]



def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a * b broadcast into a new contiguous tensor. Written through ``out=``: for the (h, p, n, b, p, c)
    products of two contiguous factors broadcast along different dims, torch's out-of-place multiply
    picks a loop order several times slower (measured 4-9x) than filling a contiguous output."""
    out = a.new_empty(torch.broadcast_shapes(a.shape, b.shape))
    return torch.mul(a, b, out=out)


class _KeyValueProduct(torch.autograd.Function):
    """kv_ij = k~_i v_j: k~ (h, p_i, n, b, 1, c), v (h, 1, n, b, p_j, c) -> (h, p_i, n, b, p_j, c) contiguous."""

    @staticmethod
    def forward(ctx, k, v):
        ctx.save_for_backward(k, v)
        return _product(k, v)

    @staticmethod
    def backward(ctx, g):
        k, v = ctx.saved_tensors
        g = g.contiguous()
        gk = _product(g, v).sum(4, keepdim=True) if ctx.needs_input_grad[0] else None  # (h, p_i, n, b, 1, c)
        gv = _product(g, k).sum(1, keepdim=True) if ctx.needs_input_grad[1] else None  # (h, 1, n, b, p_j, c)
        return gk, gv


class _QueryContraction(torch.autograd.Function):
    """o_j = sum_i q_i y_ij: q (h, p_i, n, b, 1, c), y (h, p_i, n, b, p_j, c) -> (h, n, b, p_j, c).

    Autograd's backward of ``(q * y).sum(1)`` multiplies by the gradient broadcast along i (a zero stride),
    so y's gradient comes out in another layout and is copied back; here it is the broadcast product of
    two contiguous factors, contiguous like y."""

    @staticmethod
    def forward(ctx, q, y):
        ctx.save_for_backward(q, y)
        return _product(q, y).sum(1)  # (h, n, b, p_j, c)

    @staticmethod
    def backward(ctx, go):
        q, y = ctx.saved_tensors
        go = go.contiguous().unsqueeze(1)  # (h, 1, n, b, p_j, c)
        gq = _product(go, y).sum(4, keepdim=True) if ctx.needs_input_grad[0] else None  # (h, p_i, n, b, 1, c)
        gy = _product(q, go) if ctx.needs_input_grad[1] else None  # (h, p_i, n, b, p_j, c)
        return gq, gy


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
        return shift, vandermonde_kernel(*self._modal(work), length)  # (d, l) each

    # ------------------------------------------------------------------ parallel

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, reverse: bool = False) -> torch.Tensor:
        """reverse=True (full rows only, ``mask`` None) is ``flip(forward(flip(x)))``: both SSMs anti-causal,
        which ``Bidirectional`` runs for its backward direction without flipped copies."""
        if reverse and mask is not None:
            raise ValueError("reverse=True needs full rows (mask=None); reverse padded rows with Bidirectional")
        return self.parallel(x, mask, reverse)[0]

    def shift_conv(self, k: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """The shift SSM, k~[t] = sum_{j<s} T_j k[t-j] (reverse: k[t+j]), over k (d, b, l) -> (d, b, l): a
        depthwise conv1d of s taps over the d b rows (the (1, d b, l) view of k), no FFT."""
        d, b, l = k.shape
        s = self.config.shift_size
        taps = self.shift_taps.to(k.dtype)  # (d, s)
        # conv1d correlates: out[t] = sum_j w[j] in[t + j]; causal reads k[t - j], so its taps go flipped
        weight = (taps if reverse else taps.flip(-1)).repeat_interleave(b, dim=0).unsqueeze(1)  # (d b, 1, s)
        padded = F.pad(k.reshape(1, d * b, l), (0, s - 1) if reverse else (s - 1, 0))  # (1, d b, l + s - 1)
        return F.conv1d(padded, weight, groups=d * b).view(d, b, l)  # (d, b, l)

    def parallel(self, x: torch.Tensor, mask: torch.Tensor | None, reverse: bool = False):
        """The output (b, l, d), the keys k and the shifted keys k~ and values v (b, d, l) (work dtype, zero at
        padding).

        The diagonal SSM runs by chunks (``mambadiff.ssm.chunked``): key channel (h, i) is a kernel group whose
        b p value channels j share its kernel, so its products k~_i v_j are laid out (h p, n chunks, b p, c),
        the rows of one wide matrix product per group, and the query contracts them straight after."""
        validate_sequence(self, x, mask, self.d_model)
        b, l, d = x.shape
        h, p = self.config.n_heads, self.config.head_dim
        work = work_dtype_for(self.log_dt)
        qkv = linear_to_channels(x, self.in_proj)  # (3d, b, l)
        if mask is not None:
            qkv = qkv * mask.unsqueeze(0).to(qkv.dtype)  # (3d, b, l) padding contributes nothing
        q, k, v = qkv.to(work).chunk(3, dim=0)  # (d, b, l) each
        k_shift = self.shift_conv(k, reverse)  # (d, b, l)
        c = chunk_length(l)
        n = -(-l // c)
        pad = (0, n * c - l)  # zeros after the end change no real output

        def chunked(t):  # (d, b, l) -> (h, p, n, b, c), contiguous (a copy of a (d, b, l) tensor)
            t = F.pad(t, pad) if n * c != l else t  # (d, b, n c)
            return t.view(h, p, b, n, c).transpose(2, 3).contiguous()

        values = chunked(v).permute(0, 2, 3, 1, 4).contiguous().unsqueeze(1)  # (h, 1, n, b, p_j, c)
        kv = _KeyValueProduct.apply(chunked(k_shift).unsqueeze(4), values)  # (h, p_i, n, b, p_j, c)
        tables = modal_tables(*self._modal(work), self.D.to(work), c)
        y = chunked_conv(kv.view(h * p, 1, n, b * p, c), tables, reverse)  # (h p_i, 1, n, b p_j, c)
        o = _QueryContraction.apply(chunked(q).unsqueeze(4), y.view(h, p, n, b, p, c))  # (h, n, b, p_j, c)
        o = o.permute(0, 3, 2, 1, 4).reshape(d, b, n * c)[..., :l]  # (d, b, l) channel (h, j)
        out = linear_from_channels(o.to(x.dtype), self.out_proj)  # (b, l, d)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)  # (b, l, d)
        return out, k.transpose(0, 1), k_shift.transpose(0, 1), v.transpose(0, 1)

    def _modal(self, work: torch.dtype):
        """The diagonal SSM's kernel weights W = C dB and dtA (d, m) complex: K[j] = 2 Re(sum_m W dA^j)."""
        dtA, _, dB, C = self._discrete(work)  # (d, m) each
        return C * dB, dtA

    def prefill(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, H3State]:
        """The parallel path over right-padded ``x (b, l, d)`` with ``lengths (b,)`` real tokens per row:
        ``(forward(x, mask), state after each row's last token)``; ``step`` continues from the state."""
        validate_sequence(self, x, None, self.d_model)
        b, l, _ = x.shape
        h, p, m = self.config.n_heads, self.config.head_dim, self.config.d_state // 2
        lengths = check_lengths(lengths, b, l, x.device)  # (b,)
        mask = lengths_mask(lengths, l) if has_padding(lengths, l) else None  # (b, l); full rows need none
        out, k, k_shift, v = self.parallel(x, mask)  # (b, l, d), (b, d, l) each
        kv = k_shift.reshape(b, h, p, 1, l) * v.reshape(b, h, 1, p, l)  # (b, h, p_i, p_j, l)
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
