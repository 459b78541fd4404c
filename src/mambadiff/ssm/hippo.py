"""HiPPO matrices and their normal-plus-low-rank (NPLR) decomposition.

Glossary: N state size (number of basis coefficients), r rank of the low-rank correction, s time.

HiPPO (Gu et al. 2020, "HiPPO: Recurrent Memory with Optimal Polynomial Projections") gives, for a
measure on the input's history, the continuous-time system ``c'(t) = A c(t) + B u(t)`` whose state
``c`` (N,) holds the coefficients of the history's projection onto N basis functions. S4 (Gu et al.
2022, "Efficiently Modeling Long Sequences with Structured State Spaces", section 3.1 and appendix C)
writes each such A as normal plus low rank

    A = V Λ V* - P Q*          V (N, N) unitary, Λ (N,) complex, P = Q (N, r) real

so that in the basis V the state matrix is diagonal plus low rank (DPLR): V* A V = Λ - (V* P)(V* P)*.

Measures (all matrices float64, for ``c' = A c + B u``):

    legs  scaled Legendre (the whole history [0, t], uniformly weighted; the system is
          c' = (1/t)(A c + B u)):  A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 above;
          B_n = sqrt(2n+1).  P_n = sqrt(n + 1/2) (r = 1); the normal part is -1/2 I + skew.
    legt  translated Legendre (the window [t-1, t]):  A_nk = -sqrt(2n+1) sqrt(2k+1) times 1 for n >= k
          and (-1)^(n-k) for n < k;  B_n = sqrt(2n+1).  r = 2: P = sqrt(1/2) [R, R (-1)^n] with
          R_n = sqrt(2n+1); the normal part is skew (eigenvalues on the imaginary axis).
    fout  translated Fourier (the window [t-1, t] on a Fourier basis; N even): the skew part holds the
          frequencies 2 pi k of the cos/sin pairs; B = (1, sqrt2, 0, sqrt2, 0, ...) and A = skew - B B^T,
          so P = B (r = 1).

``legs_basis`` evaluates LegS's basis: the history of a LegS state at time t is reconstructed as
``u(s) ~= sum_n c_n(t) sqrt(2n+1) P_n(2 s / t - 1)`` for s in [0, t] (P_n the Legendre polynomials).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .checks import check_positive_int

__all__ = ["MEASURES", "NPLR", "hippo", "hippo_legs", "hippo_legt", "hippo_fout", "low_rank_factor", "nplr",
           "legs_basis"]

MEASURES = ("legs", "legt", "fout")
F64 = torch.float64


def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS (A (N, N), B (N,)) float64."""
    check_positive_int("N", N)
    R = torch.sqrt(2 * torch.arange(N, dtype=F64) + 1)  # (N,)
    A = torch.tril(R[:, None] * R[None, :], diagonal=-1)  # (N, N) strictly lower
    A = -(A + torch.diag(torch.arange(N, dtype=F64) + 1))  # (N, N)
    return A, R.clone()


