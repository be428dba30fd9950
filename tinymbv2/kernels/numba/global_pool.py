r"""Global average pooling of a channels-last map, with NumPy's bits: MobileNetV2's head.

$$\text{out}_{nc} = \Big(\textstyle\sum_{p=0}^{HW-1} x_{n,p,c}\Big) \,/\, HW$$

On a channels-last (N, C, H, W) array NumPy's ``x.mean(axis=(2, 3))`` adds the pixels'
rows of C values one after another, in memory order, starting from the first pixel's
row, then divides by HW; this does the same, row after row into C running sums, so the
result is NumPy's to the bit (tested), in one pass that the compiled loop vectorises along
the channels. NumPy's own reduction over the slow axes of a channels-last map takes several
times as long (its iterator steps pixel by pixel). On an NCHW-contiguous array NumPy sums
each plane pairwise, a different order: that layout goes to NumPy.

One image a task from two images on; one image in the calling thread (waking the pool
costs more than the pass). Each output is one sum in a fixed order: the same bits for any
thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (the one-pool set-up)
from .layout import is_channels_last

_JIT = dict(cache=CACHE, fastmath=False, boundscheck=False)


@njit(inline="always", **_JIT)
def _image(x3, b, out):
    """out[b] = the mean of image b's rows, x3 (N, P, C)."""
    p, c = x3.shape[1], x3.shape[2]
    acc = out[b]
    acc[:] = x3[b, 0]
    for q in range(1, p):
        row = x3[b, q]
        for k in range(c):
            acc[k] += row[k]
    for k in range(c):
        acc[k] /= p


@njit(parallel=True, **_JIT)
def _images_parallel(x3, out):
    for b in prange(x3.shape[0]):
        _image(x3, b, out)
    return out


@njit(**_JIT)
def _images_serial(x3, out):
    for b in range(x3.shape[0]):
        _image(x3, b, out)
    return out


def global_average_pool(x):
    """The mean over each channel's plane: (N, C, H, W) -> (N, C).

    The contract is ``ReferenceKernels.global_average_pool``'s (``x.mean(axis=(2, 3))``),
    and so are the bits.

    Args:
        x: The map (N, C, H, W), an array.

    Returns:
        (N, C).
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"global_average_pool: expected a map (N, C, H, W), got {x.shape}")
    n, c, h, w = x.shape
    # channels-last memory only (a C-contiguous map, C = 1 included, NumPy sums pairwise)
    ours = is_channels_last(x) and (h * w == 1 or not x.flags.c_contiguous)
    if not ours or x.dtype not in (np.float32, np.float64) or x.size == 0:
        return x.mean(axis=(2, 3))
    out = np.empty((n, c), x.dtype)
    x3 = x.transpose(0, 2, 3, 1).reshape(n, h * w, c)
    return (_images_parallel if n > 1 else _images_serial)(x3, out)
