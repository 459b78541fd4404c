"""S4D: diagonal state space with a time-invariant convolution kernel, Gu et al. 2022.

Glossary: b batch, l length, d model width, e inner (SSM) width, n state size (real count),
m = n/2 complex modes per channel (conjugate pairs are implicit, hence the 2*Re below).

Per channel, with complex diagonal A (m,), C (m,), B = 1 and step dt (ZOH):

    dA = exp(dt*A),   dB = (exp(dt*A) - 1) / A
    h_t = dA * h_{t-1} + dB * u_t              (m,) complex
    y_t = 2 * Re(C . h_t) + D * u_t

Unrolled, y = K * u + D u with kernel K[j] = 2 * Re(sum_m C_m dB_m dA_m^j), j = 0..l-1,
computed as a Vandermonde product (``kernel``). Training applies it by chunks of matrix products
(``mambadiff.ssm.chunked.modal_tables``): the diagonal system in real coordinates [Re h, Im h].

Block (x (b, l, d) -> (b, l, d)):
    u   = in_proj(x)                     (b, l, e)
    y   = gelu(K * u + D u)              (b, l, e)
    out = glu(out_proj(y))               (b, l, d)     (or a plain linear if glu=False)

Inits (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models"),
k = 0..m-1:
    "lin"   A = -1/2 + i*pi*k
    "inv"   A = -1/2 + i*(n/pi)*(n/(2k+1) - 1)
    "legs"  A = the m eigenvalues with positive imaginary part of HiPPO-LegS's normal part
            (-1/2 + i*w, see ``mambadiff.ssm.hippo.nplr``): S4 without its low-rank term, in
            ascending order of frequency. B stays 1 as in the other inits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_positive_int, validate_state_tensor, validate_token
from .chunked import modal_tables
from .hippo import nplr
from .lti import (ConvolutionalSSM, check_dt_and_lr_scale, complex_dtype, log_uniform_log_dt, modal_sums,
                  vandermonde_kernel)

__all__ = ["S4DConfig", "S4DState", "S4D", "s4d_init_imag"]

INITS = ("lin", "inv", "legs")


def s4d_init_imag(init: str, d_state: int) -> torch.Tensor:
    """Imaginary parts of the S4D diagonal for the m = d_state/2 modes. Returns (m,) float64."""
    m = d_state // 2
    k = torch.arange(m, dtype=torch.float64)  # (m,)
    if init == "lin":
        return math.pi * k  # (m,)
    if init == "inv":
        return (d_state / math.pi) * (d_state / (2 * k + 1) - 1)  # (m,)
    if init == "legs":
        w = nplr("legs", d_state).Lambda.imag[:m]  # (m,) the positive half, descending
        return w.flip(0).contiguous()  # (m,) ascending, like lin and inv
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


@dataclass
class S4DConfig:
    """S4D block. The SSM runs over e = expand * d_model independent channels."""

    d_model: int
    d_state: int = 64  # n real state size = 2 * m complex modes; must be even
    expand: int = 1  # e = expand * d_model; S4D keeps the SSM at model width by default
    init: str = "lin"  # "lin" (S4D-Lin), "inv" (S4D-Inv) or "legs" (S4D-LegS)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    glu: bool = True  # output mixing: linear e -> 2d then GLU; False: linear e -> d
    bias: bool = True  # in/out projection bias
    lr_scale: float = 0.1  # `_lr_scale` hint on the kernel parameters (A, log_dt)

    def __post_init__(self):
        for name in ("d_model", "d_state", "expand"):
            check_positive_int(name, getattr(self, name))
        if self.d_state % 2 != 0:
            raise ValueError(f"d_state must be even (n/2 complex modes), got {self.d_state}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        check_dt_and_lr_scale(self.dt_min, self.dt_max, self.lr_scale)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


@dataclass
class S4DState:
    """Recurrent state of one S4D block: ssm_state (b, e, m) complex."""

    ssm_state: torch.Tensor  # (b, e, m) complex



class S4D(ConvolutionalSSM):
    """S4D sequence mixer wrapped in in/out projections (time-invariant, causal).

    Shape contract:
      forward(x (b, l, d_model), mask (b, l) bool | None) -> (b, l, d_model)
        mask is True at real tokens, right-padded; padded SSM inputs are zeroed and padded
        outputs are zero. The convolution is causal, so padding never affects real positions.
      kernel(l) -> K (e, l)
      allocate_state(batch_size) -> S4DState (complex zeros)
      step(x_t (b, d_model), state) -> (y_t (b, d_model), new S4DState); reproduces ``forward``.
    """

    def __init__(self, config: S4DConfig):
        super().__init__()
        self.config = cfg = config
        self.d_model = cfg.d_model
        e, m = cfg.d_inner, cfg.d_state // 2

        self.in_proj = nn.Linear(cfg.d_model, e, bias=cfg.bias)  # d -> e
        self.log_dt = nn.Parameter(log_uniform_log_dt(e, cfg.dt_min, cfg.dt_max))  # (e,)
        self.log_A_real = nn.Parameter(torch.full((e, m), math.log(0.5)))  # (e, m) Re A = -1/2
        self.A_imag = nn.Parameter(s4d_init_imag(cfg.init, cfg.d_state).float().repeat(e, 1))
        C = torch.randn(e, m, dtype=torch.cfloat)  # (e, m) complex normal, E|C|^2 = 1
        self.C = nn.Parameter(torch.view_as_real(C).clone())  # (e, m, 2) real view
        self.D = nn.Parameter(torch.randn(e))  # (e,)
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._no_weight_decay = True
            p._lr_scale = cfg.lr_scale

        out_width = 2 * cfg.d_model if cfg.glu else cfg.d_model
        self.out_proj = nn.Linear(e, out_width, bias=cfg.bias)  # e -> 2d (GLU) or d

    # ------------------------------------------------------------------ discretisation

    def _discrete(self, work_dtype: torch.dtype):
        """ZOH discretisation in ``work_dtype`` (float32 or float64).

        Returns dtA (e, m), dA (e, m), dB (e, m) and C (e, m), all complex.
        """
        cdtype = complex_dtype(work_dtype)
        dt = torch.exp(self.log_dt.to(work_dtype))  # (e,)
        A = torch.complex(-torch.exp(self.log_A_real.to(work_dtype)),
                          self.A_imag.to(work_dtype))  # (e, m)
        dtA = A * dt.unsqueeze(-1)  # (e, m)
        dA = torch.exp(dtA)  # (e, m)
        dB = (dA - 1.0) / A  # (e, m)  ZOH with B = 1
        C = torch.view_as_complex(self.C.to(work_dtype).contiguous()).to(cdtype)  # (e, m)
        return dtA, dA, dB, C

    def kernel(self, length: int) -> torch.Tensor:
        """Convolution kernel K (e, length): K[:, j] = 2 Re(sum_m C dB dA^j)."""
        dtA, _, dB, C = self._discrete(self.work_dtype())
        return vandermonde_kernel(C * dB, dtA, length)  # (e, l)

    def chunk_tables(self, c: int):
        """The chunked convolution's tables (``mambadiff.ssm.chunked.modal_tables``) for chunks of c steps."""
        work = self.work_dtype()
        dtA, _, dB, C = self._discrete(work)  # (e, m) each
        return modal_tables(C * dB, dtA, self.D.to(work), c)

    # ------------------------------------------------------------------ recurrent

    def state_after(self, u: torch.Tensor, lengths: torch.Tensor) -> S4DState:
        """State after each row's n = lengths[i] inputs u (b, e, l): h = dB sum_t dA^(n-1-t) u_t."""
        dtA, _, dB, _ = self._discrete(self.work_dtype())  # (e, m) each
        return S4DState(ssm_state=dB * modal_sums(u.unsqueeze(-1), lengths, dtA)[:, :, 0])  # (b, e, m)

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> S4DState:
        """Complex zeros (b, e, m); ``dtype`` is the real dtype (complex64 for float32 etc.)."""
        check_positive_int("batch_size", batch_size)
        device = self.log_dt.device if device is None else device
        dtype = self.work_dtype() if dtype is None else dtype
        cdtype = dtype if dtype.is_complex else complex_dtype(dtype)
        e, m = self.config.d_inner, self.config.d_state // 2
        return S4DState(ssm_state=torch.zeros(batch_size, e, m, device=device, dtype=cdtype))

    def step(self, x_t: torch.Tensor, state: S4DState) -> tuple[torch.Tensor, S4DState]:
        validate_token(self, x_t, self.d_model)
        b = x_t.shape[0]
        e, m = self.config.d_inner, self.config.d_state // 2
        if not isinstance(state, S4DState):
            raise ValueError(f"state must be an S4DState, got {type(state).__name__}")
        validate_state_tensor("ssm_state", state.ssm_state, (b, e, m))
        if not state.ssm_state.is_complex():
            raise ValueError(f"state.ssm_state must be complex, got {state.ssm_state.dtype}")

        work = self.work_dtype()
        _, dA, dB, C = self._discrete(work)  # (e, m) each
        u = self.in_proj(x_t).to(work)  # (b, e)
        h = dA * state.ssm_state.to(dA.dtype) + dB * u.unsqueeze(-1)  # (b, e, m)
        y = 2.0 * (h * C).sum(-1).real + self.D.to(work) * u  # (b, e)
        out = self.mix(F.gelu(y).to(x_t.dtype))  # (b, d)
        return out, S4DState(ssm_state=h)

    def extra_repr(self) -> str:
        c = self.config
        return (f"d_model={c.d_model}, d_inner={c.d_inner}, d_state={c.d_state}, "
                f"init={c.init!r}, glu={c.glu}")
