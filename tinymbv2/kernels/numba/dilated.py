r"""Numba kernels for atrous (dilated) convolution: dense, depthwise and grouped, direct loops.

With dilation $d$, output pixel $(o_h, o_w)$ with tap $(i, j)$ reads input pixel
$(o_h s_h + i d_h - p_h,\; o_w s_w + j d_w - p_w)$ (the taps $d$ pixels apart), and
$H_o = \lfloor (H + 2p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1$.

``NumbaKernels`` sends a convolution here only when its dilation is not 1: the kernels of
``.dense`` and ``.depthwise`` (im2col, the 3x3 planes, the channels-last loops) stay as
they are for dilation 1, and none of them pays for a dilation argument. These are plain
loops, one (image, channel) plane per task of a parallel loop, written for correctness
over speed; a DeepLab backbone dilates only its last, smallest planes.

Depthwise: direct loops, one (image, channel) plane per task of a parallel loop. Dense
(groups = 1): as ``.dense`` does it, im2col with the taps spread by the dilation, then a
matrix product per image (``y[n] = W (Co, K) @ cols[n]``, ``dcols = W.T @ gy[n]`` folded
back by col2im, ``gw = sum_n gy[n] @ cols[n].T``), the images split over the threads.
Deterministic: each task writes only its own plane, image or filter, and the weight
gradient sums its images in ``_GROUPS`` runs fixed by the shapes, added in order.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from ..checks import conv_geometry, dilation_pair, grad_out_shape, same_float_dtype
from . import pool  # noqa: F401  (pins Numba's BLAS to one thread, starts the pool passive)

_JIT = dict(cache=CACHE, fastmath=False)
_GROUPS = 8  # partial sums of the dense weight gradient: fixed, so the result ignores the thread count


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


# ------------------------------------------------------------ dense: im2col + GEMM
@njit(**_JIT)
def _im2col(cols, x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """cols ``(Ci*kh*kw, Ho*Wo)`` of one image x (Ci, H, W):
    ``cols[(c, i, j), (oh, ow)] = xpad[c, oh*sh + i*dh, ow*sw + j*dw]``."""
    ci, h, wd = x.shape
    for c in range(ci):
        for i in range(kh):
            rlo, rhi = tap_run(i * dh - ph, sh, h, ho)
            for j in range(kw):
                clo, chi = tap_run(j * dw - pw, sw, wd, wo)
                dst = cols[(c * kh + i) * kw + j]
                dst[:] = 0
                for oh in range(rlo, rhi):
                    row, base = x[c, oh * sh + i * dh - ph], oh * wo
                    for ow in range(clo, chi):
                        dst[base + ow] = row[ow * sw + j * dw - pw]


@njit(**_JIT)
def _col2im(gx, dcols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """The transpose of ``_im2col``: gx (Ci, H, W) = the columns added back onto their pixels."""
    ci, h, wd = gx.shape
    gx[:] = 0
    for c in range(ci):
        for i in range(kh):
            rlo, rhi = tap_run(i * dh - ph, sh, h, ho)
            for j in range(kw):
                clo, chi = tap_run(j * dw - pw, sw, wd, wo)
                src = dcols[(c * kh + i) * kw + j]
                for oh in range(rlo, rhi):
                    row, base = gx[c, oh * sh + i * dh - ph], oh * wo
                    for ow in range(clo, chi):
                        row[ow * sw + j * dw - pw] += src[base + ow]


@njit(parallel=True, **_JIT)
def _dense_forward(x, wm, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, y3):
    n = x.shape[0]
    cols_all = np.empty((n, wm.shape[1], ho * wo), x.dtype)  # scratch before the loop: see kernels.numba
    for b in prange(n):
        _im2col(cols_all[b], x[b], kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
        np.dot(wm, cols_all[b], y3[b])
    return y3


@njit(parallel=True, **_JIT)
def _dense_backward_input(gy3, wt, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, gx):
    n = gx.shape[0]
    dcols_all = np.empty((n, wt.shape[0], ho * wo), gy3.dtype)
    for b in prange(n):
        np.dot(wt, gy3[b], dcols_all[b])
        _col2im(gx[b], dcols_all[b], kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
    return gx


@njit(parallel=True, **_JIT)
def _dense_backward_weight(gy3, x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, groups):
    n, ci = x.shape[0], x.shape[1]
    co, k = gy3.shape[1], ci * kh * kw
    part = np.zeros((groups, co, k), x.dtype)
    tmps = np.empty((groups, co, k), x.dtype)
    cols_all = np.empty((groups, k, ho * wo), x.dtype)
    for g in prange(groups):  # a run of consecutive images, summed in order in one thread
        acc, tmp, cols = part[g], tmps[g], cols_all[g]
        for b in range(g * n // groups, (g + 1) * n // groups):
            _im2col(cols, x[b], kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
            np.dot(gy3[b], cols.T, tmp)
            acc += tmp
    total = part[0].copy()
    for g in range(1, groups):
        total += part[g]
    return total


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


def _dense_call(fn, x_shape, w_shape, stride, padding, dilation):
    """((sh, sw, ph, pw, dh, dw), (Ho, Wo)) of a checked dense convolution."""
    _, geom, out_hw = _geometry(fn, x_shape, w_shape, stride, padding, dilation, False)
    return geom, out_hw


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
    fn = "conv2d_forward"
    x, w = _c(x), _c(w)
    dtype = same_float_dtype(fn, x=x, w=w)
    (sh, sw, ph, pw, dh, dw), (ho, wo) = _dense_call(fn, x.shape, w.shape, stride, padding, dilation)
    co, _, kh, kw = w.shape
    y = np.empty((x.shape[0], co, ho * wo), dtype)
    _dense_forward(x, w.reshape(co, -1), kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, y)
    return y.reshape(x.shape[0], co, ho, wo)


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
    fn = "conv2d_backward_input"
    gy, w = _c(gy), _c(w)
    dtype = same_float_dtype(fn, gy=gy, w=w)
    x_shape = tuple(int(s) for s in x_shape)
    (sh, sw, ph, pw, dh, dw), (ho, wo) = _dense_call(fn, x_shape, w.shape, stride, padding,
                                                     dilation)
    n, co, (kh, kw) = x_shape[0], w.shape[0], w.shape[2:]
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    wt = np.ascontiguousarray(w.reshape(co, -1).T)  # (K, Co)
    gx = np.empty(x_shape, dtype)
    return _dense_backward_input(gy.reshape(n, co, ho * wo), wt, kh, kw, sh, sw, ph, pw, dh, dw,
                                 ho, wo, gx)


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
    fn = "conv2d_backward_weight"
    gy, x = _c(gy), _c(x)
    same_float_dtype(fn, gy=gy, x=x)
    w_shape = tuple(int(s) for s in w_shape)
    (sh, sw, ph, pw, dh, dw), (ho, wo) = _dense_call(fn, x.shape, w_shape, stride, padding, dilation)
    n, co, (kh, kw) = x.shape[0], w_shape[0], w_shape[2:]
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    gw = _dense_backward_weight(gy.reshape(n, co, ho * wo), x, kh, kw, sh, sw, ph, pw, dh, dw,
                                ho, wo, min(_GROUPS, max(n, 1)))
    return gw.reshape(w_shape)


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
