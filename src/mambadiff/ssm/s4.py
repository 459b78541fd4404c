"""S4: a structured (diagonal plus low-rank) state space, Gu et al. 2022, "Efficiently Modeling Long
Sequences with Structured State Spaces" (ICLR 2022).

Glossary: b batch, l length, d model width, e inner (SSM) width, n = N state size, m = N/2 stored
conjugate pairs, r rank of the low-rank term, L kernel length (= l_max), f frequencies (L//2 + 1).

Per channel the continuous system is x' = A x + B u, y = Re(C x) + D u with the DPLR state matrix

    A = diag(Lambda) - P P*          Lambda (N,), P (N, r) complex

initialised from HiPPO-LegS in the basis of its normal part's eigenvectors (``mambadiff.ssm.hippo``):
Lambda = -1/2 + i w, P = V* P_legs, B = V* B_legs. The system is real (conjugate pairs), so only the
m = N/2 eigenvalues with positive imaginary part are stored and the other half is their conjugate;
every computation uses the full N entries [z, conj(z)]. Re(Lambda) = -exp(log_lambda_re) < 0 keeps
A's Hermitian part negative definite, so A stays stable however the parameters move.

Discretisation with step dt = exp(log_dt) (one per channel):

    bilinear (default)  dA = (I - dt/2 A)^-1 (I + dt/2 A),  dB = (I - dt/2 A)^-1 dt B
    zoh                 dA = exp(dt A),                     dB = A^-1 (dA - I) B

Kernel K[j] = Re(C dA^j dB), j < L. As in S4, the learned output vector is C~ = C (I - dA^L) for
L = l_max, so that the kernel's generating function at the L-th roots of unity w_k = exp(-2 pi i k / L),

    K^(w) = sum_{j<L} K[j] w^j = C~ (I - w dA)^-1 dB,

has, for bilinear, the closed form K^(w) = 2 C~ [g(w) (1 + w) - (1 + w) A]^-1 B with g(w) = (2/dt)(1-w)/(1+w),
i.e. a Cauchy kernel in Lambda corrected by the Woodbury identity for the rank-r term:

    M = D_w + s P P*,  D_w = (2/dt)(1 - w) - (1 + w) Lambda  (diagonal),  s = 1 + w
    K^(w) = 2 [k_CB - s k_CP (I_r + s k_PP)^-1 k_PB],   k_XY = sum_n X_n Y_n / D_w,n

(written without dividing by 1 + w, so w = -1 needs no special case). K is the inverse real FFT of
K^ at the f = L//2 + 1 non-negative frequencies (K is real, so K^ is conjugate symmetric). ZOH has no
Cauchy form: its kernel is built from dense powers (Krylov doubling, O(e N^2 L)); meant for small N.
Inputs shorter than l_max use the first l kernel taps; longer ones are rejected.

Block (x (b, l, d) -> (b, l, d)), as S4D:
    u   = in_proj(x)                     (b, l, e)
    y   = gelu(K * u + D u)              (b, l, e)     by chunks (``chunk_tables``: the dense real system)
    out = glu(out_proj(y))               (b, l, d)     (or a plain linear if glu=False)

``step`` runs the recurrence x_t = dA x_{t-1} + dB u_t on the full complex state (b, e, N); the
bilinear dA is applied in its DPLR form (O(N r) per channel: the inverse by the Woodbury identity),
the ZOH dA as a dense matrix. Both need the true C = C~ (I - dA^L)^-1, computed from dense powers and
cached while gradients are off and the parameters unchanged. ``prefill``'s state after a prompt,
sum_t dA^(n-1-t) dB u_t, is summed by chunks in real coordinates (``state_after``): about log2(l)
products of real (N, N) matrices per channel and one product of the inputs with a (c, N) table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_positive_int, validate_state_tensor, validate_token
from .chunked import dense_tables
from .hippo import nplr
from .lti import ConvolutionalSSM, check_dt_and_lr_scale, complex_dtype, log_uniform_log_dt
from .prefill import chunk_shape, state_chunks

__all__ = ["S4Config", "S4State", "S4", "DISCRETIZATIONS", "dplr_legs_init", "krylov"]

DISCRETIZATIONS = ("bilinear", "zoh")
KERNEL_BLOCK_ELEMENTS = 1 << 21  # (e, f, N) Cauchy terms computed at once: 16 MB in complex64


def dplr_legs_init(d_state: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in its DPLR basis, the m = d_state/2 eigenvalues with positive imaginary part.

    Returns Lambda (m,), P (1, m), B (m,), all complex128.
    """
    d = nplr("legs", d_state)
    m = d_state // 2
    # eigenvalues come by decreasing imaginary part: the first m are the positive half
    return d.Lambda[:m], d.P_diag_basis[:m].mT.contiguous(), d.B_diag_basis[:m]



