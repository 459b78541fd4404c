"""Shared pieces of the time-invariant (convolutional) state-space mixers: S4D, S4 and H3.

Glossary: b batch, l length, d model width, e inner width (expand*d), m complex modes.

A time-invariant SSM is a causal convolution with a kernel K (e, l) computed from its parameters, so
S4D and S4 share one parallel path (``ConvolutionalSSM.forward``):

    u = in_proj(x)                          (e, b, l)   channel-first (``channel_first``), padding zeroed
    y = K * u + D u                         (e, b, l)   by chunks of matrix products (``chunked``)
    out = out_proj(gelu(y))                 (b, l, d)   linear e -> 2d then GLU, or e -> d

and differ only in how they describe the system (``chunk_tables``; ``kernel`` gives K itself) and in
their recurrent ``step``. ``reverse=True`` runs the anti-causal convolution, the backward direction of
``Bidirectional``, without flipped copies. ``fft_causal_conv`` is the FFT convolution (real FFTs of a
5-smooth size >= 2l - 1), kept as the reference the chunked path is tested against. ``prefill`` is the
parallel path that also returns each row's state after its own length: the state after n inputs is
sum_t dA^(n-1-t) dB u_t (``state_after``, per subclass), one more contraction of the inputs beside the
FFT convolution. It goes by chunks (``mambadiff.ssm.prefill.state_chunks``): a (c, state) table of
powers per channel, shared by every chunk and row, meets the inputs in one real matrix product, and
K = l / c more powers weigh the results, so that no (e, state, l) table of powers is built (the
diagonal mixers' ``modal_sums``; S4's ``state_after``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .channel_first import linear_from_channels, linear_to_channels
from .checks import validate_sequence
from .chunked import chunk_length, chunked_conv, powers
from .prefill import check_lengths, chunk_shape, has_padding, lengths_mask, state_chunks

__all__ = ["complex_dtype", "work_dtype_for", "fft_size", "fft_causal_conv", "log_uniform_log_dt", "check_dt_and_lr_scale",
           "powers", "vandermonde_kernel", "modal_sums", "ConvolutionalSSM"]


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype that pairs with a real one: complex128 for float64, else complex64."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def work_dtype_for(param: torch.Tensor) -> torch.dtype:
    """float64 for a float64 layer, else float32 (kernels and states need at least float32's range)."""
    return torch.float64 if param.dtype == torch.float64 else torch.float32


def fft_size(length: int) -> int:
    """The smallest n >= 2 length - 1 with no prime factor above 5: a linear convolution of two length-l
    sequences has 2l - 1 terms, so a circular one of size n does not wrap, and FFTs of 5-smooth sizes run
    at full speed (a size like 3999 = 3 * 31 * 43 is ~7x slower than 4000)."""
    n = max(2 * length - 1, 1)
    while True:
        m = n
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        if m == 1:
            return n
        n += 1


def fft_causal_conv(u: torch.Tensor, K: torch.Tensor, D: torch.Tensor | None = None,
                    reverse: bool = False) -> torch.Tensor:
    """Causal convolution y[t] = sum_{j<=t} K[j] u[t-j] (+ D u[t]) via real FFTs of ``fft_size(l)``:
    the reference the chunked path is tested against (autograd gives its gradients).

    u (..., e, l), K (e, l), D (e,) | None -> (..., e, l) (K and D may carry more dimensions that
    broadcast against u's, e.g. H3's (h, p, 1, l)). reverse=True: the anti-causal convolution
    y[t] = sum_j K[j] u[t+j], i.e. ``flip(conv(flip(u)))``."""
    l = u.shape[-1]
    n = fft_size(l)
    k_f = torch.fft.rfft(K, n=n)  # (..., f) f = n//2 + 1, broadcasting against u's spectrum
    # anti-causal: a correlation, i.e. the conjugate kernel spectrum
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * (k_f.conj() if reverse else k_f), n=n)[..., :l]  # (..., e, l)
    return y if D is None else y + D.unsqueeze(-1) * u


