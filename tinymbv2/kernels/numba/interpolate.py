r"""Bilinear and nearest resizing on Numba's pool, one axis at a time (the numba set's
``interpolate_*``).

``ReferenceKernels.interpolate_forward`` writes the resize as two matrix products,
$y = A_h\,x\,A_w^T$ per plane. Each row of $A_h$ and $A_w$ holds at most two weights that
are not zero, so most of those products' multiplications are by zero: upsampling
(4, 11, 32, 32) logits to 256 x 256 multiplies 10 times more than the 4 taps per output.
Here each plane is resized by its taps (``interpolation_taps``: two source rows ``i0``,
``i1`` and their weights ``l0``, ``l1`` per output row, the same for columns), along the
width first, then along the height:

* forward: $t[r, o] = l^w_0[o]\, x[r, i^w_0[o]] + l^w_1[o]\, x[r, i^w_1[o]]$ for each
  input row r (H rows of $W_o$ gathers), then output row $o$ of the plane is
  $l^h_0[o]\, t[i^h_0[o]] + l^h_1[o]\, t[i^h_1[o]]$, two whole rows scaled and added
  (a loop LLVM vectorises), as PyTorch's bilinear kernel computes it;
* backward, the same steps transposed: each gradient row scaled into the two rows of
  $g_t$ it came from, then each $g_t$ value sent back to its two input columns.

Each plane is one task of a ``prange`` loop with its own scratch row block, so the
result is the same on every run and at any number of threads (figures: docs/kernels.md,
"Resizing"). Where a value is infinite or NaN only the outputs that read it see it, as in
PyTorch (the matrix products spread it along a whole row, through $0 \cdot \infty$).

**Small planes, channels-last.** An output plane the numba set keeps channels-last
(``.layout``: ASPP's image-pooling branch, 1 x 1 to 16 x 16) is resized pixel by pixel
instead, a pixel's C channels one vector (``_resize_pixels``, ``_resize_pixels_backward``):
the same taps, weights and order of operations per value, so the same bits as the planes'
kernels, and the output comes channels-last like its neighbours', which a concatenation
with them then copies as whole runs of channels. Its tasks are (image, row) pairs: each
writes only its own row.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import pool  # noqa: F401  (the one-pool set-up)
from ..checks import interpolate_args
from ..reference import interpolation_taps
from .cache import CACHE
from .layout import as_nchw, channels_last_plane, empty_channels_last, nhwc

_JIT = dict(cache=CACHE, fastmath=False)


@njit(parallel=True, **_JIT)
def _resize_planes(x, rows, cols, rw, cw, two, tmp, y):
    """``y[p]`` = plane ``x[p]`` resized: along the width into ``tmp[p]`` (H, Wo), then along
    the height; ``rows``/``cols`` (2, n_out) the source indices, ``rw``/``cw`` their weights;
    ``two``: bilinear (nearest copies its one tap, so an infinite value stays infinite)."""
    h, wo = x.shape[1], y.shape[2]
    for p in prange(x.shape[0]):
        t = tmp[p]
        for r in range(h):
            src, dst = x[p, r], t[r]
            if two:
                for o in range(wo):
                    dst[o] = cw[0, o] * src[cols[0, o]] + cw[1, o] * src[cols[1, o]]
            else:
                for o in range(wo):
                    dst[o] = src[cols[0, o]]
        for o in range(y.shape[1]):
            a, b = t[rows[0, o]], t[rows[1, o]]
            wa, wb, dst = rw[0, o], rw[1, o], y[p, o]
            if two:
                for q in range(wo):
                    dst[q] = wa * a[q] + wb * b[q]
            else:
                dst[:] = a


@njit(parallel=True, **_JIT)
def _resize_planes_backward(gy, rows, cols, rw, cw, tmp, gx):
    """The transpose of ``_resize_planes``: ``gx[p]`` from ``gy[p]`` (``tmp[p]``: dL/dt)."""
    h, wo = gx.shape[1], gy.shape[2]
    for p in prange(gy.shape[0]):
        t = tmp[p]
        t[:] = 0.0
        for o in range(gy.shape[1]):
            g, a, b = gy[p, o], t[rows[0, o]], t[rows[1, o]]
            wa, wb = rw[0, o], rw[1, o]
            for q in range(wo):
                a[q] += wa * g[q]
            for q in range(wo):
                b[q] += wb * g[q]
        out = gx[p]
        out[:] = 0.0
        for r in range(h):
            src, dst = t[r], out[r]
            for o in range(wo):
                dst[cols[0, o]] += cw[0, o] * src[o]
                dst[cols[1, o]] += cw[1, o] * src[o]
    return gx


@njit(parallel=True, **_JIT)
def _resize_pixels(x, rows, cols, rw, cw, two, tmp, y):
    """``_resize_planes`` on (N, H, W, C) memory: ``tmp`` (N, H, Wo, C) along the width, then
    y (N, Ho, Wo, C) along the height, each value as there."""
    n, h, wo, ho = x.shape[0], x.shape[1], y.shape[2], y.shape[1]
    for task in prange(n * h):
        b, r = task // h, task % h
        for o in range(wo):
            a, c, dst = x[b, r, cols[0, o]], x[b, r, cols[1, o]], tmp[b, r, o]
            wa, wc = cw[0, o], cw[1, o]
            if two:
                for ch in range(dst.shape[0]):
                    dst[ch] = wa * a[ch] + wc * c[ch]
            else:
                dst[:] = a
    for task in prange(n * ho):
        b, o = task // ho, task % ho
        a, c, dst = tmp[b, rows[0, o]], tmp[b, rows[1, o]], y[b, o]
        wa, wc = rw[0, o], rw[1, o]
        if two:
            for q in range(wo):
                for ch in range(dst.shape[1]):
                    dst[q, ch] = wa * a[q, ch] + wc * c[q, ch]
        else:
            dst[:] = a


@njit(parallel=True, **_JIT)
def _resize_pixels_backward(gy, rows, cols, rw, cw, tmp, gx):
    """``_resize_planes_backward`` on (N, Ho, Wo, C) memory, each value's terms added in the
    same order: row r of ``tmp`` (dL/dt) takes the output rows that read it in output order."""
    n, h, ho, wo = gx.shape[0], gx.shape[1], gy.shape[1], gy.shape[2]
    for task in prange(n * h):
        b, r = task // h, task % h
        t = tmp[b, r]
        t[:] = 0.0
        for o in range(ho):
            if rows[0, o] == r:
                g, wa = gy[b, o], rw[0, o]
                for q in range(wo):
                    for ch in range(t.shape[1]):
                        t[q, ch] += wa * g[q, ch]
            if rows[1, o] == r:
                g, wb = gy[b, o], rw[1, o]
                for q in range(wo):
                    for ch in range(t.shape[1]):
                        t[q, ch] += wb * g[q, ch]
        out = gx[b, r]
        out[:] = 0.0
        for o in range(wo):
            a, c, src = out[cols[0, o]], out[cols[1, o]], t[o]
            wa, wc = cw[0, o], cw[1, o]
            for ch in range(src.shape[0]):
                a[ch] += wa * src[ch]
            for ch in range(src.shape[0]):
                c[ch] += wc * src[ch]
    return gx


def _taps(in_hw, size, mode, align_corners, scales, dtype):
    """((2, Ho) rows, (2, Wo) columns, their (2, Ho) and (2, Wo) weights) of the resize."""
    out = []
    for axis in (0, 1):
        i0, i1, l0, l1 = interpolation_taps(np, int(in_hw[axis]), int(size[axis]), mode,
                                            align_corners, scales[axis] if scales else None, dtype)
        out.append((np.ascontiguousarray(np.stack([i0, i1])),
                    np.ascontiguousarray(np.stack([l0, l1]), dtype=dtype)))
    (rows, rw), (cols, cw) = out
    return rows, cols, rw, cw


def interpolate_forward(x, size, mode, align_corners, scales):
    """Resize the planes of x (N, C, H, W) to ``size``; see ``ReferenceKernels.interpolate_forward``.

    Args:
        x: The input (N, C, H, W).
        size: (Ho, Wo).
        mode: ``"bilinear"`` or ``"nearest"``.
        align_corners: Bilinear's source formula.
        scales: The caller's (scale_h, scale_w), or None.

    Returns:
        The output y (N, C, Ho, Wo), channels-last on a plane the numba set keeps so, else
        C-contiguous.
    """
    x = np.asarray(x)
    dtype = interpolate_args("interpolate_forward", x, size)
    n, c, h, w = x.shape
    ho, wo = (int(s) for s in size)
    taps = _taps((h, w), (ho, wo), mode, align_corners, scales, dtype)
    if channels_last_plane(ho, wo):
        y = empty_channels_last((n, c, ho, wo), dtype)
        _resize_pixels(nhwc(x), *taps, mode != "nearest", np.empty((n, h, wo, c), dtype),
                       nhwc(y))
        return y
    planes = np.ascontiguousarray(x).reshape(n * c, h, w)
    tmp = np.empty((n * c, h, wo), dtype)
    y = np.empty((n * c, ho, wo), dtype)
    _resize_planes(planes, *taps, mode != "nearest", tmp, y)
    return y.reshape(n, c, ho, wo)


def interpolate_backward(gy, x_shape, mode, align_corners, scales):
    """The gradient of ``interpolate_forward`` with respect to x: $A_h^T g_y A_w$ per plane,
    by the taps.

    Args:
        gy: The output's gradient (N, C, Ho, Wo).
        x_shape: The input's shape (N, C, H, W).
        mode: As in the forward.
        align_corners: As in the forward.
        scales: As in the forward.

    Returns:
        The input gradient gx (N, C, H, W), channels-last when both planes are ones the numba
        set keeps so, else C-contiguous.
    """
    gy = np.asarray(gy)
    dtype = interpolate_args("interpolate_backward", gy, gy.shape[2:], x_shape)
    n, c, h, w = x_shape
    ho, wo = gy.shape[2:]
    taps = _taps((h, w), (ho, wo), mode, align_corners, scales, dtype)
    if channels_last_plane(ho, wo):
        gx = empty_channels_last((n, c, h, w), dtype)
        _resize_pixels_backward(nhwc(gy), *taps, np.empty((n, h, wo, c), dtype), nhwc(gx))
        return gx if channels_last_plane(h, w) else as_nchw(gx)
    planes = np.ascontiguousarray(gy).reshape(n * c, ho, wo)
    tmp = np.empty((n * c, h, wo), dtype)
    gx = np.empty((n * c, h, w), dtype)
    _resize_planes_backward(planes, *taps, tmp, gx)
    return gx.reshape(n, c, h, w)
