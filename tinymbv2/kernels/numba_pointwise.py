"""Numba kernels for pointwise (1x1) convolution: BLAS GEMMs run inside Numba's thread pool.

Same names, signatures and results as :mod:`tinymbv2.kernels.reference`;
``numba_cpu`` re-exports them. A 1x1 convolution needs no im2col: image n
viewed as (C, H*W) *is* the column matrix, so

    forward          y[n]  = W (Co, Ci) @ x[n] (Ci, P)          P = H*W
    backward-input   gx[n] = W.T        @ gy[n] (Co, P)
    backward-weight  gw    = sum_n gy[n] @ x[n].T

**One thread pool.** Every GEMM here is ``np.dot`` called from inside an
``@njit(parallel=True)`` loop over images: Numba's own thread pool is the
only parallelism, and the BLAS that Numba's ``np.dot`` calls (SciPy's, not
NumPy's) runs single-threaded, pinned by :mod:`.numba_pool`. One
``np.matmul`` per layer on NumPy's threaded BLAS, as this kernel set once
did, alternates two thread pools that both busy-wait after every call; on a
busy 2-core machine they spin against each other and a training step of
~0.4 s took 10-60 s (the numbers are in :mod:`.numba_pool`).

**Small planes** (at most 16x16 pixels) are kept channels-last
(:mod:`.numba_layout`), where the whole batch is one GEMM
(:mod:`.numba_pointwise_rows`); the per-image GEMMs here serve larger planes,
whose P = H*W columns are plenty for BLAS. (Before the layout existed, planes
under 64 pixels were copied side by side into shared GEMMs and back.)

**Backward-weight** is not BLAS's: its sum runs along the rows of both gy[n]
and x[n], the form of :mod:`.numba_gemm`'s register-blocked loop, which beats
this machine's BLAS there (1.2-1.8x, the figures are in that module).

**Determinism.** Forward and backward-input compute each image whole in one
task; backward-weight sums every entry whole in one thread (images in order).
How work is split depends only on the shapes, never on
``numba.get_num_threads()``, and single-threaded BLAS is itself deterministic,
so results are bit-identical across runs and thread counts.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import numba_pool  # noqa: F401  (pins Numba's BLAS to one thread, starts the pool passive)
from ._checks import ndim, same_float_dtype
from . import numba_pointwise_rows as by_rows
from .numba_bn import epilogue, epilogue_args
from .numba_gemm import sum_of_products
from .numba_layout import as_channels_last, channels_last_plane, empty_channels_last, rows

_JIT = dict(cache=True, fastmath=False)
_EPILOGUE_BLOCK_BYTES = 256 * 1024  # output block that gets its inference epilogue in L2


# ----------------------------------------------------------------- jitted cores
@njit(**_JIT)
def _columns(dst, src, p0):
    """dst (R, w) = src (R, P)[:, p0:p0 + w]: a block of columns, made contiguous."""
    for r in range(dst.shape[0]):
        d, s = dst[r], src[r, p0:p0 + dst.shape[1]]
        for q in range(dst.shape[1]):
            d[q] = s[q]


@njit(**_JIT)
def _matmul_blocked_epilogue(a, x2, y2, ep, xbuf, ybuf, cols):
    """y2 = epilogue(a @ x2) for one image, ``cols`` output columns at a time: each block
    is multiplied into ``ybuf``, gets the epilogue there while it is in L2, and is then
    copied out once (instead of writing y2 and reading it back for the epilogue)."""
    k, p = x2.shape
    m = a.shape[0]
    for p0 in range(0, p, cols):
        w = min(cols, p - p0)
        xb = xbuf[:k * w].reshape(k, w)
        yb = ybuf[:m * w].reshape(m, w)
        _columns(xb, x2, p0)
        np.dot(a, xb, yb)
        epilogue(yb, ep)
        for r in range(m):
            d, s = y2[r, p0:p0 + w], yb[r]
            for q in range(w):
                d[q] = s[q]


@njit(parallel=True, **_JIT)
def _matmul_images(a, x3, y3, ep):
    """y3 (N, M, P): y3[n] = a (M, K) @ x3[n] (K, P), one image per task, each image then
    through the epilogue ``ep`` (see ``numba_bn.epilogue``)."""
    n, k, p = x3.shape
    m = a.shape[0]
    # An epilogue on an image bigger than L2 is applied block by block (see above).
    blocked = ep[3][0] and m * p * x3.itemsize > _EPILOGUE_BLOCK_BYTES
    cols = max(256, _EPILOGUE_BLOCK_BYTES // (m * x3.itemsize)) if blocked else 0
    xblk = np.empty((n, k * cols), x3.dtype)
    yblk = np.empty((n, m * cols), x3.dtype)
    for b in prange(n):
        if blocked:
            _matmul_blocked_epilogue(a, x3[b], y3[b], ep, xblk[b], yblk[b], cols)
        else:
            np.dot(a, x3[b], y3[b])
            epilogue(y3[b], ep)
    return y3


# ------------------------------------------------------------- public wrappers
def _c(a):
    return np.ascontiguousarray(a)


def _pointwise_w(fn, w, channels, axis):
    ndim(fn, "w", w, 4)
    if w.shape[2:] != (1, 1) or w.shape[axis] != channels:
        want = f"(Co, {channels}, 1, 1)" if axis == 1 else f"({channels}, Ci, 1, 1)"
        raise ValueError(f"{fn}: w must have shape {want}, got {w.shape}")


def pointwise_conv2d_forward(x, w, bn_eval=None):
    """1x1 convolution: y[n] = W (Co, Ci) @ x[n] (Ci, H*W). x: (N, Ci, H, W) -> (N, Co, H, W).
    ``bn_eval``: each image's output then through BatchNorm-eval (+ReLU6), see the interface."""
    fn = "pointwise_conv2d_forward"
    x, w = np.asarray(x), _c(w)
    same_float_dtype(fn, x=x, w=w)
    ndim(fn, "x", x, 4)
    n, ci, h, wd = x.shape
    _pointwise_w(fn, w, ci, 1)
    co = w.shape[0]
    ep = epilogue_args(fn, bn_eval, co, x.dtype)
    if channels_last_plane(h, wd):  # see numba_layout
        x, y = as_channels_last(x), empty_channels_last((n, co, h, wd), x.dtype)
        if y.size:
            by_rows.forward(rows(x), w.reshape(co, ci), rows(y), ep)
        return y
    x = _c(x)
    y = np.empty((n, co, h, wd), x.dtype)  # NumPy's allocator: see numba_cpu
    _matmul_images(w.reshape(co, ci), x.reshape(n, ci, h * wd), y.reshape(n, co, h * wd), ep)
    return y