def hippo_legt(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegT with window length 1 (A (N, N), B (N,)) float64."""
    check_positive_int("N", N)
    n = torch.arange(N)
    R = torch.sqrt(2 * n.to(F64) + 1)  # (N,)
    diff = n[:, None] - n[None, :]  # (N, N) n - k
    sign = torch.where(diff >= 0, torch.ones((), dtype=F64), (-1.0) ** diff.abs().to(F64))  # (N, N)
    A = -R[:, None] * sign * R[None, :]  # (N, N)
    return A, R.clone()


def hippo_fout(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-FouT with window length 1 (A (N, N), B (N,)) float64; N must be even."""
    check_positive_int("N", N)
    if N % 2:
        raise ValueError(f"N must be even for fout (cos/sin pairs), got {N}")
    # basis order: 1, cos(2 pi t), sin(2 pi t), cos(4 pi t), ..., cos(N pi t) (its sine dropped: N even)
    freq = torch.zeros(N - 1, dtype=F64)  # (N-1,) subdiagonal couplings
    freq[1::2] = 2 * math.pi * torch.arange(1, N // 2, dtype=F64)  # (sin_k)' = 2 pi k cos_k, k >= 1
    skew = torch.diag(freq, -1) - torch.diag(freq, 1)  # (N, N) rotation generators of the cos/sin pairs
    B = torch.zeros(N, dtype=F64)  # (N,)
    B[0] = 1.0
    B[1::2] = math.sqrt(2.0)
    A = skew - B[:, None] * B[None, :]  # (N, N) the rank-1 term is the window's far endpoint
    return A, B


_BUILDERS = {"legs": hippo_legs, "legt": hippo_legt, "fout": hippo_fout}


def hippo(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (N, N), B (N,)) float64 of a HiPPO measure (``legs`` | ``legt`` | ``fout``)."""
    if measure not in _BUILDERS:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    return _BUILDERS[measure](N)


def low_rank_factor(measure: str, N: int) -> torch.Tensor:
    """P (N, r) float64 such that A + P P^T is normal for the measure's A."""
    check_positive_int("N", N)
    R = torch.sqrt(2 * torch.arange(N, dtype=F64) + 1)  # (N,)
    if measure == "legs":
        return (R / math.sqrt(2.0)).unsqueeze(-1)  # (N, 1)
    if measure == "legt":
        alt = (-1.0) ** torch.arange(N, dtype=F64)  # (N,)
        return torch.stack([R, R * alt], dim=-1) / math.sqrt(2.0)  # (N, 2)
    if measure == "fout":
        return hippo_fout(N)[1].unsqueeze(-1)  # (N, 1)
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")


@dataclass
class NPLR:
    """A = V diag(Lambda) V* - P P^T, and the same system in the basis V (diagonal plus low rank)."""

    A: torch.Tensor  # (N, N) float64
    B: torch.Tensor  # (N,) float64
    Lambda: torch.Tensor  # (N,) complex128 eigenvalues of the normal part, conjugate pairs adjacent
    V: torch.Tensor  # (N, N) complex128 unitary eigenvectors (columns)
    P: torch.Tensor  # (N, r) float64 low-rank factor (Q = P)

    @property
    def P_diag_basis(self) -> torch.Tensor:
        """V* P (N, r) complex128."""
        return self.V.mH @ self.P.to(torch.complex128)

    @property
    def B_diag_basis(self) -> torch.Tensor:
        """V* B (N,) complex128."""
        return self.V.mH @ self.B.to(torch.complex128)

    def reconstruct(self) -> torch.Tensor:
        """V diag(Lambda) V* - P P^T (N, N) complex128; its real part is A (imaginary part ~ 0)."""
        P = self.P.to(torch.complex128)  # (N, r)
        return self.V @ torch.diag(self.Lambda) @ self.V.mH - P @ P.mT


def nplr(measure: str, N: int) -> NPLR:
    """Normal-plus-low-rank decomposition of a HiPPO matrix (all float64 / complex128).

    The normal part S = A + P P^T is c I + K with K skew-symmetric (checked), so its eigenvectors are
    those of the Hermitian matrix -i K: S = V diag(c + i w) V* with w real. Eigenvalues are ordered
    by decreasing imaginary part, so the conjugate of the j-th is the (N-1-j)-th.
    """
    A, B = hippo(measure, N)
    P = low_rank_factor(measure, N)  # (N, r)
    S = A + P @ P.T  # (N, N) normal part
    sym = (S + S.T) / 2  # (N, N) must be c I
    c = float(torch.diagonal(sym).mean())
    scale = max(1.0, float(S.abs().max()))
    if float((sym - c * torch.eye(N, dtype=F64)).abs().max()) > 1e-12 * scale:
        raise ValueError(f"{measure}: A + P P^T is not (multiple of identity) + skew; no NPLR form")
    K = (S - S.T) / 2  # (N, N) skew-symmetric
    w, V = torch.linalg.eigh(-1j * K.to(torch.complex128))  # K = V diag(i w) V*, w ascending
    order = torch.argsort(w, descending=True)
    w, V = w[order], V[:, order]
    Lambda = torch.complex(torch.full_like(w, c), w)  # (N,)
    return NPLR(A=A, B=B, Lambda=Lambda, V=V, P=P)


def legs_basis(N: int, x: torch.Tensor) -> torch.Tensor:
    """Scaled Legendre basis sqrt(2n+1) P_n(x) (..., N) at points x (...) in [-1, 1], float64.

    P_n by the three-term recurrence (n+1) P_{n+1} = (2n+1) x P_n - n P_{n-1}.
    """
    check_positive_int("N", N)
    x = x.to(F64)
    polys = [torch.ones_like(x)]
    if N > 1:
        polys.append(x)
    for n in range(1, N - 1):
        polys.append(((2 * n + 1) * x * polys[n] - n * polys[n - 1]) / (n + 1))
    P = torch.stack(polys, dim=-1)  # (..., N)
    return P * torch.sqrt(2 * torch.arange(N, dtype=F64) + 1)  # (..., N)
