"""split_linear (ssm/linear.py) against F.linear followed by split: outputs and every gradient."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambadiff.ssm.linear import split_linear

SIZES = (5, 7, 3)


def _leaves(with_bias: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 9, 6, dtype=torch.float64, generator=g).requires_grad_()  # (b, l, d)
    w = torch.randn(sum(SIZES), 6, dtype=torch.float64, generator=g).requires_grad_()  # (o, d)
    b = torch.randn(sum(SIZES), dtype=torch.float64, generator=g).requires_grad_() if with_bias else None
    return x, w, b


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("used", [(0, 1, 2), (0, 2), (1,)])
def test_matches_linear_then_split(with_bias, used):
    """Every output group equals F.linear's, and so does every gradient, also when some groups do not
    reach the loss (their gradient is None: those weight rows get a zero gradient)."""
    x, w, b = _leaves(with_bias)
    leaves = [t for t in (x, w, b) if t is not None]
    outs = split_linear(x, w, b, SIZES)
    refs = F.linear(x, w, b).split(SIZES, dim=-1)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(r.shape, dtype=r.dtype, generator=g) for r in refs]  # (b, l, o_g)
    for out, ref in zip(outs, refs):
        # Three GEMMs over row slices and one GEMM may block their sums differently: equal to rounding.
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    loss = sum((outs[i] * weights[i]).sum() for i in used)
    loss_ref = sum((refs[i] * weights[i]).sum() for i in used)
    grads = torch.autograd.grad(loss, leaves)
    grads_ref = torch.autograd.grad(loss_ref, leaves)
    for name, a, r in zip("xwb", grads, grads_ref):
        torch.testing.assert_close(a, r, atol=1e-12, rtol=1e-12, msg=f"grad {name}")


def test_no_grad_and_bad_sizes():
    x, w, b = _leaves(True)
    with torch.no_grad():
        outs = split_linear(x, w, b, SIZES)
    assert [o.shape[-1] for o in outs] == list(SIZES) and not outs[0].requires_grad
    with pytest.raises(ValueError, match="must sum to the weight's 15 output rows"):
        split_linear(x, w, b, (5, 7))
