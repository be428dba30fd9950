r"""Bilinear and nearest resizing on Numba's pool (the numba set's ``interpolate_*``).

``ReferenceKernels.interpolate_forward`` writes the resize as two matrix products,
$y = A_h\,x\,A_w^T$ per plane, on NumPy's BLAS. Inside a numba training step that is the
wrong BLAS: NumPy's threaded one, whose pool and Numba's busy-wait in turn on a shared
machine (``pool.py`` tells that story). Measured on the 2-core machine beside other busy
processes, (4, 21, 16, 16) -> 256x256 float32: the reference's products took 3 ms with one
BLAS thread but from 8 ms to over a second with NumPy's threads. Here the same two products
run per plane inside a ``prange`` loop, on the BLAS that Numba's ``np.dot`` calls (pinned to
one thread): 2.6-3.8 ms forward and 3.7-8 ms backward there, against 8-12 and 20-25 ms for
loops that gather and scatter the four taps directly (the matrices' zeros cost less than
the loops' scattered reads), and PyTorch's 4-16 and 30-47 ms on 2 threads.

The backward is the forward with the transposed matrices, $g_x = A_h^T g_y A_w$. Each plane
is one task, so the result is the same on every run and at any number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import pool  # noqa: F401  (the one-pool set-up)
from ..checks import interpolate_args
from ..reference import interpolation_matrices
from .cache import CACHE


@njit(parallel=True, cache=CACHE)
def _two_products(x, a, bt, tmp, y):
    """``y[p] = a @ x[p] @ bt`` for every plane p, in parallel over planes (``tmp``: a @ x[p])."""
    for p in prange(x.shape[0]):
        np.dot(a, x[p], tmp[p])
        np.dot(tmp[p], bt, y[p])


def _resize(planes, a, bt):
    """(P, H, W) planes -> (P, Ho, Wo): ``a`` (Ho, H) @ plane @ ``bt`` (W, Wo); arrays allocated here."""
    p = planes.shape[0]
    tmp = np.empty((p, a.shape[0], planes.shape[2]), planes.dtype)
    y = np.empty((p, a.shape[0], bt.shape[1]), planes.dtype)
    _two_products(planes, np.ascontiguousarray(a), np.ascontiguousarray(bt), tmp, y)
    return y


def interpolate_forward(x, size, mode, align_corners, scales):
    """Resize the planes of x (N, C, H, W) to ``size``; see ``ReferenceKernels.interpolate_forward``.

    Args:
        x: The input (N, C, H, W).
        size: (Ho, Wo).
        mode: ``"bilinear"`` or ``"nearest"``.
        align_corners: Bilinear's source formula.
        scales: The caller's (scale_h, scale_w), or None.

    Returns:
        y (N, C, Ho, Wo), C-contiguous.
    """
    x = np.asarray(x)
    dtype = interpolate_args("interpolate_forward", x, size)
    n, c, h, w = x.shape
    a_h, a_w = interpolation_matrices(np, (h, w), size, mode, align_corners, scales, dtype)
    y = _resize(np.ascontiguousarray(x).reshape(n * c, h, w), a_h, a_w.T)
    return y.reshape(n, c, *y.shape[1:])


def interpolate_backward(gy, x_shape, mode, align_corners, scales):
    """The gradient of ``interpolate_forward`` with respect to x: $A_h^T g_y A_w$ per plane.

    Args:
        gy: The output's gradient (N, C, Ho, Wo).
        x_shape: The input's shape (N, C, H, W).
        mode: As in the forward.
        align_corners: As in the forward.
        scales: As in the forward.

    Returns:
        gx (N, C, H, W), C-contiguous.
    """
    gy = np.asarray(gy)
    dtype = interpolate_args("interpolate_backward", gy, gy.shape[2:], x_shape)
    n, c, h, w = x_shape
    a_h, a_w = interpolation_matrices(np, (h, w), gy.shape[2:], mode, align_corners, scales, dtype)
    gx = _resize(np.ascontiguousarray(gy).reshape(n * c, *gy.shape[2:]), a_h.T, a_w)
    return gx.reshape(n, c, h, w)
