"""Numba kernels for depthwise convolution (CPU, parallel, deterministic).

Same names, signatures and results as :mod:`tinymbv2.kernels.reference`;
``numba_cpu`` re-exports them. Strategy:

* Each pass is built from a single-plane routine (``_correlate_plane``,
  ``_scatter_plane``, ``_weight_taps_plane``) on one (H, W) input plane and
  one (Ho, Wo) output plane. The padding is never materialised: for each
  kernel row i / column j the range of outputs whose input lies inside the
  image is computed once (``_valid_range``), so the innermost loop runs over
  a run of output columns with no bounds test and vectorises.
* ``prange`` only splits work whose outputs are disjoint: (image, channel)
  planes for forward and backward-input, channels for backward-weight (each
  channel sums over the batch in order in one thread). Results are therefore
  bit-identical from run to run, and whatever the number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import numba_pool  # noqa: F401  (the one-pool set-up, see there)
from ._checks import conv_geometry, grad_out_shape, same_float_dtype

_JIT = dict(cache=True, fastmath=False)


# ---------------------------------------------------------------- plane helpers
@njit(**_JIT)
def _valid_range(k, pad, stride, size, out_size):
    """For each kernel offset t < k, the outputs [lo[t], hi[t]) whose input
    ``o*stride + t - pad`` falls inside [0, size)."""
    lo = np.zeros(k, np.int64)
    hi = np.zeros(k, np.int64)
    for t in range(k):
        a = 0
        if pad - t > 0:
            a = (pad - t + stride - 1) // stride
        b = (size - 1 + pad - t) // stride + 1 if size - 1 + pad - t >= 0 else 0
        b = min(b, out_size)
        lo[t] = a
        hi[t] = max(a, b)
    return lo, hi


# The inner loops below index row *views* from 0 (``ys[k]``, not ``y[oh, ow]``):
# Numba then knows the index is non-negative, drops its negative-index
# wraparound test, and LLVM vectorises the loop (about 4x faster). Stride 1
# and stride > 1 get separate loops so the stride-1 views stay contiguous.


@njit(**_JIT)
def _correlate_plane(y, x, w, sh, sw, ph, pw, rlo, rhi, clo, chi):
    """y (Ho, Wo) += cross-correlation of plane x (H, W) with w (kh, kw)."""
    kh, kw = w.shape
    for i in range(kh):
        for oh in range(rlo[i], rhi[i]):
            yrow, xrow = y[oh], x[oh * sh - ph + i]
            for j in range(kw):
                lo, hi, off = clo[j], chi[j], j - pw
                if hi <= lo:
                    continue
                wv = w[i, j]
                ys = yrow[lo:hi]
                if sw == 1:
                    xs = xrow[lo + off : hi + off]
                    for k in range(hi - lo):
                        ys[k] += wv * xs[k]
                else:
                    xs = xrow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for k in range(hi - lo):
                        ys[k] += wv * xs[k]


@njit(**_JIT)
def _scatter_plane(gx, gy, w, sh, sw, ph, pw, rlo, rhi, clo, chi):
    """gx (H, W) += the transpose of ``_correlate_plane`` applied to gy (Ho, Wo)."""
    kh, kw = w.shape
    for i in range(kh):
        for oh in range(rlo[i], rhi[i]):
            gyrow, gxrow = gy[oh], gx[oh * sh - ph + i]
            for j in range(kw):
                lo, hi, off = clo[j], chi[j], j - pw
                if hi <= lo:
                    continue
                wv = w[i, j]
                gys = gyrow[lo:hi]
                if sw == 1:
                    gxs = gxrow[lo + off : hi + off]
                    for k in range(hi - lo):
                        gxs[k] += wv * gys[k]
                else:
                    gxs = gxrow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for k in range(hi - lo):
                        gxs[k] += wv * gys[k]


@njit(**_JIT)
def _weight_taps_plane(acc, gy, x, sh, sw, ph, pw, rlo, rhi, clo, chi):
    """acc (kh, kw, Wo) += gy[oh, ow] * x[input of tap (i, j) at (oh, ow)], summed over oh.

    Keeping one running sum per output column (summed up only at the end)
    lets the inner loop vectorise without reordering a floating-point
    reduction, which ``fastmath=False`` forbids."""
    kh, kw = acc.shape[0], acc.shape[1]
    for i in range(kh):
        for oh in range(rlo[i], rhi[i]):
            gyrow, xrow = gy[oh], x[oh * sh - ph + i]
            for j in range(kw):
                lo, hi, off = clo[j], chi[j], j - pw
                if hi <= lo:
                    continue
                a = acc[i, j, lo:hi]
                gys = gyrow[lo:hi]
                if sw == 1:
                    xs = xrow[lo + off : hi + off]
                    for k in range(hi - lo):
                        a[k] += gys[k] * xs[k]
                else:
                    xs = xrow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for k in range(hi - lo):
                        a[k] += gys[k] * xs[k]


@njit(**_JIT)
def _finish_taps(acc, out):
    """out (kh, kw) = acc (kh, kw, Wo) summed over its last axis, left to right."""
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            s = acc[i, j, 0] * 0
            for ow in range(acc.shape[2]):
                s += acc[i, j, ow]
            out[i, j] = s


# ------------------------------------------------------------------ jitted cores
@njit(parallel=True, **_JIT)
def _depthwise_forward(x, w, sh, sw, ph, pw, ho, wo):
    n, c, h, wd = x.shape
    rlo, rhi = _valid_range(w.shape[2], ph, sh, h, ho)
    clo, chi = _valid_range(w.shape[3], pw, sw, wd, wo)
    y = np.empty((n, c, ho, wo), x.dtype)
    for t in prange(n * c):
        b, ch = t // c, t % c
        y[b, ch] = 0
        _correlate_plane(y[b, ch], x[b, ch], w[ch, 0], sh, sw, ph, pw, rlo, rhi, clo, chi)
    return y


@njit(parallel=True, **_JIT)
def _depthwise_backward_input(gy, w, h, wd, sh, sw, ph, pw):
    n, c, ho, wo = gy.shape
    rlo, rhi = _valid_range(w.shape[2], ph, sh, h, ho)
    clo, chi = _valid_range(w.shape[3], pw, sw, wd, wo)
    gx = np.empty((n, c, h, wd), gy.dtype)
    for t in prange(n * c):
        b, ch = t // c, t % c
        gx[b, ch] = 0
        _scatter_plane(gx[b, ch], gy[b, ch], w[ch, 0], sh, sw, ph, pw, rlo, rhi, clo, chi)
    return gx


@njit(parallel=True, **_JIT)
def _depthwise_backward_weight(gy, x, kh, kw, sh, sw, ph, pw):
    n, c, ho, wo = gy.shape
    h, wd = x.shape[2], x.shape[3]
    rlo, rhi = _valid_range(kh, ph, sh, h, ho)
    clo, chi = _valid_range(kw, pw, sw, wd, wo)
    gw = np.empty((c, 1, kh, kw), x.dtype)
    for ch in prange(c):  # one channel per iteration: its sum over n stays in one thread, in order
        acc = np.zeros((kh, kw, wo), x.dtype)
        for b in range(n):
            _weight_taps_plane(acc, gy[b, ch], x[b, ch], sh, sw, ph, pw, rlo, rhi, clo, chi)
        _finish_taps(acc, gw[ch, 0])
    return gw


# ------------------------------------------------------------- public wrappers
def _c(a):
    return np.ascontiguousarray(a)


def depthwise_conv2d_forward(x, w, stride, padding):
    """Depthwise convolution. x: (N, C, H, W), w: (C, 1, kh, kw) -> (N, C, Ho, Wo)."""
    fn = "depthwise_conv2d_forward"
    x, w = _c(x), _c(w)
    same_float_dtype(fn, x=x, w=w)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding, depthwise=True)
    return _depthwise_forward(x, w, sh, sw, ph, pw, ho, wo)


def depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding):
    """Gradient of ``depthwise_conv2d_forward`` w.r.t. x: -> ``x_shape``."""
    fn = "depthwise_conv2d_backward_input"
    gy, w = _c(gy), _c(w)
    same_float_dtype(fn, gy=gy, w=w)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding, depthwise=True)
    grad_out_shape(fn, gy.shape, (x_shape[0], x_shape[1], ho, wo))
    return _depthwise_backward_input(gy, w, int(x_shape[2]), int(x_shape[3]), sh, sw, ph, pw)


def depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding):
    """Gradient of ``depthwise_conv2d_forward`` w.r.t. w: -> ``w_shape`` (C, 1, kh, kw)."""
    fn = "depthwise_conv2d_backward_weight"
    gy, x = _c(gy), _c(x)
    same_float_dtype(fn, gy=gy, x=x)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding, depthwise=True)
    grad_out_shape(fn, gy.shape, (x.shape[0], x.shape[1], ho, wo))
    return _depthwise_backward_weight(gy, x, int(w_shape[2]), int(w_shape[3]), sh, sw, ph, pw)
