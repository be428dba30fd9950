"""A convolution's zero padding without materialising it: the outputs each tap reads inside.

For kernel offset t (a row i or a column j of the filter) at stride s and padding p, output
o reads input ``o*s + t - p``. The outputs whose input falls inside the image form one run
[lo[t], hi[t]), computed once per call (``valid_range``); a loop over that run needs no
bounds test, and the padding's zeros are never written anywhere. The general depthwise
loops (``.depthwise``) and the dense convolution's im2col (``.dense``) both use it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .cache import CACHE

_JIT = dict(cache=CACHE, fastmath=False)


@njit(**_JIT)
def valid_range(k, pad, stride, size, out_size):
    """For each kernel offset t < k, the outputs [lo[t], hi[t]) whose input falls inside [0, size).

    The input of output o at offset t is ``o*stride + t - pad``.

    Args:
        k: The kernel size.
        pad: The padding.
        stride: The stride.
        size: The input size.
        out_size: The output size.

    Returns:
        ``(lo, hi)``, two int64 arrays of k values.
    """
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
