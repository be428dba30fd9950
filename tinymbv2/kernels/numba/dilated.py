r"""Numba kernels for atrous (dilated) convolution: dense, depthwise and grouped, direct loops.

With dilation $d$, output pixel $(o_h, o_w)$ with tap $(i, j)$ reads input pixel
$(o_h s_h + i d_h - p_h,\; o_w s_w + j d_w - p_w)$ (the taps $d$ pixels apart), and
$H_o = \lfloor (H + 2p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1$.

``NumbaKernels`` sends a convolution here only when its dilation is not 1: the kernels of
``.dense`` and ``.depthwise`` (im2col, the 3x3 planes, the channels-last loops) stay as
they are for dilation 1, and none of them pays for a dilation argument. These are plain
loops, one (image, channel) plane per task of a parallel loop, written for correctness
over speed; a DeepLab backbone dilates only its last, smallest planes.

Depthwise: direct loops, one (image, channel) plane per task of a parallel loop (at stride 1
with the padding a multiple of the dilation, ``NumbaKernels`` sends it to ``.subgrids``
instead). Dense (groups = 1): a matrix product per tap and image on the outputs whose input
lies inside the image only (``y[n][:, rect] += W[:, :, i, j] @ x[n][:, shifted rect]``,
``gx[n][:, shifted rect] += W[:, :, i, j].T @ gy[n][:, rect]``,
``gw[:, :, i, j] = sum_n gy[n][:, rect] @ x[n][:, shifted rect].T``): the padding's zeros,
most of a large rate's taps on a small map, are never multiplied. The images are split over
the threads.
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
# Tap (i, j) of a dense convolution adds W[:, :, i, j] (Co, Ci) @ x(shifted) (Ci, P) to the P
# outputs whose input pixel lies inside the image, a rectangle of the output plane
# ([rlo, rhi) x [clo, chi), from ``tap_run``). The padding's zeros are never multiplied: at
# ASPP's rates on a small map (rates 6/12/18 on 16 x 16) most taps reach outside, and a tap
# that reaches outside everywhere costs nothing (rate 18 there is a 1x1 convolution). im2col
# with the zeros kept (``.dense``'s way) would multiply all of them.
@njit(**_JIT)
def _gather(buf, src, r0, rows, rstep, c0, cols, cstep):
    """``buf[c, r*cols + q] = src[c, r0 + rstep*r, c0 + cstep*q]``: a rectangle, packed."""
    for c in range(src.shape[0]):
        for r in range(rows):
            line, base = src[c, r0 + rstep * r], r * cols
            for q in range(cols):
                buf[c, base + q] = line[c0 + cstep * q]


@njit(**_JIT)
def _scatter_add(dst, buf, r0, rows, rstep, c0, cols, cstep):
    """The transpose of ``_gather``: ``dst[c, r0 + rstep*r, c0 + cstep*q] += buf[c, r*cols + q]``."""
    for c in range(dst.shape[0]):
        for r in range(rows):
            line, base = dst[c, r0 + rstep * r], r * cols
            for q in range(cols):
                line[c0 + cstep * q] += buf[c, base + q]


@njit(**_JIT)
def _tap_rect(i, j, sh, sw, ph, pw, dh, dw, h, wd, ho, wo):
    """(rlo, rows, clo, cols, first input row, first input column) of tap (i, j)'s outputs."""
    rlo, rhi = tap_run(i * dh - ph, sh, h, ho)
    clo, chi = tap_run(j * dw - pw, sw, wd, wo)
    return rlo, rhi - rlo, clo, chi - clo, rlo * sh + i * dh - ph, clo * sw + j * dw - pw


