r"""Numba kernels for atrous (dilated) convolution: dense, depthwise and grouped, direct loops.

With dilation $d$, output pixel $(o_h, o_w)$ with tap $(i, j)$ reads input pixel
$(o_h s_h + i d_h - p_h,\; o_w s_w + j d_w - p_w)$ (the taps $d$ pixels apart), and
$H_o = \lfloor (H + 2p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1$.

``NumbaKernels`` sends a convolution here only when its dilation is not 1: the kernels of
``.dense`` and ``.depthwise`` (im2col, the 3x3 planes, the channels-last loops) stay as
they are for dilation 1, and none of them pays for a dilation argument. These are plain
loops, one (image, channel) plane per task of a parallel loop, written for correctness
over speed; a DeepLab backbone dilates only its last, smallest planes.

One kernel serves every grouping: ``groups`` = 1 is the dense convolution, ``groups`` =
C with a (C, 1, kh, kw) weight the depthwise one. Deterministic: each task writes only
its own plane (forward, backward-input) or its own filter (backward-weight), summing in
a fixed order.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from ..checks import conv_geometry, dilation_pair, grad_out_shape, same_float_dtype
from . import pool  # noqa: F401  (pins Numba's BLAS to one thread, starts the pool passive)

_JIT = dict(cache=CACHE, fastmath=False)


@njit(**_JIT)
def tap_run(offset, stride, size, out_size):
    """The outputs [lo, hi) whose input ``o*stride + offset`` falls inside [0, size).

    Args:
        offset: The tap's offset, ``i*d - p``.
        stride: The stride.
        size: The input size.
        out_size: The output size.

    Returns:
        ``(lo, hi)``, with ``lo <= hi``.
    """
    lo = 0
    while lo < out_size and lo * stride + offset < 0:
        lo += 1
    hi = out_size
    while hi > lo and (hi - 1) * stride + offset >= size:
        hi -= 1
    return lo, hi


@njit(parallel=True, **_JIT)
def _forward(x, w, groups, sh, sw, ph, pw, dh, dw, y):
    n, _, h, wd = x.shape
    co, cig, kh, kw = w.shape
    ho, wo = y.shape[2], y.shape[3]
    cog = co // groups
    for t in prange(n * co):
        b, o = t // co, t % co
        c0 = (o // cog) * cig  # the first input channel of o's group
        out = y[b, o]
        out[:] = 0
        for c in range(cig):
            plane = x[b, c0 + c]
            for i in range(kh):
                rlo, rhi = tap_run(i * dh - ph, sh, h, ho)
                for j in range(kw):
                    clo, chi = tap_run(j * dw - pw, sw, wd, wo)
                    wv = w[o, c, i, j]
                    for oh in range(rlo, rhi):
                        row = plane[oh * sh + i * dh - ph]
                        for ow in range(clo, chi):
                            out[oh, ow] += wv * row[ow * sw + j * dw - pw]
    return y


@njit(parallel=True, **_JIT)
def _backward_input(gy, w, groups, sh, sw, ph, pw, dh, dw, gx):
    n, ci, h, wd = gx.shape
    co, cig, kh, kw = w.shape
    ho, wo = gy.shape[2], gy.shape[3]
    cog = co // groups
    for t in prange(n * ci):
        b, cin = t // ci, t % ci
        g, c = cin // cig, cin % cig
        plane = gx[b, cin]
        plane[:] = 0
        for o in range(g * cog, (g + 1) * cog):
            src = gy[b, o]
            for i in range(kh):
                rlo, rhi = tap_run(i * dh - ph, sh, h, ho)
                for j in range(kw):
                    clo, chi = tap_run(j * dw - pw, sw, wd, wo)
                    wv = w[o, c, i, j]
                    for oh in range(rlo, rhi):
                        row = plane[oh * sh + i * dh - ph]
                        for ow in range(clo, chi):
                            row[ow * sw + j * dw - pw] += wv * src[oh, ow]
    return gx


@njit(parallel=True, **_JIT)
def _backward_weight(gy, x, groups, sh, sw, ph, pw, dh, dw, gw):
    n, _, h, wd = x.shape
    co, cig, kh, kw = gw.shape
    ho, wo = gy.shape[2], gy.shape[3]
    cog = co // groups
    for t in prange(co * cig):
        o, c = t // cig, t % cig
        cin = (o // cog) * cig + c
        for i in range(kh):
            rlo, rhi = tap_run(i * dh - ph, sh, h, ho)
            for j in range(kw):
                clo, chi = tap_run(j * dw - pw, sw, wd, wo)
                acc = 0.0  # float64 whatever the dtype: one sum per tap, cast once
                for b in range(n):
                    src, plane = gy[b, o], x[b, cin]
                    for oh in range(rlo, rhi):
                        row = plane[oh * sh + i * dh - ph]
                        for ow in range(clo, chi):
                            acc += src[oh, ow] * row[ow * sw + j * dw - pw]
                gw[o, c, i, j] = acc
    return gw


def _geometry(fn, x_shape, w_shape, stride, padding, dilation, depthwise):
    """(groups, (sh, sw, ph, pw, dh, dw), (Ho, Wo)) of a checked convolution."""
    stride, padding, out_hw = conv_geometry(fn, x_shape, w_shape, stride, padding,
                                            depthwise=depthwise, dilation=dilation)
    groups = x_shape[1] if depthwise else 1
    return groups, stride + padding + dilation_pair(fn, dilation), out_hw


def _c(a):
    return np.ascontiguousarray(a)


def _forward_call(fn, x, w, stride, padding, dilation, depthwise):
    x, w = _c(x), _c(w)
    dtype = same_float_dtype(fn, x=x, w=w)
    groups, geom, (ho, wo) = _geometry(fn, x.shape, w.shape, stride, padding, dilation, depthwise)
    y = np.empty((x.shape[0], w.shape[0], ho, wo), dtype)
    return _forward(x, w, groups, *geom, y)


def _backward_input_call(fn, gy, w, x_shape, stride, padding, dilation, depthwise):
    gy, w = _c(gy), _c(w)
    dtype = same_float_dtype(fn, gy=gy, w=w)
    x_shape = tuple(int(s) for s in x_shape)
    groups, geom, (ho, wo) = _geometry(fn, x_shape, w.shape, stride, padding, dilation, depthwise)
    grad_out_shape(fn, gy.shape, (x_shape[0], w.shape[0], ho, wo))
    return _backward_input(gy, w, groups, *geom, np.empty(x_shape, dtype))


def _backward_weight_call(fn, gy, x, w_shape, stride, padding, dilation, depthwise):
    gy, x = _c(gy), _c(x)
    dtype = same_float_dtype(fn, gy=gy, x=x)
    w_shape = tuple(int(s) for s in w_shape)
    groups, geom, (ho, wo) = _geometry(fn, x.shape, w_shape, stride, padding, dilation, depthwise)
    grad_out_shape(fn, gy.shape, (x.shape[0], w_shape[0], ho, wo))
    return _backward_weight(gy, x, groups, *geom, np.empty(w_shape, dtype))


def conv2d_forward(x, w, stride, padding, dilation):
    """Dense dilated convolution; ``ReferenceKernels.conv2d_forward``'s contract.

    Args:
        x: The input (N, Ci, H, W).
        w: The weight (Co, Ci, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        dilation: (dh, dw).

    Returns:
        y (N, Co, Ho, Wo).
    """
    return _forward_call("conv2d_forward", x, w, stride, padding, dilation, False)


def conv2d_backward_input(gy, w, x_shape, stride, padding, dilation):
    r"""Input gradient of the dense dilated convolution; the reference kernel's contract.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo).
        w: The weight (Co, Ci, kh, kw).
        x_shape: The input's shape (N, Ci, H, W).
        stride: (sh, sw).
        padding: (ph, pw).
        dilation: (dh, dw).

    Returns:
        gx, of ``x_shape``.
    """
    return _backward_input_call("conv2d_backward_input", gy, w, x_shape, stride, padding,
                                dilation, False)


def conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation):
    r"""Weight gradient of the dense dilated convolution; the reference kernel's contract.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo).
        x: The input (N, Ci, H, W).
        w_shape: The weight's shape (Co, Ci, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw).
        dilation: (dh, dw).

    Returns:
        gw, of ``w_shape``.
    """
    return _backward_weight_call("conv2d_backward_weight", gy, x, w_shape, stride, padding,
                                 dilation, False)


def depthwise_conv2d_forward(x, w, stride, padding, dilation):
    """Depthwise dilated convolution; ``ReferenceKernels.depthwise_conv2d_forward``'s contract.

    Args:
        x: The input (N, C, H, W).
        w: The weight (C, 1, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        dilation: (dh, dw).

    Returns:
        y (N, C, Ho, Wo).
    """
    return _forward_call("depthwise_conv2d_forward", x, w, stride, padding, dilation, True)


def depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding, dilation):
    r"""Input gradient of the depthwise dilated convolution; the reference kernel's contract.

    Args:
        gy: $\partial L / \partial y$ (N, C, Ho, Wo).
        w: The weight (C, 1, kh, kw).
        x_shape: The input's shape (N, C, H, W).
        stride: (sh, sw).
        padding: (ph, pw).
        dilation: (dh, dw).

    Returns:
        gx, of ``x_shape``.
    """
    return _backward_input_call("depthwise_conv2d_backward_input", gy, w, x_shape, stride,
                                padding, dilation, True)


def depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation):
    r"""Weight gradient of the depthwise dilated convolution; the reference kernel's contract.

    Args:
        gy: $\partial L / \partial y$ (N, C, Ho, Wo).
        x: The input (N, C, H, W).
        w_shape: The weight's shape (C, 1, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw).
        dilation: (dh, dw).

    Returns:
        gw, of ``w_shape``.
    """
    return _backward_weight_call("depthwise_conv2d_backward_weight", gy, x, w_shape, stride,
                                 padding, dilation, True)
