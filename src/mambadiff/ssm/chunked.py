"""Time-invariant state-space convolutions by chunks of matrix products: the training path of S4D, S4 and H3.

Glossary: g kernel groups (channels: S4D's e, H3's key channels h p), B rows sharing a group's kernel
(batch, and H3's value channels), l length, c chunk length, n = l / c chunks, S real state size
(2m for m complex modes, S4's N), K[j] = h M^j beta the kernel of the real system
x_t = M x_{t-1} + beta u_t, y_t = h x_t + D u_t.

Split time into chunks of c steps. Within a chunk the output is a c x c lower-triangular Toeplitz
product (K[0] + D on its diagonal); what earlier chunks contribute passes through the state at the
chunk boundary, which an (S, S) transition carries from chunk to chunk:

    y_chunk = u_chunk T^T + P_chunk F^T         T[t, s] = K[t - s] (+ D at t = s)    (c, c)
    Z_chunk = u_chunk E^T                        E[:, s] = M^(c-1-s) beta             (S, c)
    P_next  = P_chunk G^T + Z_chunk              G = M^c                              (S, S)
                                                 F[t, :] = h M^(t+1)                  (c, S)

(rows are the B n chunks of a group). Every step is a batched matrix product over the groups, about
c + 2S multiply-adds per output, against the FFT convolution's several passes over padded complex
spectra; the kernel is shared by the B rows, so the products are wide. Only the boundary recurrence
runs chunk by chunk, on (B, S) states. The anti-causal direction (``reverse``) is the same with the
tables flipped in time (T^T for T) and the boundary recurrence run from the last chunk back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["chunk_length", "powers", "ChunkTables", "modal_tables", "dense_tables", "chunked_conv"]

# Chunk lengths tried, shortest first: a divisor of l in this range needs no padding (padding costs a
# copy of the input and of the output's gradient). 32 .. 64 steps keep the Toeplitz product (c
# multiply-adds per output) near the cost of the state terms (2S, S = 16) and the chunk-by-chunk
# recurrence short (l / c steps). With c a power of two S4's dense tables get G = M^c from their doubling.
CHUNK_RANGE = (32, 64)


def powers(dtA: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """dA^steps = exp(dtA * steps): dtA (e, m) complex, steps (s,) -> (e, m, s) complex. Built as
    polar(exp(Re), Im): torch's real exp, cos and sin are vectorised, its complex exp is ~10x slower."""
    s = steps.to(dtA.real.dtype)  # (s,)
    return torch.polar(torch.exp(dtA.real.unsqueeze(-1) * s), dtA.imag.unsqueeze(-1) * s)  # (e, m, s)


def chunk_length(l: int) -> int:
    """c for a length l: l itself when short, else the smallest divisor of l in CHUNK_RANGE, else 32 (the
    input is zero-padded to a multiple; causal, so the padding changes no real output)."""
    if l <= CHUNK_RANGE[1]:
        return l
    for c in range(CHUNK_RANGE[0], CHUNK_RANGE[1] + 1):
        if l % c == 0:
            return c
    return CHUNK_RANGE[0]


class ChunkTables(tuple):
    """(T (g, c, c), E (g, S, c), G (g, S, S), F (g, c, S)), real, as in the module docstring."""

    __slots__ = ()

    def __new__(cls, T, E, G, F_):
        return super().__new__(cls, (T, E, G, F_))


