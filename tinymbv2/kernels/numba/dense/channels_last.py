r"""Dense convolution at stride 1 on channels-last planes: one im2col for the batch, then products.

DeepLabHead's 3x3 convolution (256 to 256 channels on a 16 x 16 map) is a dense filter with
many channels on a plane the numba set keeps channels-last (``..layout``). There the whole
batch is one matrix product. With $P = N H_o W_o$ output pixels, $K = k_h k_w C_i$ and the
column matrix ``cols`` (P, K) whose row p holds the K input values that output pixel p
reads, taps outer and channels inner (zeros where a tap reads the padding):

    forward          y (P, Co)   = cols (P, K) @ W_p (K, Co)
    weight gradient  gw (Co, K)  = gy.T (Co, P) @ cols (P, K)
    input gradient   at stride 1 the transposed convolution is a convolution of gy with
                     the kernel flipped and its channels swapped,
                     ``W'[ci, co, i, j] = W[co, ci, kh-1-i, kw-1-j]``, padding k - 1 - p:
                     the forward's code on gy

with ``W_p`` the weight packed as (kh, kw, Ci, Co) (``..tap_regions.pack_taps``, which
also flips). Channels-last, a pixel's channels are one contiguous run, so building a row of
``cols`` copies ``k_h k_w`` runs of $C_i$ values, and ``y`` and ``gy`` are already the
(P, Co) matrices: no layout pass around the products, and none of ``dense``'s
image-by-image column matrices scattered back (``col2im``) or weight gradients summed.
The forward's products are BLAS's, on runs of ``ROWS`` rows of ``cols`` (contiguous
operands, which it runs at its best); the weight gradient's are ``.tile``'s register
blocks, one per tap and run of input channels, reading gy transposed as it lies.

**Where it runs** (``fits``): stride 1, no dilation (dilated ones go to ``..tap_regions``),
a channels-last output plane, and many channels on both sides (``MIN_CHANNELS``): the
product then dominates the copies. A stem of 1-3 input channels never comes here; it keeps
``dense``'s image-by-image kernels, which suit its large planes and thin K.

**Scheduling and determinism.** The forward's tasks are runs of ``ROWS`` rows of y (one
BLAS call each, BLAS pinned to one thread: ``..pool``), the weight gradient's a tap and a
run of ``tile_columns`` input channels: fixed by the shapes. Each value is computed whole
by one task, its sum in an order fixed by the call's shapes (``.tile``: over P in order,
chunks added onto the previous ones), so neither the threads nor their number change a
bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from ..layout import as_channels_last, channels_last_plane, empty_channels_last, rows
from ..tap_regions import pack_taps, unpack_taps
from ..tile import product, strip_width
from .. import pool  # noqa: F401  (the one-pool set-up, see there)

_JIT = dict(cache=CACHE, fastmath=False, boundscheck=False)
MIN_CHANNELS = 64
"""Input and output channels at least this many: below, the copies around the product
weigh more and ``dense``'s kernels stay."""
ROWS = 256
"""Rows of y per forward task (one BLAS call): long enough for BLAS's blocking, and a
16 x 16 plane's image each, so a batch of 4 gives each of 2 threads 2 tasks."""


def fits(x_shape, w_shape, stride, padding, dilation_one: bool) -> bool:
    """Does this module compute the convolution? See the module docstring.

    Args:
        x_shape: (N, Ci, H, W).
        w_shape: (Co, Ci, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw).
        dilation_one: The convolution is not dilated.

    Returns:
        Whether it does.
    """
    co, ci, kh, kw = (int(s) for s in w_shape)
    (sh, sw), (ph, pw) = stride, padding
    if not dilation_one or (sh, sw) != (1, 1) or kh * kw == 1:
        return False
    if not (0 <= ph <= kh - 1 and 0 <= pw <= kw - 1):  # the input gradient's padding >= 0
        return False
    ho, wo = int(x_shape[2]) + 2 * ph - kh + 1, int(x_shape[3]) + 2 * pw - kw + 1
    return (ho > 0 and wo > 0 and channels_last_plane(ho, wo) and int(x_shape[0]) > 0
            and ci >= MIN_CHANNELS and co >= MIN_CHANNELS)


@njit(parallel=True, **_JIT)
def _im2col(x4, kh, kw, ph, pw, ho, wo, cols):
    """``cols (N*Ho*Wo, kh*kw*C)``: row p the values output pixel p reads, taps outer.

    Args:
        x4: The input (N, H, W, C), C-contiguous.
        kh: Tap rows.
        kw: Tap columns.
        ph: Padding along rows.
        pw: Padding along columns.
        ho: Output height.
        wo: Output width.
        cols: The column matrix, written.
    """
    n, h, wd, c = x4.shape
    zero = cols.dtype.type(0)
    for task in prange(n * ho):
        b, oh = task // ho, task % ho
        for ow in range(wo):
            row = cols[task * wo + ow]
            for i in range(kh):
                ih = oh + i - ph
                for j in range(kw):
                    iw = ow + j - pw
                    at = (i * kw + j) * c
                    if 0 <= ih < h and 0 <= iw < wd:
                        src = x4[b, ih, iw]
                        for ch in range(c):
                            row[at + ch] = src[ch]
                    else:
                        for ch in range(c):
                            row[at + ch] = zero


