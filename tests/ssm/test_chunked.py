"""The chunked convolution of the time-invariant mixers against the FFT convolution and the plain formulas.

Glossary: g groups, B and J rows sharing a group's kernel, l length, c chunk length, m modes.
"""
from __future__ import annotations

import pytest
import torch

from mambadiff.ssm import S4D, S4DConfig
from mambadiff.ssm.chunked import chunk_length, chunked_conv, dense_tables, modal_tables, powers
from mambadiff.ssm.h3 import H3, H3Config
from mambadiff.ssm.lti import fft_causal_conv, fft_size, vandermonde_kernel
from mambadiff.ssm.s4 import S4, S4Config

F64 = torch.float64


def modal_system(g=5, m=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    dtA = torch.complex(-0.3 * torch.rand(g, m, generator=gen, dtype=F64), torch.randn(g, m, generator=gen, dtype=F64))
    W = torch.complex(torch.randn(g, m, generator=gen, dtype=F64), torch.randn(g, m, generator=gen, dtype=F64))
    return W, dtA, torch.randn(g, generator=gen, dtype=F64)


def test_vandermonde_kernel_matches_the_complex_exp_formula():
    W, dtA, _ = modal_system()
    j = torch.arange(300, dtype=F64)  # (l,)
    direct = 2.0 * torch.einsum("gm,gml->gl", W, torch.exp(dtA.unsqueeze(-1) * j)).real  # (g, l)
    torch.testing.assert_close(vandermonde_kernel(W, dtA, 300), direct, rtol=0, atol=1e-10)
    torch.testing.assert_close(powers(dtA, j.long()), torch.exp(dtA.unsqueeze(-1) * j), rtol=0, atol=1e-12)


@pytest.mark.parametrize("l", [7, 64, 200, 1000, 1031])
@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_conv_matches_fft_convolution(l, reverse):
    W, dtA, D = modal_system()
    g, B, J = 5, 3, 2
    u = torch.randn(g, B, J, l, dtype=F64)  # (g, B, J, l)
    K = vandermonde_kernel(W, dtA, l)  # (g, l)
    ref = fft_causal_conv(u.permute(1, 2, 0, 3), K, D, reverse=reverse).permute(2, 0, 1, 3)  # (g, B, J, l)
    c = chunk_length(l)
    n = -(-l // c)
    padded = torch.nn.functional.pad(u, (0, n * c - l)).view(g, B, J, n, c).transpose(2, 3)  # (g, B, n, J, c)
    for tables in (modal_tables(W, dtA, D, c), dense_tables(*_dense_form(W, dtA), D, c)):
        y = chunked_conv(padded.contiguous(), tables, reverse)  # (g, B, n, J, c)
        y = y.transpose(2, 3).reshape(g, B, J, n * c)[..., :l]
        torch.testing.assert_close(y, ref, rtol=0, atol=1e-10)


def _dense_form(W, dtA):
    """The diagonal system in real coordinates as a dense one: M (g, 2m, 2m), beta, h (g, 2m)."""
    lam = torch.exp(dtA)  # (g, m)
    a, b = torch.diag_embed(lam.real), torch.diag_embed(lam.imag)
    M = torch.cat([torch.cat([a, -b], -1), torch.cat([b, a], -1)], -2)  # (g, 2m, 2m)
    beta = torch.cat([torch.ones_like(W.real), torch.zeros_like(W.real)], -1)  # (g, 2m)
    return M, beta, 2 * torch.cat([W.real, -W.imag], -1)


def test_chunked_conv_gradients():
    W, dtA, D = modal_system(g=2, m=2)
    u = torch.randn(2, 2, 3, 1, 5, dtype=F64, requires_grad=True)  # (g, B, n, J, c)
    parts = (W.real.clone().requires_grad_(), W.imag.clone().requires_grad_(),
             dtA.real.clone().requires_grad_(), D.clone().requires_grad_())

    def run(u, wr, wi, ar, D, reverse):
        return chunked_conv(u, modal_tables(torch.complex(wr, wi), torch.complex(ar, dtA.imag), D, 5), reverse)
    for reverse in (False, True):
        assert torch.autograd.gradcheck(lambda *a: run(*a, reverse), (u, *parts))


@pytest.mark.parametrize("reverse", [False, True])
def test_fft_conv_gradients(reverse):
    u = torch.randn(2, 3, 9, dtype=F64, requires_grad=True)  # (b, e, l)
    K = torch.randn(3, 9, dtype=F64, requires_grad=True)  # (e, l)
    D = torch.randn(3, dtype=F64, requires_grad=True)  # (e,)
    assert torch.autograd.gradcheck(lambda u, K, D: fft_causal_conv(u, K, D, reverse), (u, K, D))


def test_fft_size_is_five_smooth_and_long_enough():
    assert [fft_size(l) for l in (1, 1024, 2000)] == [1, 2048, 4000]
    for l in range(1, 300):
        n = fft_size(l)
        assert n >= 2 * l - 1
        for f in (2, 3, 5):
            while n % f == 0:
                n //= f
        assert n == 1


@pytest.mark.parametrize("make", [
    lambda: S4D(S4DConfig(d_model=6, d_state=8)),
    lambda: S4(S4Config(d_model=6, d_state=8, l_max=80)),
    lambda: H3(H3Config(d_model=8, head_dim=4, d_state=8)),
])
def test_reverse_is_the_flipped_forward(make):
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(2, 75, layer.d_model, dtype=F64)  # (b, l, d) chunks of 32, the last one padded
    torch.testing.assert_close(layer(x, reverse=True), layer(x.flip(1)).flip(1), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="reverse"):
        layer(x, torch.ones(2, 75, dtype=torch.bool), reverse=True)


@pytest.mark.parametrize("bias", [True, False])
def test_channel_first_projections_equal_linear_with_gradients(bias):
    """linear_to_channels / linear_from_channels are nn.Linear with the output (or input) laid out
    channel-first: values and every gradient (gradcheck in float64)."""
    from mambadiff.ssm.channel_first import linear_from_channels, linear_to_channels
    torch.manual_seed(0)
    to, back = torch.nn.Linear(5, 7, bias=bias).double(), torch.nn.Linear(7, 3, bias=bias).double()
    x = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    y = linear_to_channels(x, to)  # (7, 2, 4)
    torch.testing.assert_close(y, to(x).permute(2, 0, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(linear_from_channels(y, back), back(to(x)), rtol=1e-12, atol=1e-12)
    params = [p for p in (*to.parameters(), *back.parameters())]
    assert torch.autograd.gradcheck(lambda x_, *_: linear_from_channels(linear_to_channels(x_, to), back),
                                    (x, *params))