def krylov(dA: torch.Tensor, dB: torch.Tensor, length: int) -> torch.Tensor:
    """The vectors dA^j dB, j < length, by doubling ([x, dA x] -> [.., dA^2 [x, dA x]]): dA (e, N, N),
    dB (e, N) -> (e, N, length)."""
    vectors = dB.unsqueeze(-1)  # (e, N, 1)
    power = dA  # (e, N, N)
    while vectors.shape[-1] < length:
        vectors = torch.cat([vectors, power @ vectors], dim=-1)  # (e, N, 2j)
        power = power @ power
    return vectors[..., :length]  # (e, N, length)


def _dense_dplr(Lambda: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """diag(Lambda) - P P*: Lambda (e, N), P (r, e, N) -> (e, N, N) complex."""
    return torch.diag_embed(Lambda) - torch.einsum("ren,rek->enk", P, P.conj())  # (e, N, N)


def _with_conjugates(z: torch.Tensor) -> torch.Tensor:
    """(..., m) complex -> (..., N = 2m): the stored half and its conjugates."""
    return torch.cat([z, z.conj()], dim=-1)


def _real_coordinates(dA: torch.Tensor, dB: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``S4.real_transition`` from the dense dA (e, N, N), dB (e, N): M (e, N, N), beta (e, N) real."""
    m = dA.shape[-1] // 2
    plus, minus = dA[:, :m, :m] + dA[:, :m, m:], dA[:, :m, :m] - dA[:, :m, m:]  # (e, m, m) each
    M = torch.cat([torch.cat([plus.real, -minus.imag], -1), torch.cat([plus.imag, minus.real], -1)], -2)  # (e, N, N)
    return M, torch.cat([dB[:, :m].real, dB[:, :m].imag], -1)  # (e, N, N), (e, N)


@dataclass
class S4Config:
    """S4 block. The SSM runs over e = expand * d_model independent channels."""

    d_model: int
    d_state: int = 64  # N, the HiPPO size; must be even (N/2 conjugate pairs are stored)
    l_max: int = 1024  # kernel length L the learned C~ refers to; the longest input
    expand: int = 1  # e = expand * d_model
    discretization: str = "bilinear"  # "bilinear" (S4's Cauchy kernel) or "zoh" (dense, small N)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    glu: bool = True  # output mixing: linear e -> 2d then GLU; False: linear e -> d
    bias: bool = True  # in/out projection bias
    lr_scale: float = 0.1  # `_lr_scale` hint on the state-space parameters (Lambda, P, B, log_dt)

    def __post_init__(self):
        for name in ("d_model", "d_state", "expand", "l_max"):
            check_positive_int(name, getattr(self, name))
        if self.d_state % 2 != 0:
            raise ValueError(f"d_state must be even (N/2 conjugate pairs), got {self.d_state}")
        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {self.discretization!r}")
        check_dt_and_lr_scale(self.dt_min, self.dt_max, self.lr_scale)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


@dataclass
class S4State:
    """Recurrent state of one S4 block: ssm_state (b, e, N) complex (both conjugate halves)."""

    ssm_state: torch.Tensor  # (b, e, N) complex


def _complex_param(z: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.view_as_real(z.to(torch.complex64)).clone())  # (..., 2) real view


class S4(ConvolutionalSSM):
    """S4 sequence mixer wrapped in in/out projections (time-invariant, causal).

    Shape contract:
      forward(x (b, l, d_model), mask (b, l) bool | None) -> (b, l, d_model), l <= l_max
        mask is True at real tokens, right-padded; padded SSM inputs are zeroed and padded
        outputs are zero. The convolution is causal, so padding never affects real positions.
      kernel(l) -> K (e, l), l <= l_max
      allocate_state(batch_size) -> S4State (complex zeros (b, e, N))
      step(x_t (b, d_model), state) -> (y_t (b, d_model), new S4State); reproduces ``forward``.

    Parameters (complex ones stored as (..., 2) real views): log_dt (e,), log_lambda_re and
    lambda_im (e, m), P (r, e, m), B (e, m), C (e, m) = C~ (see the module docstring), D (e,).
    """

    def __init__(self, config: S4Config):
        super().__init__()
        self.config = cfg = config
        self.d_model = cfg.d_model
        e = cfg.d_inner

        self.in_proj = nn.Linear(cfg.d_model, e, bias=cfg.bias)  # d -> e
        self.log_dt = nn.Parameter(log_uniform_log_dt(e, cfg.dt_min, cfg.dt_max))  # (e,)
        Lambda, P, B = dplr_legs_init(cfg.d_state)  # (m,), (r, m), (m,)
        self.log_lambda_re = nn.Parameter(torch.log(-Lambda.real).float().repeat(e, 1))  # (e, m)
        self.lambda_im = nn.Parameter(Lambda.imag.float().repeat(e, 1))  # (e, m)
        self.P = _complex_param(P.unsqueeze(1).expand(-1, e, -1))  # (r, e, m, 2)
        self.B = _complex_param(B.expand(e, -1))  # (e, m, 2)
        self.C = _complex_param(torch.randn(e, cfg.d_state // 2, dtype=torch.cfloat))  # (e, m, 2) C~
        self.D = nn.Parameter(torch.randn(e))  # (e,)
        for p in (self.log_dt, self.log_lambda_re, self.lambda_im, self.P, self.B):
            p._no_weight_decay = True
            p._lr_scale = cfg.lr_scale

        out_width = 2 * cfg.d_model if cfg.glu else cfg.d_model
        self.out_proj = nn.Linear(e, out_width, bias=cfg.bias)  # e -> 2d (GLU) or d
        self._step_cache: tuple | None = None

    # ------------------------------------------------------------------ parameters

    def ssm_parameters(self, work_dtype: torch.dtype | None = None):
        """Full conjugate-symmetric parameters in ``work_dtype`` (default: the parameters' precision).

        Returns dt (e,) real, Lambda (e, N), P (r, e, N), B (e, N), C~ (e, N), all complex but dt.
        """
        work = self.work_dtype() if work_dtype is None else work_dtype
        cdtype = complex_dtype(work)

        def cplx(p):
            return torch.view_as_complex(p.to(work).contiguous()).to(cdtype)

        dt = torch.exp(self.log_dt.to(work))  # (e,)
        Lambda = torch.complex(-torch.exp(self.log_lambda_re.to(work)), self.lambda_im.to(work))  # (e, m)
        return (dt, _with_conjugates(Lambda), _with_conjugates(cplx(self.P)), _with_conjugates(cplx(self.B)),
                _with_conjugates(cplx(self.C)))

    def dense_state_matrix(self, work_dtype: torch.dtype | None = None) -> torch.Tensor:
        """A = diag(Lambda) - P P* as a dense (e, N, N) complex matrix."""
        _, Lambda, P, _, _ = self.ssm_parameters(work_dtype)
        return _dense_dplr(Lambda, P)  # (e, N, N)

    def dense_transition(self, work_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense discretisation of the recurrence: dA (e, N, N), dB (e, N)."""
        dt, Lambda, P, B, _ = self.ssm_parameters(work_dtype)
        A = _dense_dplr(Lambda, P)  # (e, N, N)
        N = A.shape[-1]
        eye = torch.eye(N, dtype=A.dtype, device=A.device)  # (N, N)
        dtA = dt[:, None, None] * A  # (e, N, N)
        if self.config.discretization == "bilinear":
            # dA and dB share the left-hand side: one factorisation for both
            rhs = torch.cat([eye + dtA / 2, (dt[:, None] * B).unsqueeze(-1)], dim=-1)  # (e, N, N+1)
            both = torch.linalg.solve(eye - dtA / 2, rhs)  # (e, N, N+1)
            dA, dB = both[..., :N], both[..., N]  # (e, N, N), (e, N)
        else:
            dA = torch.linalg.matrix_exp(dtA)  # (e, N, N)
            dB = torch.linalg.solve(A, ((dA - eye) @ B.unsqueeze(-1))).squeeze(-1)  # (e, N)
        return dA, dB

    def dense_discrete(self, work_dtype: torch.dtype | None = None):
        """Dense discretisation: dA (e, N, N), dB (e, N) and the true output row C (e, N)."""
        dA, dB = self.dense_transition(work_dtype)
        C_tilde = self.ssm_parameters(work_dtype)[4]  # (e, N)
        eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device)  # (N, N)
        dA_L = torch.linalg.matrix_power(dA, self.config.l_max)  # (e, N, N)
        # C = C~ (I - dA^L)^-1  <=>  (I - dA^L)^T C^T = C~^T
        C = torch.linalg.solve((eye - dA_L).mT, C_tilde.unsqueeze(-1)).squeeze(-1)  # (e, N)
        return dA, dB, C

    def real_transition(self, work_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrence in real coordinates: M (e, N, N), beta (e, N) real.

        The system is real, so from real inputs the state is [z, conj(z)] (z the stored half, m = N/2);
        xi = [Re z, Im z] holds it in N reals and steps as xi' = M xi + beta u. From z' = A11 z + A12 conj(z)
        (dA's first m rows, split at m): M = [[Re(A11 + A12), Im(A12 - A11)], [Im(A11 + A12), Re(A11 - A12)]],
        beta = [Re dB, Im dB] over the first half; real products are a quarter of the complex ones' work."""
        return _real_coordinates(*self.dense_transition(work_dtype))

    def chunk_tables(self, c: int):
        """The chunked convolution's tables (``mambadiff.ssm.chunked.dense_tables``) for chunks of c steps, from
        the dense discretisation in real coordinates: y = Re(C x) = h xi with h = [Re(C1 + C2), Im(C2 - C1)]
        for C's halves C1, C2 (x = [z, conj(z)], xi = [Re z, Im z]). C~ = C (I - dA^L) reads h~ = h (I - M^L)
        there, so h comes from one real solve (a quarter of the complex one's work, as M^L's squarings)."""
        M, beta = _real_coordinates(*self.dense_transition())  # (e, N, N), (e, N)
        C_tilde = self.ssm_parameters()[4]  # (e, N)
        m = C_tilde.shape[-1] // 2
        h_tilde = torch.cat([(C_tilde[:, :m] + C_tilde[:, m:]).real, (C_tilde[:, m:] - C_tilde[:, :m]).imag], -1)  # (e, N)
        eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)  # (N, N)
        h = torch.linalg.solve((eye - torch.linalg.matrix_power(M, self.config.l_max)).mT,
                               h_tilde.unsqueeze(-1)).squeeze(-1)  # (e, N) h = h~ (I - M^L)^-1
        return dense_tables(M, beta, h, self.D.to(M.dtype), c)

    # ------------------------------------------------------------------ kernel

    def kernel(self, length: int) -> torch.Tensor:
        """Convolution kernel K (e, length), length <= l_max: K[:, j] = Re(C dA^j dB)."""
        L = self.config.l_max
        if not isinstance(length, int) or not 0 < length <= L:
            raise ValueError(f"kernel length must be an int in [1, l_max={L}], got {length!r}")
        if self.config.discretization == "zoh":
            return self._kernel_dense(length)
        dt, Lambda, P, B, C = self.ssm_parameters()
        k = torch.arange(L // 2 + 1, device=dt.device, dtype=dt.dtype)  # (f,)
        omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / L)  # (f,) w_k = exp(-2 pi i k / L)
        # frequencies in blocks: each (e, f, N) Cauchy tensor, whole, is 134 MB at e 512, N 16, L 4,096
        block = max(1, KERNEL_BLOCK_ELEMENTS // (dt.shape[0] * Lambda.shape[-1]))
        K_hat = torch.cat([self._generating_function(dt, Lambda, P, B, C, w) for w in omega.split(block)], dim=1)
        return torch.fft.irfft(K_hat, n=L)[:, :length]  # (e, l)

    @staticmethod
    def _generating_function(dt, Lambda, P, B, C, omega: torch.Tensor) -> torch.Tensor:
        """The kernel's generating function (e, f) at the roots of unity ``omega (f,)``: the Cauchy
        terms of the diagonal part, corrected for the low-rank term by Woodbury."""
        s = (1 + omega)[None, :, None]  # (1, f, 1)
        d_w = (2 / dt)[:, None, None] * (1 - omega)[None, :, None] - s * Lambda[:, None, :]  # (e, f, N)
        inv = 1 / d_w  # (e, f, N) the Cauchy kernel's terms
        k_CB = torch.einsum("en,efn->ef", C * B, inv)  # (e, f)
        k_CP = torch.einsum("en,ren,efn->efr", C, P, inv)  # (e, f, r)
        k_PB = torch.einsum("ren,en,efn->efr", P.conj(), B, inv)  # (e, f, r)
        k_PP = torch.einsum("ren,qen,efn->efrq", P.conj(), P, inv)  # (e, f, r, r)
        r = P.shape[0]
        eye = torch.eye(r, dtype=k_PP.dtype, device=k_PP.device)  # (r, r)
        s2 = s.squeeze(-1)  # (1, f)
        corr = torch.linalg.solve(eye + s2[..., None, None] * k_PP, k_PB.unsqueeze(-1)).squeeze(-1)  # (e, f, r)
        return 2 * (k_CB - s2 * (k_CP * corr).sum(-1))  # (e, f)

    def _kernel_dense(self, length: int) -> torch.Tensor:
        """K[j] = Re(C dA^j dB) from dense powers."""
        dA, dB, C = self.dense_discrete()
        return torch.einsum("en,enl->el", C, krylov(dA, dB, length)).real  # (e, l)

    def state_after(self, u: torch.Tensor, lengths: torch.Tensor) -> S4State:
        """State after each row's n = lengths[i] inputs u (b, e, l): x = sum_t dA^(n-1-t) dB u_t.

        In real coordinates (``real_transition``), over the right-aligned steps s = i K + k
        (``state_chunks``), dA^(n-1-s) = G^(c-1-i) dA^(K-1-k) with G = dA^K: squarings give dA^(2^r) up to
        G, doubling with G the table G^i dB (i < c); one product of the inputs with the table gives a
        vector per k, and those pair up, older and newer, as dA older + newer, then with dA^2, ...
        log2(c K) products of (N, N) matrices per channel in all; no (e, N, l) table is built."""
        M, beta = self.real_transition()  # (e, N, N), (e, N)
        c, K = chunk_shape(u.shape[-1])
        x = state_chunks(u.unsqueeze(-1), lengths, c, K)[..., 0].contiguous().to(M.dtype)  # (b, e, c, K)
        squares = [M.mT]  # (e, N, N) each: (dA^(2^r))^T, row vectors times it step them 2^r steps on
        while len(squares) < K.bit_length():
            squares.append(squares[-1] @ squares[-1])
        rows, power = beta.unsqueeze(1), squares[-1]  # (e, 1, N) (G^0 dB)^T; (e, N, N) G^T
        while rows.shape[1] < c:
            rows = torch.cat([rows, rows @ power], dim=1)  # (e, 2i, N) rows (G^i dB)^T
            if rows.shape[1] < c:
                power = power @ power  # (e, N, N) (G^2i)^T
        sums = x.mT @ rows.flip(1)  # (b, e, K, N) sum_i G^(c-1-i) dB u_(i K + k)
        for square in squares[:-1]:
            sums = sums[:, :, 0::2] @ square + sums[:, :, 1::2]  # (b, e, K/2, N) older carried over the newer's steps
        m = M.shape[-1] // 2
        z = torch.complex(sums[:, :, 0, :m], sums[:, :, 0, m:])  # (b, e, m)
        return S4State(ssm_state=torch.cat([z, z.conj()], dim=-1))  # (b, e, N)

    # ------------------------------------------------------------------ parallel

    def check_length(self, length: int) -> None:
        if length > self.config.l_max:
            raise ValueError(f"x has length {length} but this S4 layer's l_max is {self.config.l_max}; "
                             f"build it with S4Config(l_max >= {length})")

    # ------------------------------------------------------------------ recurrent

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> S4State:
        """Complex zeros (b, e, N); ``dtype`` is the real dtype (complex64 for float32 etc.)."""
        check_positive_int("batch_size", batch_size)
        device = self.log_dt.device if device is None else device
        dtype = self.work_dtype() if dtype is None else dtype
        cdtype = dtype if dtype.is_complex else complex_dtype(dtype)
        return S4State(ssm_state=torch.zeros(batch_size, self.config.d_inner, self.config.d_state,
                                             device=device, dtype=cdtype))

    def _recurrence(self):
        """What one step needs; cached while gradients are off and no parameter has changed."""
        params = (self.log_dt, self.log_lambda_re, self.lambda_im, self.P, self.B, self.C)
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
        if not torch.is_grad_enabled() and self._step_cache is not None and self._step_cache[0] == key:
            return self._step_cache[1]
        dA, dB, C = self.dense_discrete()
        if self.config.discretization == "bilinear":
            dt, Lambda, P, B, _ = self.ssm_parameters()
            half = (dt / 2)[:, None]  # (e, 1)
            d0 = 1 - half * Lambda  # (e, N) diagonal of I - dt/2 A
            Pd = P / d0  # (r, e, N)
            eye = torch.eye(P.shape[0], dtype=P.dtype, device=P.device)  # (r, r)
            # (I + dt/2 P* D0^-1 P)^-1, the Woodbury core of (I - dt/2 A)^-1
            core = torch.linalg.inv(eye + half[..., None] * torch.einsum("ren,qen->erq", P.conj(), Pd))  # (e, r, r)
            rec = ("bilinear", dt, Lambda, P, Pd, d0, core, dt[:, None] * B, C)
        else:
            rec = ("zoh", dA, dB, C)
        if not torch.is_grad_enabled():
            self._step_cache = (key, rec)
        return rec

    def step(self, x_t: torch.Tensor, state: S4State) -> tuple[torch.Tensor, S4State]:
        validate_token(self, x_t, self.d_model)
        b = x_t.shape[0]
        e, N = self.config.d_inner, self.config.d_state
        if not isinstance(state, S4State):
            raise ValueError(f"state must be an S4State, got {type(state).__name__}")
        validate_state_tensor("ssm_state", state.ssm_state, (b, e, N))
        if not state.ssm_state.is_complex():
            raise ValueError(f"state.ssm_state must be complex, got {state.ssm_state.dtype}")

        work = self.work_dtype()
        rec = self._recurrence()
        u = self.in_proj(x_t).to(work)  # (b, e)
        h = state.ssm_state.to(complex_dtype(work))  # (b, e, N)
        if rec[0] == "bilinear":
            _, dt, Lambda, P, Pd, d0, core, dtB, C = rec
            half = (dt / 2)[:, None]  # (e, 1)
            Ph = torch.einsum("ren,ben->ber", P.conj(), h)  # (b, e, r) P* h
            z = h + half * (Lambda * h - torch.einsum("ren,ber->ben", P, Ph))  # (b, e, N) (I + dt/2 A) h
            z = (z + dtB * u.unsqueeze(-1)) / d0  # (b, e, N) D0^-1 (...)
            w = torch.einsum("erq,beq->ber", core, torch.einsum("qen,ben->beq", P.conj(), z))  # (b, e, r)
            h = z - half * torch.einsum("ren,ber->ben", Pd, w)  # (b, e, N) Woodbury: (I - dt/2 A)^-1 (...)
        else:
            _, dA, dB, C = rec
            h = torch.einsum("enk,bek->ben", dA, h) + dB * u.unsqueeze(-1)  # (b, e, N)
        y = (h * C).sum(-1).real + self.D.to(work) * u  # (b, e)
        out = self.mix(F.gelu(y).to(x_t.dtype))  # (b, d)
        return out, S4State(ssm_state=h)

    def extra_repr(self) -> str:
        c = self.config
        return (f"d_model={c.d_model}, d_inner={c.d_inner}, d_state={c.d_state}, l_max={c.l_max}, "
                f"discretization={c.discretization!r}, glu={c.glu}")
