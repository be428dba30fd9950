"""Inference of a dense convolution straight from bands of input rows: no column matrix.

``conv2d_bn_eval`` on output planes of up to ``EVAL_PIXELS_UP_TO`` pixels (MobileNetV2's
stem at 224 px) writes channels-last pixels, each pixel's Co outputs one row of

    y[b] (P, Co) = A (P, K) @ W.T (K, Co),   K = Ci * kh * kw,   A[p] = the K inputs pixel p reads

then its BatchNorm (and ReLU6) in the register blocks of ``..tile``. An im2col builds A: a
copy of every input value ``kh * kw`` times, at a stride, into a matrix nine times the image
(10.8 MB for the stem at batch 8). Here no A is built. The input rows a band of output
rows reads are copied once into a scratch of the worker's, padded with zeros
(``Ci x rows_in x Wp``, ``Wp = (Wo - 1) * sw + kw``), and the register block reads each
pixel's K terms from there at fixed offsets:

    A[ox, (c, i, j)] = band[c, r * sh + i, ox * sw + j]      output row r of the band
                     = band_flat[(r * sh) * Wp + ox * sw + offsets[(c, i, j)]]
    offsets[(c, i, j)] = (c * rows_in + i) * Wp + j

(``tile.gathered_product``). The terms are the im2col's, in its order (c, i, j), summed by
the same block: the bits of ``cols.T @ W.T`` with the epilogue.

Work: one task per (image, band of ``BAND_ROWS`` output rows), shared out to the threads
in turn, each in a scratch slice of its own allocated before the loop (``..chunks``'s rule).
A function of the shapes only: results do not depend on the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from ..tile import gathered_product

_JIT = dict(cache=CACHE, fastmath=False)
BAND_ROWS = 8
"""Output rows per task: the stem's band of input rows (3 x 17 x 225 float32, 46 KB) stays
in L1/L2 while its eight rows of pixels are computed; at 224 px, 14 tasks an image."""


def band_rows(ho: int) -> int:
    """Output rows per task for an output plane of ``ho`` rows.

    Args:
        ho: The output plane's rows.

    Returns:
        ``BAND_ROWS``, or ``ho`` if fewer.
    """
    return max(1, min(BAND_ROWS, ho))


@njit(**_JIT)
def fill_band(band, x, top, rows_in, wp, pw):
    """band ``(Ci * rows_in * Wp,)`` = input rows ``top .. top + rows_in`` of image x (Ci, H, W),
    each shifted right by pw and padded with zeros (rows outside the image: all zeros).

    Args:
        band: The scratch, written.
        x: One image (Ci, H, W).
        top: The image row the band's row 0 is (negative: padding above).
        rows_in: Rows per channel in the band.
        wp: The band's row width, ``(Wo - 1) * sw + kw``.
        pw: Zero columns left of the image.
    """
    ci, h, wd = x.shape
    width = max(0, min(wd, wp - pw))
    for c in range(ci):
        for i in range(rows_in):
            row = band[(c * rows_in + i) * wp:(c * rows_in + i + 1) * wp]
            iy = top + i
            if 0 <= iy < h:
                row[:pw] = 0
                row[pw:pw + width] = x[c, iy, :width]
                row[pw + width:] = 0
            else:
                row[:] = 0


@njit(**_JIT)
def band_offsets(ci, kh, kw, rows_in, wp):
    """Each term's offset in a band from its pixel's first, in the order of W's columns:
    ``offsets[(c, i, j)] = (c * rows_in + i) * wp + j``.

    Args:
        ci: Input channels.
        kh: Filter rows.
        kw: Filter columns.
        rows_in: Rows per channel in the band.
        wp: The band's row width.

    Returns:
        ``(Ci * kh * kw,)``, int64.
    """
    offsets = np.empty(ci * kh * kw, np.int64)
    for c in range(ci):
        for i in range(kh):
            for j in range(kw):
                offsets[(c * kh + i) * kw + j] = (c * rows_in + i) * wp + j
    return offsets


@njit(parallel=True, **_JIT)
def convolve_bn(x, wt, kh, kw, sh, sw, ph, pw, ho, wo, y3, table, relu6, rows, threads):
    """``y3[b] = BN(A @ W.T)`` for every image, A's terms read from padded bands of x.

    Args:
        x: The input (N, Ci, H, W), C-contiguous.
        wt: W.T ``(Ci * kh * kw, Co)``, contiguous: the weight (Co, Ci, kh, kw) reshaped and
            transposed.
        kh: The filter's rows.
        kw: Its columns.
        sh: The vertical stride.
        sw: The horizontal stride.
        ph: Zero rows above (and below) the image.
        pw: Zero columns left (and right) of it.
        ho: Output rows.
        wo: Output columns.
        y3: The output ``(N, Ho * Wo, Co)``, contiguous rows: channels-last pixels.
        table: (3, Co): each channel's mean, scale and bias (``batchnorm.epilogue_table``).
        relu6: Clamp to [0, 6].
        rows: Output rows per task (``band_rows``).
        threads: Numba's thread count: the number of scratch slices.

    Returns:
        y3.
    """
    n, ci = x.shape[0], x.shape[1]
    wp, rows_in = (wo - 1) * sw + kw, (rows - 1) * sh + kh
    offsets = band_offsets(ci, kh, kw, rows_in, wp)
    bands = (ho + rows - 1) // rows
    ntask = n * bands
    workers = max(1, min(threads, ntask))
    scratch = np.empty((workers, ci * rows_in * wp), x.dtype)
    for k in prange(workers):
        band = scratch[k]
        for t in range(k, ntask, workers):
            b, r0 = t // bands, (t % bands) * rows
            fill_band(band, x[b], r0 * sh - ph, rows_in, wp, pw)
            for r in range(min(rows, ho - r0)):
                at = (r0 + r) * wo
                gathered_product(band, r * sh * wp, sw, offsets, wt, y3[b, at:at + wo], table, relu6)
    return y3
