"""Numba kernels for pointwise (1x1) convolution on NCHW planes: matrix products per image.

Same names, signatures and results as ``tinymbv2.kernels.reference``;
``NumbaKernels`` takes them as its kernels. A 1x1
convolution needs no im2col: image n viewed as ``(C, H*W)`` *is* the column matrix, so

    forward          y[n]  = W (Co, Ci) @ x[n] (Ci, P)          P = H*W
    backward-input   gx[n] = W.T        @ gy[n] (Co, P)
    backward-weight  gw    = sum_n gy[n] @ x[n].T

Forward and backward-input run ``..tile``'s register blocks (through
``gemm.columns_nn``, in blocks of ``COLUMNS`` pixels; an inference epilogue is
applied to each block while it is in cache; a large output with none is streamed past
the caches, ``tile.STREAM_BYTES``), backward-weight ``..gemm``'s dot-product
loop (both operands read along the pixels). ``pointwise_conv2d_backward`` takes both
gradients in one pass over gy (``_backward_images``).

**One thread pool.** Everything runs in ``@njit(parallel=True)`` loops, one image
per task for forward and backward-input: Numba's own pool is the only parallelism
(``..pool`` explains why that matters on a busy machine with few cores).

**Small planes** (at most 16x16 pixels) are kept channels-last
(``..layout``), where the whole batch is one matrix product
(``.channels_last``); the per-image products here serve larger planes.

**Determinism.** Every output value is summed whole by one thread, in an order
fixed by the shapes, never by ``numba.get_num_threads()`` (the fused backward's
weight gradient: two fixed runs of images, added in order): results are bit-identical
across runs and thread counts.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from ...checks import ndim, pointwise_weight_args, same_float_dtype
from .. import pool  # noqa: F401  (starts Numba's pool passive)
from ..batchnorm import epilogue, epilogue_args, epilogue_table
from ..gemm import COLUMNS, add_products, columns_nn, sum_of_products
from ..layout import (aligned_empty, as_channels_last, channels_last_plane, empty_channels_last,
                      rows)
from ..tile import STREAM_BYTES, pack_strips
from . import channels_last as by_rows

_JIT = dict(cache=CACHE, fastmath=False)


# ----------------------------------------------------------------- jitted cores
@njit(parallel=True, **_JIT)
def _matmul_images(a, x3, y3, ep):
    """y3 (N, M, P): y3[n] = a (M, K) @ x3[n] (K, P), one image per task, in blocks of
    ``COLUMNS`` columns (``..gemm``); each block then through the epilogue ``ep`` (see
    ``batchnorm.epilogue``) while it is still in cache, or, with none and a large y3,
    streamed to memory."""
    n, k, p = x3.shape
    stream = not ep[3][0] and y3.size * y3.itemsize >= STREAM_BYTES
    for b in prange(n):
        for j0 in range(0, p, COLUMNS):
            j1 = min(p, j0 + COLUMNS)
            columns_nn(a, x3[b], y3[b], j0, j1, stream)
            epilogue(y3[b][:, j0:j1], ep)
    return y3


BACKWARD_PIXELS = 1024
"""Pixels per step of the fused backward: the step's columns of gy[n] (and of x[n]) stay in
L2 between the two products that read them."""


@njit(parallel=True, **_JIT)
def _backward_images(wt, gy3, x3, gx3, parts):
    """Both gradients in one pass over gy: gx3[n] = W.T @ gy3[n] (as ``_matmul_images``)
    and gw = sum_n gy3[n] @ x3[n].T, step by step along the pixels, each step's columns
    of gy3[n] read from memory once for both. The images are cut into ``parts`` fixed
    runs, each summed in order into a partial gw by one task; the partials are added in
    order (deterministic, whatever the thread count)."""
    n, co, p = gy3.shape
    sums = np.zeros((parts, co, x3.shape[1]), gy3.dtype)
    stream = gx3.size * gx3.itemsize >= STREAM_BYTES
    for part in prange(parts):
        for b in range(part * n // parts, (part + 1) * n // parts):
            for j0 in range(0, p, BACKWARD_PIXELS):
                j1 = min(p, j0 + BACKWARD_PIXELS)
                columns_nn(wt, gy3[b], gx3[b], j0, j1, stream)
                add_products(gy3[b], x3[b], sums[part], j0, j1)
    gw = sums[0].copy()
    for part in range(1, parts):
        gw += sums[part]
    return gw


# ------------------------------------------------------------- public wrappers
def _c(a):
    return np.ascontiguousarray(a)


def _pointwise_w(fn, w, channels, axis):
    ndim(fn, "w", w, 4)
    if w.shape[2:] != (1, 1) or w.shape[axis] != channels:
        want = f"(Co, {channels}, 1, 1)" if axis == 1 else f"({channels}, Ci, 1, 1)"
        raise ValueError(f"{fn}: w must have shape {want}, got {w.shape}")


def pointwise_conv2d_forward(x, w):
    """1x1 convolution: ``y[n] = W (Co, Ci) @ x[n] (Ci, H*W)``.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, Ci, H, W).
        w: The weight (Co, Ci, 1, 1).

    Returns:
        y (N, Co, H, W).
    """
    return _forward(x, w, None, "pointwise_conv2d_forward")


def pointwise_conv2d_bn_eval(x, w, bn):
    """``pointwise_conv2d_forward``, then each output block through BatchNorm-eval (and ReLU6).

    The BatchNorm runs while the block is in cache. The contract is ``ReferenceKernels``'
    kernel of the same name.

    Args:
        x: The input (N, Ci, H, W).
        w: The weight (Co, Ci, 1, 1).
        bn: ``(mean, var, weight, bias, eps, relu6)``, the BatchNorm in eval mode, as
            ``ReferenceKernels`` takes it.

    Returns:
        y (N, Co, H, W).
    """
    return _forward(x, w, bn, "pointwise_conv2d_bn_eval")


def _forward(x, w, bn_eval, fn):
    x, w = np.asarray(x), _c(w)
    same_float_dtype(fn, x=x, w=w)
    ndim(fn, "x", x, 4)
    n, ci, h, wd = x.shape
    _pointwise_w(fn, w, ci, 1)
    co = w.shape[0]
    ep = epilogue_args(fn, bn_eval, co, x.dtype)
    if channels_last_plane(h, wd):  # see ..layout
        x, y = as_channels_last(x), empty_channels_last((n, co, h, wd), x.dtype)
        if y.size:
            by_rows.forward(rows(x), w.reshape(co, ci), rows(y), ep)
        return y
    x = _c(x)
    y = aligned_empty((n, co, h, wd), x.dtype)  # NumPy's allocator (see kernels.numba), aligned
    _matmul_images(w.reshape(co, ci), x.reshape(n, ci, h * wd), y.reshape(n, co, h * wd), ep)
    return y


class PreparedPointwise:
    """``pointwise_conv2d_bn_eval(x, w, bn)`` as a function of x alone, for a model that does
    not change between calls (``tinymbv2.freeze``): on channels-last planes W.T is laid out
    and the BatchNorm tabulated once (``channels_last.forward_prepared``); on NCHW planes
    it calls the kernel. The kernel's bits either way.

    Args:
        w: The weight (Co, Ci, 1, 1).
        bn: ``(mean, var, weight, bias, eps, relu6)``, the BatchNorm in eval mode.

    Raises:
        ValueError: A weight or BatchNorm of another shape.
        TypeError: Arrays of different dtypes.
    """

    def __init__(self, w, bn):
        fn = "prepare_pointwise_conv2d_bn_eval"
        w = _c(w)
        same_float_dtype(fn, w=w)
        _pointwise_w(fn, w, w.shape[1] if w.ndim == 4 else -1, 1)
        co, ci = w.shape[:2]
        ep = epilogue_args(fn, bn, co, w.dtype)
        self.w, self.bn, self.ci = w, bn, ci
        self.wt = pack_strips(w.reshape(co, ci).T)
        self.table, self.relu6 = epilogue_table(ep, co, w.dtype), bool(ep[3][1])

    def __call__(self, x):
        """y (N, Co, H, W) for x (N, Ci, H, W).

        Args:
            x: The input, an array of the weight's dtype, in either layout.

        Returns:
            The output, in the layout ``pointwise_conv2d_bn_eval`` gives.
        """
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.ci or x.dtype != self.w.dtype or not (
                channels_last_plane(*x.shape[2:])):
            return pointwise_conv2d_bn_eval(x, self.w, self.bn)  # checks, or NCHW planes
        n, _, h, wd = x.shape
        y = empty_channels_last((n, self.table.shape[1], h, wd), x.dtype)
        if y.size:
            by_rows.forward_prepared(rows(as_channels_last(x)), self.wt, rows(y), self.table,
                                     self.relu6)
        return y


def pointwise_conv2d_backward_input(gy, w):
    r"""``gx[n] = W.T @ gy[n]``.

    W.T is a view (its values are read once per block). The contract is
    ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, Co, H, W).
        w: The weight (Co, Ci, 1, 1).

    Returns:
        gx (N, Ci, H, W).
    """
    fn = "pointwise_conv2d_backward_input"
    gy, w = np.asarray(gy), _c(w)
    same_float_dtype(fn, gy=gy, w=w)
    ndim(fn, "gy", gy, 4)
    n, co, h, wd = gy.shape
    _pointwise_w(fn, w, co, 0)
    ci = w.shape[1]
    if channels_last_plane(h, wd):  # see ..layout
        gy, gx = as_channels_last(gy), empty_channels_last((n, ci, h, wd), gy.dtype)
        if gx.size:
            by_rows.backward_input(rows(gy), w.reshape(co, ci), rows(gx),
                                   epilogue_args(fn, None, ci, gy.dtype))
        return gx
    gy = _c(gy)
    gx = aligned_empty((n, ci, h, wd), gy.dtype)  # NumPy's allocator (see kernels.numba), aligned
    _matmul_images(w.reshape(co, ci).T, gy.reshape(n, co, h * wd), gx.reshape(n, ci, h * wd),
                   epilogue_args(fn, None, ci, gy.dtype))
    return gx


def pointwise_conv2d_backward(gy, x, w):
    r"""Both gradients at once.

    As ``pointwise_conv2d_backward_input`` and ``pointwise_conv2d_backward_weight`` give
    them. On NCHW planes one pass over gy serves both (``_backward_images``); channels-last,
    the two kernels.

    Args:
        gy: $\partial L / \partial y$ (N, Co, H, W).
        x: The input (N, Ci, H, W).
        w: The weight (Co, Ci, 1, 1).

    Returns:
        ``(gx, gw)``.
    """
    fn = "pointwise_conv2d_backward"
    gy, x, w = np.asarray(gy), np.asarray(x), _c(w)
    same_float_dtype(fn, gy=gy, x=x, w=w)
    ndim(fn, "gy", gy, 4)
    ndim(fn, "x", x, 4)
    n, co, h, wd = gy.shape
    _pointwise_w(fn, w, co, 0)
    ci = w.shape[1]
    if x.shape != (n, ci, h, wd):
        raise ValueError(f"{fn}: x must have shape {(n, ci, h, wd)} to match gy {gy.shape} "
                         f"and w {w.shape}, got {x.shape}")
    if channels_last_plane(h, wd) or n == 0:
        return pointwise_conv2d_backward_input(gy, w), pointwise_conv2d_backward_weight(gy, x)
    gy, x = _c(gy), _c(x)
    gx = aligned_empty((n, ci, h, wd), gy.dtype)  # NumPy's allocator (see kernels.numba), aligned
    gw = _backward_images(w.reshape(co, ci).T, gy.reshape(n, co, h * wd), x.reshape(n, ci, h * wd),
                          gx.reshape(n, ci, h * wd), 2 if n > 1 else 1)
    return gx, gw.reshape(co, ci, 1, 1)


def pointwise_conv2d_backward_weight(gy, x):
    r"""``gw = sum_n gy[n] @ x[n].T``, summed in a fixed order (deterministic).

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, Co, H, W).
        x: The input (N, Ci, H, W).

    Returns:
        gw (Co, Ci, 1, 1).
    """
    fn = "pointwise_conv2d_backward_weight"
    gy, x = np.asarray(gy), np.asarray(x)
    same_float_dtype(fn, gy=gy, x=x)
    pointwise_weight_args(fn, gy, x)
    n, co, h, wd = gy.shape
    ci, p = x.shape[1], h * wd
    if n == 0:
        return np.zeros((co, ci, 1, 1), gy.dtype)
    if channels_last_plane(h, wd):  # see ..layout
        gw = by_rows.backward_weight(rows(as_channels_last(gy)), rows(as_channels_last(x)))
        return gw.reshape(co, ci, 1, 1)
    gy, x = _c(gy), _c(x)
    return sum_of_products(gy.reshape(n, co, p), x.reshape(n, ci, p)).reshape(co, ci, 1, 1)