def toeplitz(K: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """T[t, s] = K[t - s] for s <= t, 0 above, plus D on the diagonal: K (g, c), D (g,) -> (g, c, c)."""
    g, c = K.shape
    lag = torch.arange(c, device=K.device)  # (c,)
    lag = lag.unsqueeze(1) - lag  # (c, c) t - s
    if D is not None:
        K = torch.cat([K[:, :1] + D.unsqueeze(-1), K[:, 1:]], dim=-1)  # (g, c)
    padded = F.pad(K, (0, 1))  # (g, c + 1) the last entry is 0, for s > t
    return padded[:, torch.where(lag >= 0, lag, c)]  # (g, c, c)


def modal_tables(W: torch.Tensor, dtA: torch.Tensor, D: torch.Tensor | None, c: int) -> ChunkTables:
    """Tables of a diagonal system in real coordinates: K[j] = 2 Re(sum_m W dA^j), dA = exp(dtA). W, dtA (g, m)
    complex (W = C dB), D (g,) | None. The state is [Re z, Im z] of z_t = dA z_{t-1} + u_t, so beta = [1, 0],
    h = 2 [Re W, -Im W]; every power comes straight from ``powers`` (no repeated products)."""
    g, m = W.shape
    z = powers(dtA, torch.arange(c + 1, device=W.device))  # (g, m, c + 1) dA^j
    back = z[..., :c].flip(-1)  # (g, m, c) dA^(c-1-s)
    E = torch.cat([back.real, back.imag], dim=1)  # (g, 2m, c)
    wz = W.unsqueeze(-1) * z  # (g, m, c + 1) W dA^j
    K = 2.0 * wz[..., :c].real.sum(1)  # (g, c)
    # h M^(t+1) x = 2 Re(W dA^(t+1) z): weights 2 Re(W dA^(t+1)) on Re z and -2 Im(W dA^(t+1)) on Im z
    F_ = 2.0 * torch.cat([wz[..., 1:].real, -wz[..., 1:].imag], dim=1).transpose(1, 2)  # (g, c, 2m)
    zc = z[..., c]  # (g, m) dA^c
    a, b = torch.diag_embed(zc.real), torch.diag_embed(zc.imag)  # (g, m, m) each
    G = torch.cat([torch.cat([a, -b], -1), torch.cat([b, a], -1)], -2)  # (g, 2m, 2m)
    return ChunkTables(toeplitz(K, D), E, G, F_)


def dense_tables(M: torch.Tensor, beta: torch.Tensor, h: torch.Tensor, D: torch.Tensor | None,
                 c: int) -> ChunkTables:
    """Tables of a dense real system: M (g, S, S), beta, h (g, S), D (g,) | None."""
    cols, rows, power = beta.unsqueeze(-1), h.unsqueeze(-2), M  # (g, S, k) M^j beta, (g, k, S) h M^j, M^k
    while cols.shape[-1] < c:  # doubling: [v, M v] -> [.., M^2 [v, M v]]
        cols = torch.cat([cols, power @ cols], dim=-1)  # (g, S, 2k)
        rows = torch.cat([rows, rows @ power], dim=-2)  # (g, 2k, S)
        power = power @ power  # (g, S, S) M^(2k)
    # c a power of two: the doubling ends on G = M^c; else a matrix power
    G = power if cols.shape[-1] == c else torch.linalg.matrix_power(M, c)  # (g, S, S)
    Mb = cols[..., :c]  # (g, S, c)
    hM = torch.cat([rows[:, :c], (h.unsqueeze(-2) @ G)], dim=-2)  # (g, c + 1, S) h M^j, j <= c
    K = (hM[:, :c] @ beta.unsqueeze(-1)).squeeze(-1)  # (g, c) h M^j beta
    return ChunkTables(toeplitz(K, D), Mb.flip(-1), G, hM[:, 1:])


def _boundary_states(Z: torch.Tensor, G: torch.Tensor, reverse: bool) -> torch.Tensor:
    """P[:, :, i] = the state entering chunk i: P = 0 at the first chunk, P_next = P G^T + Z_chunk.
    Z (g, B, n, J, S) -> (g, B, n, J, S); reverse: from the last chunk back. (Taped by autograd: a
    hand-written backward of this loop measured slower.)"""
    g, B, n, J, S = Z.shape
    order = range(n - 1, -1, -1) if reverse else range(n)
    Gt = G.transpose(1, 2)  # (g, S, S)
    increments = Z.unbind(2)  # n x (g, B, J, S); unbind's backward stacks, where indexing would scatter
    state = Z.new_zeros(g, B * J, S)  # (g, B J, S)
    states = [None] * n
    for i in order:
        states[i] = state
        state = torch.baddbmm(increments[i].reshape(g, B * J, S), state, Gt)  # (g, B J, S)
    return torch.stack(states, dim=1).view(g, n, B, J, S).transpose(1, 2)  # (g, B, n, J, S), a view when B = 1


def chunked_conv(u: torch.Tensor, tables: ChunkTables, reverse: bool = False) -> torch.Tensor:
    """y = K * u + D u along the last dimension of u (g, B, n, J, c) (n chunks of c steps; the J rows of a
    chunk share its boundary state: H3's value channels) -> (g, B, n, J, c). reverse: anti-causal,
    y[t] = sum_j K[j] u[t + j] + D u[t]."""
    T, E, G, F_ = tables
    g, B, n, J, c = u.shape
    if reverse:  # the same system read backwards in time within each chunk
        T, E, F_ = T.transpose(1, 2), E.flip(-1), F_.flip(1)
    U = u.reshape(g, B * n * J, c)  # (g, R, c)
    y = torch.bmm(U, T.transpose(1, 2))  # (g, R, c) within the chunk
    if n == 1:
        return y.view(g, B, n, J, c)
    S = E.shape[1]
    Z = torch.bmm(U, E.transpose(1, 2)).view(g, B, n, J, S)  # (g, B, n, J, S) each chunk's state increment
    P = _boundary_states(Z, G, reverse).reshape(g, B * n * J, S)  # (g, R, S)
    y = y.baddbmm_(P, F_.transpose(1, 2))  # (g, R, c) plus earlier chunks, in place: no copy of y
    return y.view(g, B, n, J, c)
