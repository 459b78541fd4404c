"""Linear layers into and out of the channel-first layout (e, R) of the convolutional mixers.

Glossary: R rows (b * l, batch-major), d input width, e channels, o output width.

The convolutional mixers (S4D, S4) convolve each channel along time, so they want each channel's R = b l
values contiguous: (e, b, l). A projection can write that layout directly, u = W x^T (one matrix
product whose second operand BLAS reads transposed in place), and read it back the same way,
out = y^T W_o^T, so the mixer needs no transposing copies. Autograd's own backward of those products
would hand back the gradients of the transposed operands as transposed views (x's gradient (R, d)
column-major, y's (e, R) row-major but as a view of an (R, e) product), which the elementwise kernels
after them read at a stride, or copy; the backwards here write each gradient in its operand's layout.

Under autocast both fall back to the plain form (``F.linear`` and a transpose), whose dtype rules
autocast knows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["linear_to_channels", "linear_from_channels"]


class _ToChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        # x (R, d) contiguous, weight (e, d), bias (e,) | None -> (e, R)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.mm(weight, x.t())  # (e, R)
        return torch.addmm(bias.unsqueeze(-1), weight, x.t())  # (e, R)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g = g.contiguous()  # (e, R)
        gx = torch.mm(g.t(), weight) if ctx.needs_input_grad[0] else None  # (R, d) row-major
        gw = torch.mm(g, x) if ctx.needs_input_grad[1] else None  # (e, d)
        gb = g.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None  # (e,)
        return gx, gw, gb


class _FromChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, weight, bias):
        # y (e, R) contiguous, weight (o, e), bias (o,) | None -> (R, o)
        ctx.save_for_backward(y, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.mm(y.t(), weight.t())  # (R, o)
        return torch.addmm(bias, y.t(), weight.t())  # (R, o)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        y, weight = ctx.saved_tensors
        g = g.contiguous()  # (R, o)
        gy = torch.mm(weight.t(), g.t()) if ctx.needs_input_grad[0] else None  # (e, R) row-major
        gw = torch.mm(g.t(), y.t()) if ctx.needs_input_grad[1] else None  # (o, e)
        gb = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None  # (o,)
        return gy, gw, gb


def linear_to_channels(x: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    """``linear(x)`` of x (b, l, d) laid out channel-first: (e, b, l)."""
    b, l, d = x.shape
    if torch.is_autocast_enabled(x.device.type):
        return F.linear(x, linear.weight, linear.bias).permute(2, 0, 1).contiguous()  # (e, b, l)
    x2 = x.reshape(b * l, d).contiguous()  # (R, d)
    return _ToChannels.apply(x2, linear.weight, linear.bias).view(-1, b, l)  # (e, b, l)


def linear_from_channels(y: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    """``linear`` over the channels of y (e, b, l): (b, l, o)."""
    e, b, l = y.shape
    if torch.is_autocast_enabled(y.device.type):
        return F.linear(y.permute(1, 2, 0), linear.weight, linear.bias)  # (b, l, o)
    out = _FromChannels.apply(y.reshape(e, b * l).contiguous(), linear.weight, linear.bias)  # (R, o)
    return out.view(b, l, -1)  # (b, l, o)
