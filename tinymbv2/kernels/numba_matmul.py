"""The plain matrix product for the Linear layer, on the BLAS pinned to one thread.

Same name, signature and result as :mod:`tinymbv2.kernels.reference`;
``numba_cpu`` re-exports it. ``a @ b`` in NumPy would run on NumPy's own
threaded OpenBLAS, whose worker threads spin for a while after every call --
on a 2-core machine they then take a core from Numba's pool for the rest of
the training step. Measured (MobileNetV2-1.0, 32 px, batch 64): 125-200 ms per
step with the classifier's three GEMMs on NumPy's BLAS, 75-81 ms with that BLAS
limited to one thread. ``np.dot`` inside ``@njit`` calls SciPy's BLAS instead,
which :mod:`.numba_pool` pins to one thread: no second pool.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import numba_pool  # noqa: F401  (pins Numba's BLAS to one thread)
from ._checks import matmul_args, same_float_dtype


@njit(cache=True)
def _dot(a, b, out):
    np.dot(a, b, out)


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
    _dot(_blas_ready(a), _blas_ready(b), out)
    return out
