"""HiPPO matrices: the NPLR decomposition reconstructs A, and LegS really projects the input's history.

Glossary: N state size, r low-rank rank.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mambadiff.ssm.hippo import MEASURES, hippo, hippo_legs, legs_basis, nplr


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [2, 8, 33, 64])
def test_nplr_reconstructs_A(measure, N):
    if measure == "fout" and N % 2:
        pytest.skip("fout needs an even N")
    d = nplr(measure, N)
    assert d.A.dtype == torch.float64 and d.Lambda.dtype == torch.complex128
    eye = torch.eye(N, dtype=torch.complex128)
    torch.testing.assert_close(d.V.mH @ d.V, eye, rtol=0, atol=1e-12)  # unitary
    rec = d.reconstruct()  # (N, N)
    scale = float(d.A.abs().max())
    assert float((rec.real - d.A).abs().max()) <= 1e-12 * scale
    assert float(rec.imag.abs().max()) <= 1e-12 * scale
    # in the basis V the system is diagonal plus low rank
    Pt = d.P_diag_basis  # (N, r)
    torch.testing.assert_close(d.V.mH @ d.A.to(torch.complex128) @ d.V, torch.diag(d.Lambda) - Pt @ Pt.mH,
                               rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(d.V @ d.B_diag_basis, d.B.to(torch.complex128), rtol=0, atol=1e-12 * N)


def test_spectra():
    legs = nplr("legs", 16)
    torch.testing.assert_close(legs.Lambda.real, torch.full((16,), -0.5, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (legs.Lambda.imag.abs() > 1e-3).all()  # even N: no zero frequency, conjugate pairs only
    torch.testing.assert_close(legs.Lambda.flip(0), legs.Lambda.conj(), rtol=0, atol=1e-10)
    assert float(nplr("legt", 16).Lambda.real.abs().max()) < 1e-12
    # LegS: lower triangular with diagonal -(n+1), so its eigenvalues are -1..-N (stable)
    A, B = hippo_legs(5)
    assert torch.equal(torch.diagonal(A), -torch.arange(1, 6, dtype=torch.float64))
    assert torch.equal(A.triu(1), torch.zeros(5, 5, dtype=torch.float64))
    torch.testing.assert_close(B, torch.sqrt(torch.tensor([1.0, 3, 5, 7, 9], dtype=torch.float64)))
    for measure in ("legt", "fout"):  # translated measures are stable too
        assert float(torch.linalg.eigvals(hippo(measure, 12)[0]).real.max()) < 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="measure"):
        hippo("legx", 4)
    with pytest.raises(ValueError, match="even"):
        hippo("fout", 5)
    with pytest.raises(ValueError, match="N"):
        nplr("legs", 0)


def legs_history_error(N: int) -> float:
    """Run c' = (A c + B u) / t up to t = 1 and compare the reconstructed history with u on [0, 1].

    In log time tau = log t the LegS system is time invariant, dc/dtau = A c + B u(e^tau); it is solved
    by the trapezoidal rule from t0 (where c = u(0) e_0, the projection of a constant) on a fine grid.
    """
    def u(s):
        return torch.sin(4 * s) + torch.exp(-s) * s

    A, B = hippo_legs(N)
    t0, steps = 1e-5, 10_000
    taus = torch.linspace(math.log(t0), 0.0, steps + 1, dtype=torch.float64)
    h = float(taus[1] - taus[0])
    eye = torch.eye(N, dtype=torch.float64)
    lhs = eye - h / 2 * A  # (N, N)
    rhs_mat = eye + h / 2 * A  # (N, N)
    inv = torch.linalg.inv(lhs)
    c = torch.zeros(N, dtype=torch.float64)
    c[0] = float(u(torch.tensor(0.0, dtype=torch.float64)))
    us = u(torch.exp(taus))  # (steps+1,)
    for i in range(steps):
        c = inv @ (rhs_mat @ c + h / 2 * B * (us[i] + us[i + 1]))
    s = torch.linspace(0, 1, 501, dtype=torch.float64)
    recon = legs_basis(N, 2 * s - 1) @ c  # (501,)
    return float((recon - u(s)).abs().max())


def test_legs_projection_reconstructs_history_better_with_more_state():
    errors = [legs_history_error(N) for N in (2, 4, 8, 16)]
    assert all(b < a / 4 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-5, errors


def test_legs_basis_is_orthonormal():
    # int_0^1 g_n(s) g_k(s) ds = delta_nk for g_n(s) = sqrt(2n+1) P_n(2s-1) (Gauss-Legendre quadrature)
    nodes, weights = np.polynomial.legendre.leggauss(20)
    G = legs_basis(8, torch.from_numpy(nodes))  # (20, 8)
    gram = G.T @ (torch.from_numpy(weights)[:, None] / 2 * G)  # (8, 8)
    torch.testing.assert_close(gram, torch.eye(8, dtype=torch.float64), rtol=0, atol=1e-12)
