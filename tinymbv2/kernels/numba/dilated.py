r"""Numba kernels for atrous (dilated) convolution: dense, depthwise and grouped, direct loops.

With dilation $d$, output pixel $(o_h, o_w)$ with tap $(i, j)$ reads input pixel
$(o_h s_h + i d_h - p_h,\; o_w s_w + j d_w - p_w)$ (the taps $d$ pixels apart), and
$H_o = \lfloor (H + 2p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1$.

``NumbaKernels`` sends a convolution here only when its dilation is not 1, and a dense one
only at a stride other than 1 (at stride 1, ``.tap_regions`` takes it): the kernels of
``.dense`` and ``.depthwise`` (im2col, the 3x3 planes, the channels-last loops) stay as
they are for dilation 1, and none of them pays for a dilation argument. These are plain
loops, one (image, channel) plane per task of a parallel loop, written for correctness
over speed; a DeepLab backbone dilates only its last, smallest planes.

Depthwise: direct loops, one (image, channel) plane per task of a parallel loop (at stride 1
with the padding a multiple of the dilation, ``NumbaKernels`` sends it to ``.subgrids``
instead). Dense (groups = 1): one matrix product per tap on the outputs whose input lies
inside the image only, the N images' rectangles side by side
(``y[n][:, rect] += W[:, :, i, j] @ x[n][:, shifted rect]`` for all n at once,
``gx[n][:, shifted rect] += W[:, :, i, j].T @ gy[n][:, rect]``,
``gw[:, :, i, j] = gy[:][:, rect] @ x[:][:, shifted rect].T`` over all images): the padding's
zeros, most of a large rate's taps on a small map, are never multiplied. The threads split
each product's rows (output channels, or input channels for gx) in ``_BLOCKS`` fixed runs.
Deterministic: each task writes only its own plane, image or rows, and the runs are fixed
by the shapes, not by the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from ..checks import conv_geometry, dilation_pair, grad_out_shape, same_float_dtype
from . import pool  # noqa: F401  (pins Numba's BLAS to one thread, starts the pool passive)

_JIT = dict(cache=CACHE, fastmath=False)
_BLOCKS = 2  # row runs of a dense tap's product: fixed, so the result ignores the thread count


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
                    wv, c0 = w[o, c, i, j], clo * sw + j * dw - pw
                    for oh in range(rlo, rhi):
                        # row views indexed from 0: no wraparound test, so the loop vectorises
                        dst, src = out[oh, clo:chi], plane[oh * sh + i * dh - ph, c0:]
                        for k in range(chi - clo):
                            dst[k] += wv * src[k * sw]
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
                    wv, c0 = w[o, c, i, j], clo * sw + j * dw - pw
                    for oh in range(rlo, rhi):
                        dst, grad = plane[oh * sh + i * dh - ph, c0:], src[oh, clo:chi]
                        for k in range(chi - clo):
                            dst[k * sw] += wv * grad[k]
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


# ------------------------------------------------- dense: a GEMM per tap, on its valid outputs
# Tap (i, j) of a dense convolution adds W[:, :, i, j] (Co, Ci) @ x(shifted) (Ci, N*P) to the
# P outputs of each image whose input pixel lies inside the image, a rectangle of the output
# plane ([rlo, rhi) x [clo, chi), from ``tap_run``). The padding's zeros are never multiplied:
# at ASPP's rates on a small map (rates 6/12/18 on 16 x 16) most taps reach outside, and a tap
# that reaches outside everywhere costs nothing (rate 18 there is a 1x1 convolution). im2col
# with the zeros kept (``.dense``'s way) would multiply all of them. The N images' rectangles
# sit side by side in one (Ci, N*P) matrix: one product per tap, not per image, because a
# corner tap's rectangle alone (4 x 4 pixels at rate 12 on 16 x 16) is too thin a matrix for
# BLAS to run near its peak. The threads split the product's rows in ``_BLOCKS`` fixed runs.
@njit(**_JIT)
def _gather(buf, off, src, r0, rows, rstep, c0, cols, cstep):
    """``buf[c, off + r*cols + q] = src[c, r0 + rstep*r, c0 + cstep*q]``: a rectangle, packed."""
    for c in range(src.shape[0]):
        for r in range(rows):
            line, base = src[c, r0 + rstep * r], off + r * cols
            for q in range(cols):
                buf[c, base + q] = line[c0 + cstep * q]


@njit(**_JIT)
def _scatter_add(dst, buf, off, r0, rows, rstep, c0, cols, cstep):
    """The transpose of ``_gather``: ``dst[c, r0 + rstep*r, c0 + cstep*q] += buf[c, off + r*cols + q]``."""
    for c in range(dst.shape[0]):
        for r in range(rows):
            line, base = dst[c, r0 + rstep * r], off + r * cols
            for q in range(cols):
                line[c0 + cstep * q] += buf[c, base + q]


@njit(**_JIT)
def _tap_rect(i, j, sh, sw, ph, pw, dh, dw, h, wd, ho, wo):
    """(rlo, rows, clo, cols, first input row, first input column) of tap (i, j)'s outputs."""
    rlo, rhi = tap_run(i * dh - ph, sh, h, ho)
    clo, chi = tap_run(j * dw - pw, sw, wd, wo)
    return rlo, rhi - rlo, clo, chi - clo, rlo * sh + i * dh - ph, clo * sw + j * dw - pw


@njit(**_JIT)
def _pack_tap(dst, w, i, j, transpose):
    """``dst = w[:, :, i, j]`` (Co, Ci), or its transpose (Ci, Co): one tap's matrix, packed."""
    co, ci = w.shape[0], w.shape[1]
    for o in range(co):
        for c in range(ci):
            if transpose:
                dst[c, o] = w[o, c, i, j]
            else:
                dst[o, c] = w[o, c, i, j]


