"""The denoiser's tied rounding head: the fused cross-entropy against F.cross_entropy."""
import pytest
import torch
import torch.nn.functional as F

from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.denoiser import Denoiser, DenoiserConfig, tied_cross_entropy


def _reference(h, weight, target):
    return F.cross_entropy(h @ weight.t(), target, reduction="none")  # (n,)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("scale", [0.1, 1.0, 4.0])  # 4.0: most log-probs far below -87 (float underflow)
def test_tied_cross_entropy_matches_plain_cross_entropy(dtype, tol, scale, device):
    g = torch.Generator().manual_seed(0)
    n, e, v = 37, 16, 301
    h = (torch.randn(n, e, generator=g, dtype=dtype) * scale).to(device).requires_grad_()
    weight = (torch.randn(v, e, generator=g, dtype=dtype) * scale).to(device).requires_grad_()
    target = torch.randint(0, v, (n,), generator=g).to(device)
    upstream = torch.rand(n, generator=g, dtype=dtype).to(device)  # a different weight per row
    got = tied_cross_entropy(h, weight, target)
    want = _reference(h, weight, target)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    got_grads = torch.autograd.grad((got * upstream).sum(), (h, weight))
    want_grads = torch.autograd.grad((want * upstream).sum(), (h, weight))
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert torch.isfinite(got).all()


def test_tied_cross_entropy_gradients_gradcheck():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 6, 3, 3, 1])
    assert torch.autograd.gradcheck(lambda a, b: tied_cross_entropy(a, b, target), (h, weight))


def test_tied_cross_entropy_backward_twice_gives_the_same_gradient():
    """The saved log-softmax is not modified by the backward: retain_graph works."""
    h = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(6, 3, requires_grad=True)
    loss = tied_cross_entropy(h, weight, torch.tensor([1, 2, 3, 4])).sum()
    loss.backward(retain_graph=True)
    first = h.grad.clone()
    h.grad = None
    loss.backward()
    torch.testing.assert_close(h.grad, first)


def test_denoiser_token_cross_entropy_is_the_logits_cross_entropy():
    torch.manual_seed(0)
    model = Denoiser(DenoiserConfig(vocab_size=50, emb_dim=8,
                                    backbone=BackboneConfig(name="transformer", d_model=16, n_layers=1)))
    h = torch.randn(2, 5, 8)
    ids = torch.randint(0, 50, (2, 5))
    got = model.token_cross_entropy(h.reshape(-1, 8), ids.reshape(-1))
    want = F.cross_entropy(model.logits(h).reshape(-1, 50), ids.reshape(-1), reduction="none")
    torch.testing.assert_close(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tied_cross_entropy_under_autocast_is_the_plain_form():
    h = torch.randn(6, 8, device="cuda", requires_grad=True)
    weight = torch.randn(20, 8, device="cuda", requires_grad=True)
    target = torch.randint(0, 20, (6,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = tied_cross_entropy(h, weight, target)
        want = _reference(h, weight, target)
    torch.testing.assert_close(got, want)
    got.sum().backward()
    assert h.grad is not None and weight.grad is not None
