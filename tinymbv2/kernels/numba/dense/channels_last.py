r"""The weight gradient of a dense stride-1 convolution on channels-last planes: one product.

A dense filter with many channels on a plane the numba set keeps channels-last
(``..layout``) has there a weight gradient that is one matrix product over the whole batch.
(DeepLabHead's 3x3 convolution, 256 to 256 channels on a 16 x 16 map, was the case this was
written for; ``.winograd`` now takes a 3x3 at padding 1, and this module every other
filter of the kind.) With $P = N H_o W_o$ output
pixels, $K = k_h k_w C_i$ and the column matrix ``cols`` (P, K) whose row p holds the K
input values that output pixel p reads, taps outer and channels inner (zeros where a tap
reads the padding),

    gw (Co, K) = gy.T (Co, P) @ cols (P, K),   tap t's block gw[:, t] (Co, Ci)

Channels-last, a pixel's channels are one contiguous run, so a row of ``cols`` is
``k_h k_w`` copied runs of $C_i$ values, and gy is already the (P, Co) matrix, read
transposed as it lies by ``.tile``'s register blocks (one task per tap and run of
``tile_columns`` input channels); ``..tap_regions.unpack_taps`` puts the taps back in
(Co, Ci, kh, kw). ``dense``'s own weight gradient builds a column matrix per image, runs a
BLAS product per image and adds the images' gradients afterwards; this is faster on these
shapes (figures: docs/kernels.md). The forward and the input gradient stay with ``dense``'s
image-by-image products, which measured as fast or faster there.

**Where it runs** (``fits``): stride 1, no dilation (dilated ones go to ``..tap_regions``),
a channels-last output plane, and many channels on both sides (``MIN_CHANNELS``): the
product then dominates the copies. A stem of 1-3 input channels never comes here.

**Determinism.** The tasks are fixed by the shapes; each value of gw is summed whole by one
register block over P in order (chunks added onto the previous ones give the bits of one
pass), so neither the threads nor their number change a bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from ..layout import as_channels_last, channels_last_plane, rows
from ..tap_regions import unpack_taps
from ..tile import product, strip_width
from .. import pool  # noqa: F401  (the one-pool set-up, see there)

_JIT = dict(cache=CACHE, fastmath=False, boundscheck=False)
MIN_CHANNELS = 64
"""Input and output channels at least this many: below, the copies around the product
weigh more and ``dense``'s kernels stay."""


def fits(x_shape, w_shape, stride, padding, dilation_one: bool) -> bool:
    """Does this module compute the convolution's weight gradient? See the module docstring.

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