@njit(parallel=True, **_JIT)
def _rows_product(cols, wp, y2):
    """``y2 (P, Co) = cols (P, K) @ wp (K, Co)``, one BLAS call per ``ROWS`` rows."""
    p = cols.shape[0]
    for t in prange((p + ROWS - 1) // ROWS):
        r0, r1 = t * ROWS, min(p, (t + 1) * ROWS)
        np.dot(cols[r0:r1], wp, y2[r0:r1])


@njit(parallel=True, **_JIT)
def _columns_product(gy2, cols, gwp, width):
    """``gwp[t] (Co, Ci) = gy2.T (Co, P) @ cols[:, t*Ci:(t+1)*Ci] (P, Ci)`` for every tap t,
    one task per tap and run of ``width`` input channels."""
    taps, ci = gwp.shape[0], gwp.shape[2]
    strips = (ci + width - 1) // width
    a = gy2.T
    for task in prange(taps * strips):
        t, s = task // strips, task % strips
        product(a, cols[:, t * ci:(t + 1) * ci], gwp[t], 0, gwp.shape[1], s * width,
                min(ci, (s + 1) * width), False)


def _columns(x, kh, kw, ph, pw, ho, wo):
    """x's column matrix ``(N*Ho*Wo, kh*kw*Ci)``, from x made channels-last."""
    n, c = x.shape[:2]
    x4 = as_channels_last(x).transpose(0, 2, 3, 1)  # (N, H, W, C), C-contiguous
    cols = np.empty((n * ho * wo, kh * kw * c), x.dtype)  # NumPy's allocator: see kernels.numba
    _im2col(x4, kh, kw, ph, pw, ho, wo, cols)
    return cols


def conv2d_forward(x, w, padding):
    """Dense convolution at stride 1 where ``fits``: the output channels-last.

    The caller (``dense.conv2d_forward``) has checked the arguments.

    Args:
        x: The input (N, Ci, H, W), either layout.
        w: The weight (Co, Ci, kh, kw), C-contiguous.
        padding: (ph, pw).

    Returns:
        y (N, Co, Ho, Wo), channels-last.
    """
    return _forward(x, w, padding, False)


def _forward(x, w, padding, flip):
    """The forward of x with w's taps (Co, Ci, kh, kw), or flipped and transposed (``flip``:
    then w is read as (Ci, Co, kh, kw), ``conv2d_backward_input``'s kernel)."""
    co, ci, kh, kw = w.shape
    if flip:
        co, ci = ci, co
    n, (ph, pw) = x.shape[0], padding
    ho, wo = x.shape[2] + 2 * ph - kh + 1, x.shape[3] + 2 * pw - kw + 1
    cols = _columns(x, kh, kw, ph, pw, ho, wo)
    wp = pack_taps(w, flip, np.ones(kh * kw, np.bool_), np.empty((kh * kw, ci, co), w.dtype))
    y = empty_channels_last((n, co, ho, wo), x.dtype)
    _rows_product(cols, wp.reshape(kh * kw * ci, co), rows(y))
    return y


def conv2d_backward_input(gy, w, x_shape, padding):
    """The input gradient where ``fits``: the forward of gy with W flipped and transposed.

    The caller (``dense.conv2d_backward_input``) has checked the arguments.

    Args:
        gy: $\\partial L / \\partial y$ (N, Co, Ho, Wo), either layout.
        w: The weight (Co, Ci, kh, kw).
        x_shape: (N, Ci, H, W).
        padding: (ph, pw), at most (kh - 1, kw - 1).

    Returns:
        gx of ``x_shape``, channels-last.
    """
    kh, kw = w.shape[2:]
    return _forward(gy, w, (kh - 1 - padding[0], kw - 1 - padding[1]), True)


def conv2d_backward_weight(gy, x, w_shape, padding):
    """The weight gradient where ``fits``: ``gy.T @ cols``, one product over the batch.

    The caller (``dense.conv2d_backward_weight``) has checked the arguments.

    Args:
        gy: $\\partial L / \\partial y$ (N, Co, Ho, Wo), either layout.
        x: The input (N, Ci, H, W), either layout.
        w_shape: (Co, Ci, kh, kw).
        padding: (ph, pw).

    Returns:
        gw of ``w_shape``.
    """
    co, ci, kh, kw = (int(s) for s in w_shape)
    ho, wo = gy.shape[2:]
    cols = _columns(x, kh, kw, padding[0], padding[1], ho, wo)
    gwp = np.empty((kh * kw, co, ci), x.dtype)
    _columns_product(rows(as_channels_last(gy)), cols, gwp, strip_width(x.dtype))
    return unpack_taps(gwp, np.empty((co, ci, kh, kw), x.dtype))