@njit(parallel=True, **_JIT)
def _dense_forward(x, wtap, sh, sw, ph, pw, dh, dw, y):
    """y (N, Co, Ho, Wo) = the sum over taps of ``wtap[i, j]`` (Co, Ci) @ x's shifted rectangle."""
    n, ci, h, wd = x.shape
    kh, kw, co = wtap.shape[0], wtap.shape[1], wtap.shape[2]
    ho, wo = y.shape[2], y.shape[3]
    xbuf = np.empty((n, ci * ho * wo), x.dtype)  # scratch before the loop: see kernels.numba
    prod = np.empty((n, co * ho * wo), x.dtype)
    for b in prange(n):
        out = y[b]
        out[:] = 0
        for i in range(kh):
            for j in range(kw):
                rlo, rows, clo, cols, r0, c0 = _tap_rect(i, j, sh, sw, ph, pw, dh, dw, h, wd, ho, wo)
                p = rows * cols
                if p == 0:
                    continue
                xs, ps = xbuf[b, :ci * p].reshape(ci, p), prod[b, :co * p].reshape(co, p)
                _gather(xs, x[b], r0, rows, sh, c0, cols, sw)
                np.dot(wtap[i, j], xs, ps)
                _scatter_add(out, ps, rlo, rows, 1, clo, cols, 1)
    return y


@njit(parallel=True, **_JIT)
def _dense_backward_input(gy, wtap_t, sh, sw, ph, pw, dh, dw, gx):
    """gx (N, Ci, H, W) = the sum over taps of ``wtap_t[i, j]`` (Ci, Co) @ gy's rectangle, put back."""
    n, ci, h, wd = gx.shape
    kh, kw, co = wtap_t.shape[0], wtap_t.shape[1], wtap_t.shape[3]
    ho, wo = gy.shape[2], gy.shape[3]
    gbuf = np.empty((n, co * ho * wo), gy.dtype)
    prod = np.empty((n, ci * ho * wo), gy.dtype)
    for b in prange(n):
        out = gx[b]
        out[:] = 0
        for i in range(kh):
            for j in range(kw):
                rlo, rows, clo, cols, r0, c0 = _tap_rect(i, j, sh, sw, ph, pw, dh, dw, h, wd, ho, wo)
                p = rows * cols
                if p == 0:
                    continue
                gs, ps = gbuf[b, :co * p].reshape(co, p), prod[b, :ci * p].reshape(ci, p)
                _gather(gs, gy[b], rlo, rows, 1, clo, cols, 1)
                np.dot(wtap_t[i, j], gs, ps)
                _scatter_add(out, ps, r0, rows, sh, c0, cols, sw)
    return gx


@njit(parallel=True, **_JIT)
def _dense_backward_weight(gy, x, kh, kw, sh, sw, ph, pw, dh, dw, groups):
    """(kh, kw, Co, Ci): per tap, the sum over images of gy's rectangle @ x's shifted one, transposed."""
    n, ci, h, wd = x.shape
    co, ho, wo = gy.shape[1], gy.shape[2], gy.shape[3]
    part = np.zeros((groups, kh, kw, co, ci), x.dtype)
    tmps = np.empty((groups, co, ci), x.dtype)
    xbuf = np.empty((groups, ci * ho * wo), x.dtype)
    gbuf = np.empty((groups, co * ho * wo), x.dtype)
    for g in prange(groups):  # a run of consecutive images, summed in order in one thread
        tmp = tmps[g]
        for b in range(g * n // groups, (g + 1) * n // groups):
            for i in range(kh):
                for j in range(kw):
                    rlo, rows, clo, cols, r0, c0 = _tap_rect(i, j, sh, sw, ph, pw, dh, dw, h, wd,
                                                             ho, wo)
                    p = rows * cols
                    if p == 0:
                        continue
                    xs, gs = xbuf[g, :ci * p].reshape(ci, p), gbuf[g, :co * p].reshape(co, p)
                    _gather(xs, x[b], r0, rows, sh, c0, cols, sw)
                    _gather(gs, gy[b], rlo, rows, 1, clo, cols, 1)
                    np.dot(gs, xs.T, tmp)
                    part[g, i, j] += tmp
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
    geom, (ho, wo) = _dense_call(fn, x.shape, w.shape, stride, padding, dilation)
    y = np.empty((x.shape[0], w.shape[0], ho, wo), dtype)
    return _dense_forward(x, _c(w.transpose(2, 3, 0, 1)), *geom, y)


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
    return _dense_backward_input(gy, _c(w.transpose(2, 3, 1, 0)), *geom, gx)


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
    taps = _dense_backward_weight(gy, x, kh, kw, *geom, min(_GROUPS, max(n, 1)))
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
