"""RMSprop's update as one pass over memory (an optional kernel of the numba set).

:class:`tinymbv2.optim.RMSprop` writes its update as NumPy whole-array
operations, which read and write every parameter about ten times and call NumPy
~10 times per parameter (158 parameters in MobileNetV2: ~6 ms of a 75 ms step at
32 px batch 64). This kernel does the same arithmetic, in the same order and in
the parameter's dtype, element by element in one loop, so it gives the same bits
(a test checks it). Kernel sets without it (``reference``, ``cupy``) use the NumPy
form, which stays the one to read.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import numba_pool  # noqa: F401  (the one-pool set-up)

_PARALLEL_FROM = 1 << 16  # elements; smaller parameters are not worth waking the pool


@njit(cache=True)
def _rmsprop_range(p, g, v, buf, lr, alpha, one_minus_alpha, eps, wd, mu, lo, hi):
    for i in range(lo, hi):
        gi = g[i]
        if wd != 0:
            gi = gi + wd * p[i]                       # g <- g + wd * p
        vi = v[i] * alpha + (one_minus_alpha * gi) * gi  # v <- alpha v + (1 - alpha) g^2
        v[i] = vi
        d = np.sqrt(vi) + eps
        if mu > 0:
            bi = buf[i] * mu + gi / d                 # buf <- mu buf + g / d
            buf[i] = bi
            p[i] = p[i] - lr * bi
        else:
            p[i] = p[i] - lr * (gi / d)


@njit(cache=True, parallel=True)
def _rmsprop_parallel(p, g, v, buf, lr, alpha, one_minus_alpha, eps, wd, mu):
    n = p.shape[0]
    chunks = 16
    for c in prange(chunks):
        _rmsprop_range(p, g, v, buf, lr, alpha, one_minus_alpha, eps, wd, mu,
                       n * c // chunks, n * (c + 1) // chunks)


def rmsprop_update(p, grad, square_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum):
    """PyTorch's (non-centered) RMSprop step on arrays, in place; see
    :class:`tinymbv2.optim.RMSprop` for the formulas. Returns False, touching
    nothing, when the arrays are not all C-contiguous of one float dtype (the
    caller then runs the NumPy form)."""
    arrays = [p, grad, square_avg] + ([momentum_buffer] if momentum > 0 else [])
    dtype = p.dtype
    if dtype not in (np.float32, np.float64) or any(
            a.dtype != dtype or not a.flags.c_contiguous or a.shape != p.shape for a in arrays):
        return False
    f = dtype.type  # Python scalars meet arrays in the array's dtype, as in NumPy (NEP 50)
    flat = [a.reshape(-1) for a in arrays]
    buf = flat[3] if momentum > 0 else flat[0][:0]
    args = (f(lr), f(alpha), f(1.0 - alpha), f(eps), f(weight_decay), f(momentum))
    if p.size >= _PARALLEL_FROM:
        _rmsprop_parallel(flat[0], flat[1], flat[2], buf, *args)
    else:
        _rmsprop_range(flat[0], flat[1], flat[2], buf, *args, 0, p.size)
    return True
