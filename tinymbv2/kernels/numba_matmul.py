"""The plain matrix product for the Linear layer, on the BLAS pinned to one thread.

Same name, signature and result as :mod:`tinymbv2.kernels.reference`;
``numba_cpu`` re-exports it. ``a @ b`` in NumPy would run on NumPy's own
threaded OpenBLAS, whose worker threads spin for a while after every call --
on a 2-core machine they then take a core from Numba's pool for the rest of
the training step. Measured (MobileNetV2-1.0, 32 px, batch 64): 125-200 ms per
step with the classifier's three GEMMs on NumPy's BLAS, 75-81 ms with that BLAS
limited to one thread. ``np.dot`` inside ``@njit`` calls SciPy's BLAS instead,
which :mod:`.numba_pool` pins to one thread: no second pool. Products with 64
rows or more are cut into two blocks of rows that Numba's pool runs in parallel
(two, not four: each block re-packs all of b, measured 2.9 ms against 3.7 ms for the
classifier's three products at batch 64).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import numba_pool  # noqa: F401  (pins Numba's BLAS to one thread)
from ._checks import matmul_args, same_float_dtype


_ROW_BLOCKS = 2  # a fixed split of the rows (not the thread count): the same sums every run
_SPLIT_FROM = 64  # rows; fewer are multiplied in one call


@njit(cache=True)
def _dot(a, b, out):
    np.dot(a, b, out)


@njit(cache=True, parallel=True)
def _dot_row_blocks(a, b, out):
    """out = a @ b with a's rows cut into _ROW_BLOCKS blocks, one BLAS call each, in
    parallel (a and out C-contiguous: a block of rows is a contiguous slice)."""
    m, k = a.shape
    n = b.shape[1]
    a1, out1 = a.reshape(-1), out.reshape(-1)
    for blk in prange(_ROW_BLOCKS):
        r0, r1 = m * blk // _ROW_BLOCKS, m * (blk + 1) // _ROW_BLOCKS
        np.dot(a1[r0 * k:r1 * k].reshape(r1 - r0, k), b, out1[r0 * n:r1 * n].reshape(r1 - r0, n))


def _blas_ready(a):
    """BLAS reads C- or Fortran-ordered matrices as they are (a transposed view is free)."""
    return a if a.flags.c_contiguous or a.flags.f_contiguous else np.ascontiguousarray(a)


def matmul(a, b):
    """a (M, K) @ b (K, N) -> (M, N), C-contiguous; a or b may be transposed views."""
    fn = "matmul"
    a, b = np.asarray(a), np.asarray(b)
    same_float_dtype(fn, a=a, b=b)
    matmul_args(fn, a, b)
    out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    if a.shape[1] == 0 or out.size == 0:
        out[...] = 0
        return out
    if a.shape[0] >= _SPLIT_FROM:  # e.g. the classifier at batch 64: both cores
        _dot_row_blocks(np.ascontiguousarray(a), _blas_ready(b), out)
    else:
        _dot(_blas_ready(a), _blas_ready(b), out)
    return out
