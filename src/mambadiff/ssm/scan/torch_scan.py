"""``torch`` backend: a chunked selective scan in pure PyTorch (any device; autograd does the backward).

Glossary: b batch, d channels (inner width), l length, n state size, c chunk length.

The sequence is split into chunks of c steps. Per chunk the decays a = exp(dt A) (<= 1) and inputs
x = dt u B are materialised as (c, b, d, n) tensors, the chunk's states are computed from the
carried state, and y is read out with one contraction. Two in-chunk schemes:

- ``"sequential"`` (default on CPU): one fused ``addcmul`` per step, h_t = a_t h_{t-1} + x_t, and one
  batched matmul per chunk for y. It does the least arithmetic, which is what counts on CPU, where
  every op is a memory-bound pass: the chunk length is chosen so a chunk's tensors stay near L2 size
  (c = 1 at b d n = 2^18). The time axis is cut with split / unbind, whose backward is a single
  cat / stack: indexing a step (as the reference does) makes autograd allocate a zero-filled
  full-length gradient for every step, which dominates the reference's backward.
- ``"doubling"`` (default on CUDA): a Hillis-Steele scan over the chunk in log2(c) rounds on
  (decay, input) pairs, (a1, x1) then (a2, x2) = (a2 a1, a2 x1 + x2), so a GPU runs few large
  kernels instead of l small ones. Decays are combined as products of numbers in [0, 1]; this is
  the cumulative decay exp(sum of dt A) without ever forming exp of a positive number, and without
  the cancellation that differences of long cumulative log-sums suffer in float32.

Half / bfloat16 inputs are computed in float32 and returned in the input dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

METHODS = ("auto", "sequential", "doubling")
CHUNK_ELEMENTS = 1 << 18  # target size of one (c, b, d, n) chunk tensor for "sequential"


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                         initial_state=None, return_last_state=False, chunk_size=None,
                         method="auto"):
    """Chunked pure-PyTorch selective scan; inputs already validated by ``selective_scan``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "doubling" if u.device.type == "cuda" else "sequential"
    b, d, _ = u.shape
    n = A.shape[1]
    if chunk_size is None:
        # sequential: keep a chunk's (c, b, d, n) tensors around L2 size (the per-step work is
        # memory-bound on CPU); doubling: long chunks, fewer rounds per step on a GPU
        chunk_size = 64 if method == "doubling" else max(1, min(64, CHUNK_ELEMENTS // (b * d * n)))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    out_dtype = u.dtype
    ct = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))

    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[None, :, None]  # (b, d, l)
    dt = F.softplus(delta) if delta_softplus else delta  # (b, d, l)
    dtu = dt * u  # (b, d, l)

    # Time-major copies, so every (c, b, d, n) product below is laid out contiguously and each
    # step's (b, d, n) slice is dense (broadcasting from permuted views would make TensorIterator
    # keep their strided layout, and the per-step ops several times slower).
    dt_t = dt.permute(2, 0, 1).contiguous()  # (l, b, d)
    dtu_t = dtu.permute(2, 0, 1).contiguous()  # (l, b, d)
    B_t = B.permute(2, 0, 1).contiguous()  # (l, b, n)
    C_t = C.permute(2, 0, 1).contiguous()  # (l, b, n)

    if initial_state is None:
        h = u.new_zeros(b, d, n)  # (b, d, n)
    else:
        h = initial_state.to(ct)  # (b, d, n)

    # split (not [s:e] slicing): the backward of split is one cat, where every slice would get a
    # zero-filled full-length gradient of its own
    chunks = zip(*(t.split(chunk_size) for t in (dt_t, dtu_t, B_t, C_t)))
    ys = []
    for dt_c, dtu_c, B_c, C_c in chunks:  # (c, b, d), (c, b, d), (c, b, n), (c, b, n)
        a = torch.exp(dt_c[..., None] * A)  # (c, b, d, n) decays in [0, 1]
        x = dtu_c[..., None] * B_c[:, :, None, :]  # (c, b, d, n)
        if method == "sequential":
            hs = []
            # unbind (not x[t]) for the same reason as split above
            for a_t, x_t in zip(a.unbind(0), x.unbind(0)):
                h = torch.addcmul(x_t, a_t, h)  # (b, d, n)
                hs.append(h)
            H = torch.stack(hs)  # (c, b, d, n)
        else:
            H = _doubling_scan(a, x, h)  # (c, b, d, n)
            h = H[-1]  # (b, d, n)
        ys.append(torch.matmul(H, C_c[..., None]).squeeze(-1))  # (c, b, d)
    y = (torch.cat(ys) if len(ys) > 1 else ys[0]).permute(1, 2, 0)  # (b, d, l)

    if D is not None:
        y = y + D.to(ct)[None, :, None] * u  # (b, d, l)
    if z is not None:
        y = y * F.silu(z.to(ct))  # (b, d, l)
    y = y.to(out_dtype)
    return (y, h.to(out_dtype)) if return_last_state else y


def _doubling_scan(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Inclusive scan of h_t = a_t h_{t-1} + x_t over dim 0 in ceil(log2 c) rounds.

    a, x: (c, b, d, n); h0: (b, d, n). Returns H (c, b, d, n)."""
    c = a.shape[0]
    k = 1
    while k < c:
        # step t absorbs the window ending at t - k: x_t += a_t x_{t-k}; a_t *= a_{t-k}
        x = torch.cat([x[:k], torch.addcmul(x[k:], a[k:], x[:-k])])  # (c, b, d, n)
        a = torch.cat([a[:k], a[k:] * a[:-k]])  # (c, b, d, n) cumulative decay over the window
        k *= 2
    return torch.addcmul(x, a, h0[None])  # (c, b, d, n) a is now the decay from the chunk start
