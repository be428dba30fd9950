"""Numba + BLAS kernels for dense (groups = 1) and pointwise (1x1) convolution.

Same names, signatures and results as :mod:`tinymbv2.kernels.reference`;
``numba_cpu`` re-exports them.

* Dense convolution is im2col + GEMM, over chunks of images small enough
  that the column matrices (K x P per image, K = Ci*kh*kw, P = Ho*Wo) stay
  around 32 MB, yet few enough calls that Numba's and BLAS's thread pools
  do not hand the cores back and forth once per image:
  forward ``y[n] = W (Co, K) @ cols[n]``; backward-weight
  ``gw = sum_n gy[n] @ cols[n].T`` (summed over n in order); backward-input
  ``dcols = W.T @ gy[n]`` then ``col2im`` adds each column back onto the input
  pixel it was copied from. im2col/col2im are Numba loops, parallel over
  (image, row of ``cols``) / (image, input channel), so each thread writes
  its own memory and the result is deterministic.
* Pointwise convolutions need no im2col at all: x[n] viewed as (Ci, H*W) *is*
  the column matrix, so they are one BLAS GEMM per image via ``np.matmul``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._checks import conv_geometry, grad_out_shape, ndim, same_float_dtype
from .numba_depthwise import _valid_range

_JIT = dict(cache=True, fastmath=False)


@njit(**_JIT)
def _im2col_row(dst, x, i, j, sh, sw, ph, pw, rlo, rhi, clo, chi):
    """dst (Ho, Wo) = what tap (i, j) reads of plane x (H, W); 0 on the padding."""
    dst[:] = 0
    lo, hi, off = clo[j], chi[j], j - pw
    if hi <= lo:
        return
    for oh in range(rlo[i], rhi[i]):
        xrow, drow = x[oh * sh - ph + i], dst[oh, lo:hi]
        if sw == 1:
            xs = xrow[lo + off : hi + off]
        else:
            xs = xrow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
        for k in range(hi - lo):
            drow[k] = xs[k]


@njit(parallel=True, **_JIT)
def _im2col(x, kh, kw, sh, sw, ph, pw, ho, wo):
    """x (B, Ci, H, W) -> cols (B, Ci*kh*kw, Ho*Wo),
    cols[b, (c, i, j), (oh, ow)] = xp[b, c, oh*sh + i, ow*sw + j]."""
    nb, ci, h, wd = x.shape
    rlo, rhi = _valid_range(kh, ph, sh, h, ho)
    clo, chi = _valid_range(kw, pw, sw, wd, wo)
    k = ci * kh * kw
    cols = np.empty((nb, k, ho * wo), x.dtype)
    for t in prange(nb * k):
        b, r = t // k, t % k
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        _im2col_row(cols[b, r].reshape(ho, wo), x[b, c], i, j, sh, sw, ph, pw, rlo, rhi, clo, chi)
    return cols


@njit(parallel=True, **_JIT)
def _col2im(dcols, ci, h, wd, kh, kw, sh, sw, ph, pw, ho, wo):
    """The transpose of ``_im2col``: gx (B, Ci, H, W) = the columns added back onto their pixels."""
    nb = dcols.shape[0]
    rlo, rhi = _valid_range(kh, ph, sh, h, ho)
    clo, chi = _valid_range(kw, pw, sw, wd, wo)
    gx = np.zeros((nb, ci, h, wd), dcols.dtype)
    for t in prange(nb * ci):  # each plane is written by one thread, taps in order
        b, c = t // ci, t % ci
        for i in range(kh):
            for j in range(kw):
                src = dcols[b, (c * kh + i) * kw + j].reshape(ho, wo)
                lo, hi, off = clo[j], chi[j], j - pw
                if hi <= lo:
                    continue
                for oh in range(rlo[i], rhi[i]):
                    grow, srow = gx[b, c, oh * sh - ph + i], src[oh, lo:hi]
                    if sw == 1:
                        gs = grow[lo + off : hi + off]
                    else:
                        gs = grow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for k in range(hi - lo):
                        gs[k] += srow[k]
    return gx


def _c(a):
    return np.ascontiguousarray(a)


def _chunks(n, k, p):
    """Image ranges whose column matrices (k x p each) fill about 32 MB of float32."""
    step = max(1, (8 << 20) // max(1, k * p))
    return [(b, min(n, b + step)) for b in range(0, n, step)]


def conv2d_forward(x, w, stride, padding):
    """Dense convolution, groups = 1. x: (N, Ci, H, W), w: (Co, Ci, kh, kw) -> (N, Co, Ho, Wo)."""
    fn = "conv2d_forward"
    x, w = _c(x), _c(w)
    same_float_dtype(fn, x=x, w=w)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding)
    n, co, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    wm = w.reshape(co, -1)
    y = np.empty((n, co, ho * wo), x.dtype)
    for b0, b1 in _chunks(n, wm.shape[1], ho * wo):
        cols = _im2col(x[b0:b1], kh, kw, sh, sw, ph, pw, ho, wo)
        np.matmul(wm, cols, out=y[b0:b1])
    return y.reshape(n, co, ho, wo)


def conv2d_backward_input(gy, w, x_shape, stride, padding):
    """Gradient of ``conv2d_forward`` w.r.t. x: (N, Co, Ho, Wo) -> ``x_shape``."""
    fn = "conv2d_backward_input"
    gy, w = _c(gy), _c(w)
    same_float_dtype(fn, gy=gy, w=w)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding)
    n, ci, h, wd = (int(s) for s in x_shape)
    co, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    wt = w.reshape(co, -1).T  # (K, Co): a transposed view, BLAS reads it as is
    gy3 = gy.reshape(n, co, ho * wo)
    gx = np.empty((n, ci, h, wd), gy.dtype)
    for b0, b1 in _chunks(n, wt.shape[0], ho * wo):
        dcols = np.matmul(wt, gy3[b0:b1])
        gx[b0:b1] = _col2im(dcols, ci, h, wd, kh, kw, sh, sw, ph, pw, ho, wo)
    return gx


def conv2d_backward_weight(gy, x, w_shape, stride, padding):
    """Gradient of ``conv2d_forward`` w.r.t. w: -> ``w_shape`` (Co, Ci, kh, kw)."""
    fn = "conv2d_backward_weight"
    gy, x = _c(gy), _c(x)
    same_float_dtype(fn, gy=gy, x=x)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding)
    n = x.shape[0]
    co, kh, kw = int(w_shape[0]), int(w_shape[2]), int(w_shape[3])
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    gy3 = gy.reshape(n, co, ho * wo)
    k = x.shape[1] * kh * kw
    gw = np.zeros((co, k), x.dtype)
    for b0, b1 in _chunks(n, k, ho * wo):
        cols = _im2col(x[b0:b1], kh, kw, sh, sw, ph, pw, ho, wo)
        per_image = np.matmul(gy3[b0:b1], cols.transpose(0, 2, 1))  # (B, Co, K)
        for g in per_image:  # images summed in order: deterministic
            gw += g
    return gw.reshape(tuple(int(s) for s in w_shape))


def _pointwise_w(fn, w, channels, axis):
    ndim(fn, "w", w, 4)
    if w.shape[2:] != (1, 1) or w.shape[axis] != channels:
        want = f"(Co, {channels}, 1, 1)" if axis == 1 else f"({channels}, Ci, 1, 1)"
        raise ValueError(f"{fn}: w must have shape {want}, got {w.shape}")


def pointwise_conv2d_forward(x, w):
    """1x1 convolution as BLAS GEMMs: y[n] = W (Co, Ci) @ x[n] (Ci, H*W)."""
    fn = "pointwise_conv2d_forward"
    x, w = _c(x), _c(w)
    same_float_dtype(fn, x=x, w=w)
    ndim(fn, "x", x, 4)
    n, ci, h, wd = x.shape
    _pointwise_w(fn, w, ci, 1)
    co = w.shape[0]
    return np.matmul(w.reshape(co, ci), x.reshape(n, ci, h * wd)).reshape(n, co, h, wd)


def pointwise_conv2d_backward_input(gy, w):
    """gx[n] = W.T @ gy[n]; the transpose is a BLAS flag, not a copy."""
    fn = "pointwise_conv2d_backward_input"
    gy, w = _c(gy), _c(w)
    same_float_dtype(fn, gy=gy, w=w)
    ndim(fn, "gy", gy, 4)
    n, co, h, wd = gy.shape
    _pointwise_w(fn, w, co, 0)
    ci = w.shape[1]
    return np.matmul(w.reshape(co, ci).T, gy.reshape(n, co, h * wd)).reshape(n, ci, h, wd)


def pointwise_conv2d_backward_weight(gy, x):
    """gw = sum_n gy[n] @ x[n].T, summed over n in order (deterministic)."""
    fn = "pointwise_conv2d_backward_weight"
    gy, x = _c(gy), _c(x)
    same_float_dtype(fn, gy=gy, x=x)
    ndim(fn, "gy", gy, 4)
    ndim(fn, "x", x, 4)
    n, co, h, wd = gy.shape
    if x.shape[0] != n or x.shape[2:] != gy.shape[2:]:
        raise ValueError(f"{fn}: x {x.shape} and gy {gy.shape} must share N, H, W")
    ci = x.shape[1]
    gy3, x3 = gy.reshape(n, co, h * wd), x.reshape(n, ci, h * wd)
    gw = np.zeros((co, ci), gy.dtype)
    for b in range(n):
        gw += gy3[b] @ x3[b].T
    return gw.reshape(co, ci, 1, 1)
