r"""The last uint8 feature map pooled in one pass: DequantizeLinear and GlobalAveragePool.

The contract is ``int8_reference.dequantize_global_average_pool``'s (the arguments checked
there too), and the results are its bits: per (image, channel) the integer sum of the plane,
exact, then the same float64 operations in the same order,

$$\text{out}_{nc} = \text{float32}\Big(\text{float64}\big(\textstyle\sum q - HW z\big)
\cdot s \,/\, HW\Big).$$

One read of the uint8 map, in its memory order, and no float32 copy of it:

* NCHW memory (what ``qlinear_conv2d`` returns): each (n, c) plane is a contiguous run of
  $HW$ bytes, summed in int32 lanes (chunks of at most $2^{23}$ bytes, where 255 per byte
  cannot overflow int32) and added into an int64;
* channels-last memory (an NCHW view of NHWC): each image's pixels in order, every pixel's
  C bytes added into C int64 sums (the row of C is contiguous);
* any other layout is copied to NCHW first.

Parallel over runs of (image, channel) rows (or over images, channels-last) from
``PARALLEL_BYTES`` bytes on: below that, waking the pool's sleeping threads (``pool``) costs
more than the pass. Each output is one task's sum in a fixed order: the same bits at any
thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (starts Numba's pool passive)
from ..int8_reference import dequantize_global_average_pool_args

_JIT = dict(cache=CACHE, boundscheck=False, fastmath=False)

PARALLEL_BYTES = 1 << 21
"""From this many bytes of map on, the parallel loops (see the module; MobileNetV2's last map
at 224 px, 1280 x 7 x 7, is 63 KB an image)."""

ROWS_PER_TASK = 256
"""(image, channel) planes per parallel task."""

_CHUNK = 1 << 23
r"""Bytes summed in int32 before they go into the int64: $255 \cdot 2^{23} < 2^{31}$."""


@njit(inline="always")
def _int32_sum(row, start, stop):
    """The sum of row[start:stop] in int32 (exact for at most ``_CHUNK`` bytes): a plain
    loop, which LLVM vectorises."""
    part = np.int32(0)
    for i in range(start, stop):
        part += np.int32(row[i])
    return part


@njit(inline="always")
def _plane_sum(row):
    """The exact sum of a uint8 row, int64: chunks summed in int32 lanes (a plane of at most
    ``_CHUNK`` bytes, MobileNetV2's 7 x 7, in one loop: the chunk loop around it kept LLVM
    from vectorising it)."""
    n = row.shape[0]
    if n <= _CHUNK:
        return np.int64(_int32_sum(row, 0, n))
    total = np.int64(0)
    for start in range(0, n, _CHUNK):
        total += np.int64(_int32_sum(row, start, min(start + _CHUNK, n)))
    return total


@njit(inline="always")
def _mean(total, zero_total, scale, pixels):
    """``float32((sum - HW z) * s / HW)``: the reference's float64 operations in its order."""
    return np.float32(np.float64(total - zero_total) * scale / pixels)


@njit(**_JIT)
def _rows(q, zero_total, scale, pixels, out):
    """out[r] = the mean of row r of q (R, HW), one thread."""
    for r in range(q.shape[0]):
        out[r] = _mean(_plane_sum(q[r]), zero_total, scale, pixels)
    return out


@njit(parallel=True, **_JIT)
def _rows_parallel(q, zero_total, scale, pixels, out):
    """``_rows`` over the pool's threads, ``ROWS_PER_TASK`` rows a task."""
    rows = q.shape[0]
    for t in prange((rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for r in range(t * ROWS_PER_TASK, min((t + 1) * ROWS_PER_TASK, rows)):
            out[r] = _mean(_plane_sum(q[r]), zero_total, scale, pixels)
    return out


@njit(inline="always")
def _image_channels_last(q, n, zero_total, scale, pixels, sums, out):
    """out[n] from image n of q (N, HW, C): its pixels in order, C sums (scratch ``sums``)."""
    c = q.shape[2]
    sums[:] = 0
    for p in range(q.shape[1]):
        for ci in range(c):
            sums[ci] += np.int64(q[n, p, ci])
    for ci in range(c):
        out[n, ci] = _mean(sums[ci], zero_total, scale, pixels)


@njit(**_JIT)
def _channels_last(q, zero_total, scale, pixels, sums, out):
    """out (N, C) from q (N, HW, C), one thread; sums (1, C) int64 scratch."""
    for n in range(q.shape[0]):
        _image_channels_last(q, n, zero_total, scale, pixels, sums[0], out)
    return out


@njit(parallel=True, **_JIT)
def _channels_last_parallel(q, zero_total, scale, pixels, sums, out):
    """``_channels_last`` over the pool's threads, one image a task; sums (N, C) scratch."""
    for n in prange(q.shape[0]):
        _image_channels_last(q, n, zero_total, scale, pixels, sums[n], out)
    return out


def dequantize_global_average_pool(q, scale, zero_point):
    """The mean of each dequantized plane; the contract is
    ``int8_reference.dequantize_global_average_pool``'s.

    Args:
        q: (N, C, H, W) uint8, any memory layout (NCHW and channels-last read in place).
        scale: Positive scalar (float32).
        zero_point: Scalar (uint8).

    Returns:
        (N, C) float32.
    """
    q, s, z = dequantize_global_average_pool_args("dequantize_global_average_pool", q, scale,
                                                  zero_point)
    n, c, h, w = q.shape
    pixels = h * w
    args = (np.int64(pixels * z), np.float64(s), np.float64(pixels))
    out = np.empty((n, c), np.float32)
    parallel = q.size >= PARALLEL_BYTES
    nhwc = q.transpose(0, 2, 3, 1)
    if nhwc.flags.c_contiguous and not q.flags.c_contiguous:
        rows = nhwc.reshape(n, pixels, c)
        if parallel:
            return _channels_last_parallel(rows, *args, np.empty((n, c), np.int64), out)
        return _channels_last(rows, *args, np.empty((1, c), np.int64), out)
    rows = np.ascontiguousarray(q).reshape(n * c, pixels)
    (_rows_parallel if parallel else _rows)(rows, *args, out.reshape(-1))
    return out
