"""Bidirectional wrapper: per-sequence reversal under padding, both directions used, errors.

Glossary: b batch, l length, d model width.
"""
from __future__ import annotations

import pytest
import torch

from mambadiff.ssm import (Bidirectional, Mamba, Mamba2, Mamba2Config, MambaConfig, S4D,
                           S4DConfig)
from mambadiff.ssm.bidirectional import reverse_index, reverse_padded

D_MODEL = 8
FACTORIES = {
    "mamba": lambda: Mamba(MambaConfig(D_MODEL, d_state=4, scan_backend="reference")),
    "mamba2": lambda: Mamba2(Mamba2Config(D_MODEL, d_state=4, headdim=4, chunk_size=4)),
    "s4d": lambda: S4D(S4DConfig(D_MODEL, d_state=8)),
}


def make(kind, dtype):
    return Bidirectional(FACTORIES[kind]).to(dtype)


def test_reverse_index_is_per_row_involution():
    mask = torch.arange(6).expand(3, 6) < torch.tensor([[6], [4], [0]])  # lengths 6, 4, 0
    idx = reverse_index(mask, 6, 3, mask.device)
    assert idx.tolist() == [[5, 4, 3, 2, 1, 0], [3, 2, 1, 0, 4, 5], [0, 1, 2, 3, 4, 5]]
    x = torch.randn(3, 6, 2)
    torch.testing.assert_close(reverse_padded(reverse_padded(x, idx), idx), x)
    assert reverse_index(None, 4, 2, mask.device).tolist() == [[3, 2, 1, 0]] * 2


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_padding_does_not_change_real_positions(kind, dtype, atol):
    layer = make(kind, dtype)
    lengths = [9, 5, 1]
    seqs = [torch.randn(1, n, D_MODEL, dtype=dtype) for n in lengths]
    alone = [layer(s)[0] for s in seqs]  # each (len_b, d), no padding at all
    for total in (9, 12, 17):  # different pad lengths
        x = 50.0 * torch.randn(3, total, D_MODEL, dtype=dtype)  # garbage everywhere...
        for i, s in enumerate(seqs):
            x[i, :lengths[i]] = s[0]  # ...except the real tokens
        mask = torch.arange(total).expand(3, total) < torch.tensor(lengths)[:, None]
        y = layer(x, mask)
        assert y.shape == (3, total, D_MODEL)
        for i, n in enumerate(lengths):
            torch.testing.assert_close(y[i, :n], alone[i], atol=atol, rtol=atol)
            assert torch.equal(y[i, n:], torch.zeros_like(y[i, n:]))


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_padding_receives_no_gradient_and_both_directions_are_used(kind):
    layer = make(kind, torch.float64)
    n, total = 6, 10
    x = torch.randn(1, total, D_MODEL, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(total)[None] < n
    y = layer(x, mask)
    (g,) = torch.autograd.grad(y[0, 0].sum(), x)
    assert g[0, n:].abs().max() == 0  # padding never reaches a real output
    assert g[0, n - 1].abs().sum() > 0  # position 0 sees the last real token
    # the forward (causal) direction alone cannot: the dependence comes from the reversed pass
    (g_fwd,) = torch.autograd.grad(layer.forward_layer(x, mask)[0, 0].sum(), x)
    # (FFT convolution is causal only up to roundoff, hence the relative tolerance)
    assert g_fwd[0, 1:].abs().max() <= 1e-12 * g_fwd[0, 0].abs().max()
    assert g[0, n - 1].abs().sum() > 1e-6 * g[0, 0].abs().sum()
    # and perturbing the last real token changes the output at position 0
    x2 = x.detach().clone()
    x2[0, n - 1] += 1.0
    assert (layer(x2, mask)[0, 0] - y[0, 0]).abs().max() > 1e-6


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_full_mask_equals_no_mask_and_sum_of_directions(kind):
    layer = make(kind, torch.float64)
    x = torch.randn(2, 7, D_MODEL, dtype=torch.float64)
    y = layer(x)
    torch.testing.assert_close(layer(x, torch.ones(2, 7, dtype=torch.bool)), y)
    expected = layer.forward_layer(x) + layer.backward_layer(x.flip(1)).flip(1)
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_directions_share_no_parameters(kind):
    layer = make(kind, torch.float32)
    fwd = {id(p) for p in layer.forward_layer.parameters()}
    bwd = {id(p) for p in layer.backward_layer.parameters()}
    assert fwd.isdisjoint(bwd)
    single = sum(p.numel() for p in FACTORIES[kind]().parameters())
    assert sum(p.numel() for p in layer.parameters()) == 2 * single


def test_not_streaming():
    layer = make("mamba", torch.float32)
    with pytest.raises(NotImplementedError, match="not streaming"):
        layer.step(torch.randn(2, D_MODEL), None)
    with pytest.raises(NotImplementedError, match="not streaming"):
        layer.allocate_state(2)


def test_factory_errors():
    shared = FACTORIES["mamba"]()
    with pytest.raises(ValueError, match="same module twice"):
        Bidirectional(lambda: shared)
    with pytest.raises(ValueError, match="nn.Module"):
        Bidirectional(lambda: 3)
    with pytest.raises(ValueError, match="make_layer"):
        Bidirectional(None)


def test_bad_input():
    layer = make("s4d", torch.float32)
    x = torch.randn(2, 5, D_MODEL)
    with pytest.raises(ValueError, match=r"x must have shape \(b, l, d_model=8\)"):
        layer(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"x must have shape"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"mask must have shape \(b, l\)=\(2, 5\)"):
        layer(x, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be right-padded"):
        layer(x, torch.tensor([[False, True, True, True, True]] * 2))


@pytest.mark.parametrize("algorithm", ["cpu", "chunked"])
@pytest.mark.parametrize("l", [5, 64, 130])  # within, at and across the kernel's checkpoint chunks
def test_mamba2_reverse_in_place_equals_the_flipped_layer(algorithm, l):
    """Mamba2(reverse=True) walks time backwards inside its kernels (cpu) or flips around itself
    (other algorithms); either way it equals layer(x.flip(1)).flip(1): outputs, input and parameter
    gradients, float64."""
    torch.manual_seed(0)
    layer = Mamba2(Mamba2Config(16, d_state=5, headdim=8, chunk_size=16, algorithm=algorithm)).double()
    x = torch.randn(2, l, 16, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(2, l, 16, dtype=torch.float64)
    leaves = [x, *layer.parameters()]
    y = layer(x, reverse=True)  # (b, l, d)
    grads = torch.autograd.grad(y, leaves, gy)
    y_ref = layer(x.flip(1)).flip(1)  # (b, l, d)
    grads_ref = torch.autograd.grad(y_ref, leaves, gy)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="reverse=True takes no mask"):
        layer(x, torch.ones(2, l, dtype=torch.bool), reverse=True)
