"""ReLU6, Linear, global average pooling and dropout, each with its derivative."""
from __future__ import annotations

import numpy as np

from .. import random as _random
from ..autograd import Function, Tensor
from ..backend import get_array_module
from ..kernels import kernels_for
from .checks import check_same_device, check_same_dtype, check_tensor, pair


class ReLU6(Function):
    r"""$y = \min(\max(x, 0), 6)$ (paper section 3.2: robust in low precision).

    $\partial y / \partial x = 1$ for $0 < x < 6$ and 0 elsewhere, including exactly at 0
    and 6 (PyTorch's choice at the kinks).

    readable: this class (NumPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x):
        mask = (x > 0) & (x < 6)
        ctx.save_for_backward(mask)
        xp = get_array_module(x)
        return xp.clip(x, 0, 6).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


def relu6(x) -> Tensor:
    r"""$\min(\max(x, 0), 6)$ elementwise, for a Tensor ``x``."""
    return ReLU6.apply(check_tensor(x, "relu6"))


class Linear(Function):
    r"""$y = x W^T + b$ for $x$ (..., in), $W$ (out, in), $b$ (out,).

    $\partial L / \partial x = g W$, $\partial L / \partial W = g^T x$ (summed over all
    leading axes), $\partial L / \partial b = \sum g$. The products run on the kernel set's
    ``matmul`` (for numba: a product that does not start a second thread pool).

    readable: ``kernels/reference.py``, ``ReferenceKernels.matmul``.
    """

    @staticmethod
    def forward(ctx, x, w, b):
        k = kernels_for(x)
        ctx.save_for_backward(x, w)
        ctx.has_bias, ctx.kernels = b is not None, k
        y = k.matmul(x.reshape(-1, x.shape[-1]), w.T)
        if b is not None:
            y += b
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k = ctx.kernels
        g2 = g.reshape(-1, g.shape[-1])
        gx = k.matmul(g2, w).reshape(x.shape) if ctx.needs_input_grad[0] else None
        gw = k.matmul(g2.T, x.reshape(-1, x.shape[-1])) if ctx.needs_input_grad[1] else None
        gb = g2.sum(axis=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def linear(x, weight, bias=None) -> Tensor:
    """PyTorch's ``F.linear``: $y = x W^T + b$.

    Args:
        x: The input (..., in).
        weight: $W$ (out, in).
        bias: $b$ (out,), or None.

    Returns:
        The output (..., out).

    Raises:
        TypeError: The arguments are not Tensors of one dtype.
        ValueError: The shapes do not fit, or the Tensors are on different devices.
    """
    fn = "linear"
    check_tensor(x, fn, "input")
    check_tensor(weight, fn, "weight", ndim=2)
    if bias is not None:
        check_tensor(bias, fn, "bias", ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"{fn}: expected bias of shape ({weight.shape[0]},), got {bias.shape}")
    check_same_dtype(fn, input=x, weight=weight, bias=bias)
    check_same_device(fn, input=x, weight=weight, bias=bias)
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{fn}: expected input with last dimension {weight.shape[1]} "
            f"(weight {weight.shape}), got input {x.shape}"
        )
    return Linear.apply(x, weight, bias)


class AdaptiveAvgPool2d(Function):
    r"""Average over windows that tile (H, W) into (oh, ow) cells, as PyTorch.

    Cell $i$ spans rows $\lfloor i H / o_h \rfloor$ to $\lceil (i + 1) H / o_h \rceil$; each
    input in a cell of size $A$ gets $1/A$ of that cell's gradient (cells may overlap).

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, out_hw):
        xp = get_array_module(x)
        ctx.shape = x.shape
        ctx.out_hw = out_hw
        if out_hw == (1, 1):  # global average pooling, MobileNetV2's head
            # x stored (N, H, W, C) (the numba set's small planes): the gradient is made so too
            ctx.channels_last = (x.transpose(0, 2, 3, 1).flags.c_contiguous
                                 and not x.flags.c_contiguous)
            return x.mean(axis=(2, 3), keepdims=True)
        n, c, h, w = x.shape
        y = xp.empty((n, c) + out_hw, dtype=x.dtype)
        for i, (r0, r1) in enumerate(_cells(h, out_hw[0])):
            for j, (c0, c1) in enumerate(_cells(w, out_hw[1])):
                y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
        return y

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        n, c, h, w = ctx.shape
        if ctx.out_hw == (1, 1):
            if ctx.channels_last:  # in the input's layout: no copy to it in the next backward
                gx = xp.empty((n, h, w, c), dtype=g.dtype)
                gx[...] = (g / (h * w)).reshape(n, 1, 1, c)
                return gx.transpose(0, 3, 1, 2), None
            return xp.broadcast_to(g / (h * w), ctx.shape).copy(), None
        gx = xp.zeros(ctx.shape, dtype=g.dtype)
        for i, (r0, r1) in enumerate(_cells(h, ctx.out_hw[0])):
            for j, (c0, c1) in enumerate(_cells(w, ctx.out_hw[1])):
                area = (r1 - r0) * (c1 - c0)
                gx[:, :, r0:r1, c0:c1] += (g[:, :, i, j] / area)[:, :, None, None]
        return gx, None


def _cells(size, out):
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool2d(x, output_size=1) -> Tensor:
    """(N, C, H, W) -> (N, C, oh, ow) by averaging; ``output_size=1`` is global average pooling.

    Args:
        x: The input (N, C, H, W).
        output_size: (oh, ow), an int or a pair.

    Returns:
        The pooled output (N, C, oh, ow).

    Raises:
        ValueError: A size below 1.
    """
    check_tensor(x, "adaptive_avg_pool2d", ndim=4)
    out_hw = pair(output_size, "output_size", "adaptive_avg_pool2d")
    if min(out_hw) < 1:
        raise ValueError(f"adaptive_avg_pool2d: expected output_size >= 1, got {output_size!r}")
    return AdaptiveAvgPool2d.apply(x, out_hw)


class Dropout(Function):
    r"""Inverted dropout: $y = x m / (1 - p)$ with $m \sim \text{Bernoulli}(1 - p)$.

    $\partial L / \partial x = g m / (1 - p)$.

    readable: this class (no kernel).
    """

    @staticmethod
    def forward(ctx, x, scaled_mask):
        ctx.save_for_backward(scaled_mask)
        return x * scaled_mask

    @staticmethod
    def backward(ctx, g):
        (scaled_mask,) = ctx.saved_tensors
        return g * scaled_mask, None


def dropout(x, p=0.5, training=True, generator=None) -> Tensor:
    """Zero each element with probability $p$ and scale the rest by $1/(1 - p)$ (training only).

    The expected value is unchanged, so evaluation needs no rescaling.

    Args:
        x: The input.
        p: The probability of zeroing an element, in [0, 1].
        training: Drop (False: return ``x`` itself).
        generator: An ``np.random.Generator``, or None for the package's seeded one.

    Returns:
        The output, of ``x``'s shape.

    Raises:
        ValueError: ``p`` outside [0, 1].
    """
    check_tensor(x, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: expected probability p in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    xp = get_array_module(x.data)
    rng = generator if generator is not None else _random.default_generator()
    keep = rng.random(x.shape) >= p
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    scaled_mask = xp.asarray(keep * np.asarray(scale, dtype=x.dtype), dtype=x.dtype)
    return Dropout.apply(x, scaled_mask)