def log_uniform_log_dt(size: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """log(dt) with dt log-uniform in [dt_min, dt_max]: (size,) float32."""
    u = torch.rand(size, dtype=torch.float64)  # (size,)
    return (u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).float()  # (size,)


def check_dt_and_lr_scale(dt_min: float, dt_max: float, lr_scale: float) -> None:
    """The dt range and learning-rate scale checks every time-invariant mixer's config runs."""
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"dt_min/dt_max must satisfy 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if lr_scale <= 0:
        raise ValueError(f"lr_scale must be > 0, got {lr_scale}")


def vandermonde_kernel(W: torch.Tensor, dtA: torch.Tensor, length: int) -> torch.Tensor:
    """K[:, j] = 2 Re(sum_m W dA^j), j < length, for dA = exp(dtA): W, dtA (e, m) complex -> (e, l) real.

    In real arithmetic: 2 Re(W z) = 2 (Re W Re z - Im W Im z), with z = dA^j from ``powers``, so one real
    batched product with rows [Re W, -Im W] replaces a complex einsum and its complex backward."""
    e, m = W.shape
    V = torch.view_as_real(powers(dtA, torch.arange(length, device=dtA.device)))  # (e, m, l, 2)
    V = V.permute(0, 3, 1, 2).reshape(e, 2 * m, length)  # (e, 2m, l) rows Re z, then Im z
    rows = 2.0 * torch.cat([W.real, -W.imag], dim=-1).unsqueeze(1)  # (e, 1, 2m)
    return (rows @ V).squeeze(1)  # (e, l)


def modal_sums(u: torch.Tensor, lengths: torch.Tensor, dtA: torch.Tensor) -> torch.Tensor:
    """Each row's sum_t dA^(n-1-t) u_t over its own n = lengths[i] inputs, per channel and mode, for a
    diagonal dA = exp(dtA): u (b, e, l, j) real, j values per channel and step sharing its dA (time-major
    within a channel: j contiguous reads no copy); dtA (e, m) complex -> (b, e, j, m) complex.

    Step i K + k of the right-aligned rows (``state_chunks``) is dA^(K (c-1-i)) dA^(K-1-k) from the end:
    the c powers of the first factor, as a real (2m, c) table per channel, meet the inputs in one real
    matrix product over i; the K powers of the second weigh its (m, K, j) results."""
    b, e, l, j = u.shape
    m = dtA.shape[-1]
    c, K = chunk_shape(l)
    x = state_chunks(u, lengths, c, K).flatten(3)  # (b, e, c, K j)
    if x.stride(-1) != 1:
        x = x.contiguous()  # (b, e, c, K j) the product's rows need a unit stride
    table = powers(dtA, K * torch.arange(c - 1, -1, -1, device=u.device))  # (e, m, c) dA^(K (c-1-i))
    table = torch.view_as_real(table).transpose(-1, -2).reshape(e, 2 * m, c)  # (e, 2m, c) rows Re, Im per mode
    sums = (table @ x.to(table.dtype)).view(b, e, m, 2, K, j)  # (b, e, m, 2, K, j) a real product per channel
    sums = torch.complex(sums[:, :, :, 0], sums[:, :, :, 1])  # (b, e, m, K, j)
    outer = powers(dtA, torch.arange(K - 1, -1, -1, device=u.device))  # (e, m, K) dA^(K-1-k)
    return torch.einsum("bemkj,emk->bejm", sums, outer)  # (b, e, j, m)


class ConvolutionalSSM(nn.Module):
    """Base of the convolutional mixers: the parallel path around a subclass's ``kernel(l) -> (e, l)``.

    A subclass sets ``config`` (with d_model, d_inner, glu, bias), ``d_model``, ``log_dt`` (e,) and
    ``D`` (e,), calls ``build_projections()``, and implements ``kernel``, ``allocate_state`` and
    ``step``; ``check_length(l)`` may refuse lengths the kernel cannot cover.
    """

    def build_projections(self) -> None:
        cfg = self.config
        self.in_proj = nn.Linear(cfg.d_model, cfg.d_inner, bias=cfg.bias)  # d -> e
        out_width = 2 * cfg.d_model if cfg.glu else cfg.d_model
        self.out_proj = nn.Linear(cfg.d_inner, out_width, bias=cfg.bias)  # e -> 2d (GLU) or d

    def work_dtype(self) -> torch.dtype:
        return work_dtype_for(self.log_dt)

    def check_length(self, length: int) -> None:
        """Raise ValueError for lengths the kernel cannot cover (every length by default)."""

    def kernel(self, length: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, reverse: bool = False) -> torch.Tensor:
        """reverse=True (full rows only, ``mask`` None) is ``flip(forward(flip(x)))``: the anti-causal
        convolution, which ``Bidirectional`` runs for its backward direction without flipped copies."""
        if reverse and mask is not None:
            raise ValueError("reverse=True needs full rows (mask=None); reverse padded rows with Bidirectional")
        return self.parallel(x, mask, reverse)[0]

    def parallel(self, x: torch.Tensor, mask: torch.Tensor | None,
                 reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The output (b, l, d) and the SSM input u (b, e, l) in the work dtype (zero at padding)."""
        validate_sequence(self, x, mask, self.d_model)
        b, l, _ = x.shape
        self.check_length(l)
        # channel-major in memory, (e, b, l): the FFT reads each channel's steps at unit stride, and the
        # projections write and read that layout in one matrix product each (``channel_first``)
        u = linear_to_channels(x, self.in_proj)  # (e, b, l)
        if mask is not None:
            u = u * mask.unsqueeze(0).to(u.dtype)  # (e, b, l) padded SSM inputs zeroed
        work = self.work_dtype()
        u = u.to(work)  # (e, b, l)
        y = self.convolve(u, reverse)  # (e, b, l) K * u + D u
        out = linear_from_channels(F.gelu(y).to(x.dtype), self.out_proj)  # (b, l, 2d) or (b, l, d)
        if self.config.glu:
            out = F.glu(out, dim=-1)  # (b, l, d)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)  # (b, l, d)
        return out, u.transpose(0, 1)  # (b, l, d), (b, e, l)

    def convolve(self, u: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """K * u + D u over u (e, b, l) in the work dtype, by chunks (``mambadiff.ssm.chunked``): causal, or
        anti-causal with ``reverse``."""
        e, b, l = u.shape
        c = chunk_length(l)
        n = -(-l // c)
        if n * c != l:
            u = F.pad(u, (0, n * c - l))  # (e, b, n c) zeros after the end change no real output
        y = chunked_conv(u.view(e, b, n, 1, c), self.chunk_tables(c), reverse)  # (e, b, n, 1, c)
        return y.view(e, b, n * c)[..., :l]  # (e, b, l)

    def chunk_tables(self, c: int):  # pragma: no cover - abstract
        """The ``ChunkTables`` of the kernel and D for chunks of c steps."""
        raise NotImplementedError

    def prefill(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """The parallel path over right-padded ``x (b, l, d)`` with ``lengths (b,)`` real tokens per row:
        ``(forward(x, mask), state after each row's last token)``; ``step`` continues from the state."""
        validate_sequence(self, x, None, self.d_model)
        b, l, _ = x.shape
        lengths = check_lengths(lengths, b, l, x.device)  # (b,)
        mask = lengths_mask(lengths, l) if has_padding(lengths, l) else None  # (b, l); full rows need none
        out, u = self.parallel(x, mask)  # (b, l, d), (b, e, l)
        return out, self.state_after(u, lengths)

    def state_after(self, u: torch.Tensor, lengths: torch.Tensor):  # pragma: no cover - abstract
        """The recurrent state of each row after its own ``lengths[i]`` inputs ``u (b, e, l)``."""
        raise NotImplementedError

    def mix(self, y: torch.Tensor) -> torch.Tensor:
        """Output projection of the GELU'd SSM output: (..., e) -> (..., d)."""
        out = self.out_proj(y)  # (..., 2d) or (..., d)
        return F.glu(out, dim=-1) if self.config.glu else out  # (..., d)
