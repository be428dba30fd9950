"""The plain matrix product for the Linear layer, in ``.gemm``'s loops.

Same name, signature and result as ``tinymbv2.kernels.reference``;
``NumbaKernels`` takes it as its ``matmul``. The Linear
layer's three products come in two shapes, and each has the loop of ``.gemm`` that
reads its operands along memory:

* ``x @ W.T`` (forward): b is a transposed view of a C-contiguous matrix, so both
  operands are contiguous along the sum -- the dot-product form
  (``sum_of_products``), parallel over blocks of four rows of the output;
* ``g @ W`` and ``g.T @ x`` (backward): b is C-contiguous, the sum runs across its rows
  -- the broadcast form (``columns_nn``), parallel over tiles of the output (a may have
  any strides: its values are read once per block of eight terms).

Against the one-thread BLAS these replaced, at MobileNetV2's classifier (1280 -> 1000,
float32), these loops were faster for the forward and the input gradient and level
with it for the weight gradient, which at batch 64 sums only 64 terms, where BLAS's
packed kernel holds its own (figures: docs/kernels.md, "Matrix products"). Not
NumPy's ``a @ b`` either way: its threaded OpenBLAS spins worker threads after every
call, which on a machine with few cores takes a core from Numba's pool for the rest of
the training step (on two cores it made a step far slower). Every output is summed
whole by one thread in a fixed order: the same bits on every run and for any number of
threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from ..checks import matmul_args, same_float_dtype
from . import pool  # noqa: F401  (starts Numba's pool passive)
from .gemm import MIN_SUM, columns_nn, sum_of_products

TILE_ROWS, TILE_COLUMNS = 256, 320
"""Output tiles of the broadcast form, one per parallel task: the classifier's input
gradient at batch 64 is 1 x 4 tiles, its weight gradient 4 x 4 (of 128-512 rows and
256-640 columns, these were among the best, by a few percent)."""


@njit(parallel=True, cache=CACHE, boundscheck=False)
def _broadcast_tiles(a, b, out):
    """out = a @ b, b and out C-contiguous, tile by tile (columns in multiples of 16)."""
    m, p = out.shape
    row_tiles = (m + TILE_ROWS - 1) // TILE_ROWS
    column_tiles = (p + TILE_COLUMNS - 1) // TILE_COLUMNS
    for t in prange(row_tiles * column_tiles):
        rt, ct = t // column_tiles, t % column_tiles
        r0, r1 = m * rt // row_tiles, m * (rt + 1) // row_tiles
        j0 = p * ct // column_tiles // 16 * 16
        j1 = p if ct == column_tiles - 1 else p * (ct + 1) // column_tiles // 16 * 16
        columns_nn(a[r0:r1], b, out[r0:r1], j0, j1)
    return out


def matmul(a, b):
    """``a @ b``, C-contiguous; a or b may be transposed views.

    The contract is ``ReferenceKernels.matmul``'s.

    Args:
        a: (M, K).
        b: (K, N).

    Returns:
        (M, N).
    """
    fn = "matmul"
    a, b = np.asarray(a), np.asarray(b)
    same_float_dtype(fn, a=a, b=b)
    matmul_args(fn, a, b)
    if a.shape[1] == 0 or a.shape[0] == 0 or b.shape[1] == 0:
        return np.zeros((a.shape[0], b.shape[1]), a.dtype)
    if b.T.flags.c_contiguous and a.shape[1] >= MIN_SUM:  # a @ c.T: dot products along K
        return sum_of_products(np.ascontiguousarray(a)[None], b.T[None])
    out = np.empty((a.shape[0], b.shape[1]), a.dtype)  # see kernels.numba on allocation
    return _broadcast_tiles(a, np.ascontiguousarray(b), out)
