"""Work cut into chunks, each with scratch of its own: how the parallel loops share it out.

A ``prange`` loop over many small tasks (the (image, channel) planes of a depthwise
convolution, the channels of the depthwise stage) runs over at most 64 contiguous chunks
of them instead, and each chunk works in its own slice of a scratch array allocated
*before* the loop: an array allocated inside a ``prange`` body made the loop several
times slower (the allocation rules are in ``tinymbv2.kernels.numba``; figures:
docs/kernels.md, "Allocation"). The bounds are a
function of the task count alone, so which thread takes a chunk changes no result.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .cache import CACHE

_JIT = dict(cache=CACHE, fastmath=False)


@njit(**_JIT)
def chunk_bounds(total):
    """Split ``range(total)`` into at most 64 contiguous chunks, one per prange iteration.

    Each chunk has its own slice of a scratch array allocated *before* the loop (an array
    allocated inside a prange body made the loop several times slower).

    Args:
        total: The number of items.

    Returns:
        The chunk bounds, an int64 array of up to 65 values from 0 to ``total``.
    """
    k = min(total, 64)
    return np.array([total * i // k for i in range(k + 1)], np.int64)