def pointwise_conv2d_backward_input(gy, w):
    """gx[n] = W.T @ gy[n]; the transpose is a BLAS flag, not a copy. -> (N, Ci, H, W)."""
    fn = "pointwise_conv2d_backward_input"
    gy, w = np.asarray(gy), _c(w)
    same_float_dtype(fn, gy=gy, w=w)
    ndim(fn, "gy", gy, 4)
    n, co, h, wd = gy.shape
    _pointwise_w(fn, w, co, 0)
    ci = w.shape[1]
    if channels_last_plane(h, wd):  # see numba_layout
        gy, gx = as_channels_last(gy), empty_channels_last((n, ci, h, wd), gy.dtype)
        if gx.size:
            by_rows.backward_input(rows(gy), w.reshape(co, ci), rows(gx),
                                   epilogue_args(fn, None, ci, gy.dtype))
        return gx
    gy = _c(gy)
    gx = np.empty((n, ci, h, wd), gy.dtype)  # NumPy's allocator: see numba_cpu
    _matmul_images(w.reshape(co, ci).T, gy.reshape(n, co, h * wd), gx.reshape(n, ci, h * wd),
                   epilogue_args(fn, None, ci, gy.dtype))
    return gx


def pointwise_conv2d_backward_weight(gy, x):
    """gw = sum_n gy[n] @ x[n].T, summed in a fixed order (deterministic). -> (Co, Ci, 1, 1)."""
    fn = "pointwise_conv2d_backward_weight"
    gy, x = np.asarray(gy), np.asarray(x)
    same_float_dtype(fn, gy=gy, x=x)
    ndim(fn, "gy", gy, 4)
    ndim(fn, "x", x, 4)
    n, co, h, wd = gy.shape
    if x.shape[0] != n or x.shape[2:] != gy.shape[2:]:
        raise ValueError(f"{fn}: x {x.shape} and gy {gy.shape} must share N, H, W")
    ci, p = x.shape[1], h * wd
    if n == 0:
        return np.zeros((co, ci, 1, 1), gy.dtype)
    if channels_last_plane(h, wd):  # see numba_layout
        gw = by_rows.backward_weight(rows(as_channels_last(gy)), rows(as_channels_last(x)))
        return gw.reshape(co, ci, 1, 1)
    gy, x = _c(gy), _c(x)
    return sum_of_products(gy.reshape(n, co, p), x.reshape(n, ci, p)).reshape(co, ci, 1, 1)
