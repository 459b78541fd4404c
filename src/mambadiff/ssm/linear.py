"""One linear layer whose output is used as several column groups (a Mamba block's in_proj).

Glossary: N rows (all leading dims flattened), d input width, o_g width of output group g, o = sum o_g.

``split_linear(x, weight, bias, sizes)`` equals ``F.linear(x, weight, bias).split(sizes, -1)``, with
each group computed by its own product on a row block of the weight, so every output is contiguous:
the kernels that read them are faster on contiguous rows (a Mamba-2 gate z read as a column slice of
one (N, o) product made the gated RMSNorm about 2x slower, and the conv slower too).

The difference from three ``F.linear`` calls is the backward. Autograd would run three input-gradient
products and then add their (N, d) results with two more passes over memory, and give the weight
three row-slice gradients to scatter into zeros and sum. Here the backward takes each group's gradient
as it comes: dx = sum_g g_g @ W_g, where every product after the first accumulates into dx inside the
matrix multiply (beta = 1), and dW_g = g_g^T x is written straight into row block g of the weight's
gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["split_linear"]


class _SplitLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, sizes):
        # x (.., d), weight (o, d), bias (o,) | None; sizes: the o_g, summing to o
        ctx.save_for_backward(x, weight)
        ctx.sizes, ctx.has_bias = sizes, bias is not None
        bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        return tuple(F.linear(x, weight[lo:hi], None if bias is None else bias[lo:hi])  # (.., o_g)
                     for lo, hi in zip(bounds, bounds[1:]))

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x2 = x.reshape(-1, x.shape[-1])  # (N, d)
        gx = None
        gw = torch.zeros_like(weight) if need_w else None  # (o, d); a group without gradient stays 0
        gb = weight.new_zeros(weight.shape[0]) if need_b and ctx.has_bias else None  # (o,)
        start = 0
        for g, size in zip(grads, ctx.sizes):
            rows = slice(start, start + size)
            start += size
            if g is None:
                continue
            g2 = g.reshape(-1, size)  # (N, o_g)
            if need_x:
                w_g = weight[rows]  # (o_g, d)
                gx = g2 @ w_g if gx is None else gx.addmm_(g2, w_g)  # (N, d)
            if need_w:
                torch.mm(g2.t(), x2, out=gw[rows])  # (o_g, d) in place: a contiguous row block
            if gb is not None:
                gb[rows] = g2.sum(0)
        if gx is not None:
            gx = gx.view(x.shape)
        elif need_x:
            gx = torch.zeros_like(x)
        return gx, gw, gb, None


def split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 sizes: list[int] | tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """``F.linear(x, weight, bias).split(sizes, -1)`` with a backward that needs no assembled gradient
    (see the module docstring). x (.., d), weight (o, d), bias (o,) | None -> tuple of (.., o_g).

    Under autocast (GPU bf16 / fp16) it falls back to the plain form, whose dtype rules autocast knows."""
    sizes = tuple(int(s) for s in sizes)
    if sum(sizes) != weight.shape[0]:
        raise ValueError(f"sizes {sizes} must sum to the weight's {weight.shape[0]} output rows")
    if torch.is_autocast_enabled(x.device.type) or not torch.is_grad_enabled():
        return tuple(F.linear(x, weight, bias).split(sizes, dim=-1))  # views: nothing to differentiate
    return _SplitLinear.apply(x, weight, bias, sizes)