@njit(**_JIT)
def _dot_rows(a, b, out, k, blocks):
    """Run k of ``blocks`` of ``out = a @ b``: rows ``[k*M // blocks, (k+1)*M // blocks)`` of a and out."""
    m = a.shape[0]
    lo, hi = k * m // blocks, (k + 1) * m // blocks
    np.dot(a[lo:hi], b, out[lo:hi])


@njit(parallel=True, **_JIT)
def _dense_forward(x, w, sh, sw, ph, pw, dh, dw, y):
    """y (N, Co, Ho, Wo) = the sum over taps of ``w[:, :, i, j]`` (Co, Ci) @ x's shifted rectangles."""
    n, ci, h, wd = x.shape
    co, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    ho, wo = y.shape[2], y.shape[3]
    wt = np.empty((co, ci), x.dtype)
    blocks = min(_BLOCKS, co)
    xbuf = np.empty(ci * n * ho * wo, x.dtype)
    prod = np.empty(co * n * ho * wo, x.dtype)
    for b in prange(n):
        y[b] = 0
    for i in range(kh):
        for j in range(kw):
            rlo, rows, clo, cols, r0, c0 = _tap_rect(i, j, sh, sw, ph, pw, dh, dw, h, wd, ho, wo)
            p = rows * cols
            if p == 0:
                continue
            xs, ps = xbuf[:ci * n * p].reshape(ci, n * p), prod[:co * n * p].reshape(co, n * p)
            for b in prange(n):
                _gather(xs, b * p, x[b], r0, rows, sh, c0, cols, sw)
            _pack_tap(wt, w, i, j, False)
            for k in prange(blocks):
                _dot_rows(wt, xs, ps, k, blocks)
            for b in prange(n):
                _scatter_add(y[b], ps, b * p, rlo, rows, 1, clo, cols, 1)
    return y


@njit(parallel=True, **_JIT)
def _dense_backward_input(gy, w, sh, sw, ph, pw, dh, dw, gx):
    """gx (N, Ci, H, W) = the sum over taps of ``w[:, :, i, j].T`` (Ci, Co) @ gy's rectangles, put back."""
    n, ci, h, wd = gx.shape
    co, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    ho, wo = gy.shape[2], gy.shape[3]
    wt = np.empty((ci, co), gy.dtype)
    blocks = min(_BLOCKS, ci)
    gbuf = np.empty(co * n * ho * wo, gy.dtype)
    prod = np.empty(ci * n * ho * wo, gy.dtype)
    for b in prange(n):
        gx[b] = 0
    for i in range(kh):
        for j in range(kw):
            rlo, rows, clo, cols, r0, c0 = _tap_rect(i, j, sh, sw, ph, pw, dh, dw, h, wd, ho, wo)
            p = rows * cols
            if p == 0:
                continue
            gs, ps = gbuf[:co * n * p].reshape(co, n * p), prod[:ci * n * p].reshape(ci, n * p)
            for b in prange(n):
                _gather(gs, b * p, gy[b], rlo, rows, 1, clo, cols, 1)
            _pack_tap(wt, w, i, j, True)
            for k in prange(blocks):
                _dot_rows(wt, gs, ps, k, blocks)
            for b in prange(n):
                _scatter_add(gx[b], ps, b * p, r0, rows, sh, c0, cols, sw)
    return gx


@njit(parallel=True, **_JIT)
def _dense_backward_weight(gy, x, kh, kw, sh, sw, ph, pw, dh, dw):
    """(kh, kw, Co, Ci): per tap, gy's rectangles ``(Co, N*P)`` @ x's shifted ones ``(Ci, N*P)``, transposed."""
    n, ci, h, wd = x.shape
    co, ho, wo = gy.shape[1], gy.shape[2], gy.shape[3]
    taps = np.zeros((kh, kw, co, ci), x.dtype)
    xbuf = np.empty(ci * n * ho * wo, x.dtype)
    gbuf = np.empty(co * n * ho * wo, x.dtype)
    for i in range(kh):
        for j in range(kw):
            rlo, rows, clo, cols, r0, c0 = _tap_rect(i, j, sh, sw, ph, pw, dh, dw, h, wd, ho, wo)
            p = rows * cols
            if p == 0:
                continue
            xs, gs = xbuf[:ci * n * p].reshape(ci, n * p), gbuf[:co * n * p].reshape(co, n * p)
            for b in prange(n):
                _gather(xs, b * p, x[b], r0, rows, sh, c0, cols, sw)
                _gather(gs, b * p, gy[b], rlo, rows, 1, clo, cols, 1)
            for k in prange(min(_BLOCKS, co)):
                _dot_rows(gs, xs.T, taps[i, j], k, min(_BLOCKS, co))
    return taps


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
    geom, (ho, wo) = _dense_call(fn, x.shape, w.shape, stride, padding, dilation)
    y = np.empty((x.shape[0], w.shape[0], ho, wo), dtype)
    return _dense_forward(x, w, *geom, y)


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
    geom, (ho, wo) = _dense_call(fn, x_shape, w.shape, stride, padding, dilation)
    grad_out_shape(fn, gy.shape, (x_shape[0], w.shape[0], ho, wo))
    gx = np.empty(x_shape, dtype)
    return _dense_backward_input(gy, w, *geom, gx)


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
    geom, (ho, wo) = _dense_call(fn, x.shape, w_shape, stride, padding, dilation)
    n, co, (kh, kw) = x.shape[0], w_shape[0], w_shape[2:]
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    taps = _dense_backward_weight(gy, x, kh, kw, *geom)
    return _c(taps.transpose(2, 3, 0, 1))


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
