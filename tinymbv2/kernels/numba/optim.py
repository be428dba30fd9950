"""RMSprop's and SGD's updates as one pass over memory (the numba set's ``rmsprop_update``
and ``sgd_update``).

``ReferenceKernels.rmsprop_update`` (what ``tinymbv2.optim.RMSprop`` calls) writes
the update as NumPy whole-array operations, which read and write every parameter about
ten times and call NumPy ~10 times per parameter (158 parameters in MobileNetV2: a
noticeable share of a small-image training step). This kernel does the same arithmetic,
in the same order and in the parameter's dtype, in one pass over memory (a block of 1024
elements at a time, in L1), so it gives the same bits (a test checks it). MobileNetV2's
whole update (3.5 million parameters, with momentum) runs this way much faster than
the single element-by-element loop it replaced, which LLVM could not
vectorise (figures: docs/kernels.md, "RMSprop"). The other kernel
sets (``reference``, ``cupy``), and the numba set for what this kernel does not take
(the centered form, arrays that are not C-contiguous of one float dtype), run the NumPy
form, which stays the one to read. ``sgd_update`` is the same for ``tinymbv2.optim.SGD``'s
step (weight decay, momentum with dampening, Nesterov): about six NumPy passes per parameter
become one.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (the one-pool set-up)

_PARALLEL_FROM = 1 << 16  # elements; smaller parameters are not worth waking the pool
_BLOCK = 1024  # elements a block of the update works on while they are in L1
_CHUNKS = 16  # parallel tasks of a large parameter
# error_model="numpy": "/" divides as IEEE (and NumPy) do. Numba's default ("python")
# tests every divisor for zero to raise ZeroDivisionError, and that branch keeps LLVM
# from vectorising the loop.
_JIT = dict(cache=CACHE, error_model="numpy")


@njit(**_JIT)
def _rmsprop_range(p, g, v, buf, scratch, lr, alpha, one_minus_alpha, eps, wd, mu, lo, hi):
    """Elements [lo, hi) of the update, a block of ``_BLOCK`` at a time, each step of the
    formula a loop of its own over the block (``scratch`` holds g / d). Loops that touch
    two or three arrays vectorise; the one loop over all four arrays stayed scalar, several
    times slower (figures: docs/kernels.md, "RMSprop")."""
    for b0 in range(lo, hi, _BLOCK):
        b1 = min(hi, b0 + _BLOCK)
        pb, gb, vb, d = p[b0:b1], g[b0:b1], v[b0:b1], scratch[:b1 - b0]
        src = gb
        if wd != 0:
            for i in range(d.shape[0]):
                d[i] = gb[i] + wd * pb[i]                    # g <- g + wd * p
            src = d
        for i in range(d.shape[0]):
            gi = src[i]
            vi = vb[i] * alpha + (one_minus_alpha * gi) * gi  # v <- alpha v + (1 - alpha) g^2
            vb[i] = vi
            d[i] = gi / (np.sqrt(vi) + eps)                   # g / d, d = sqrt(v) + eps
        if mu > 0:
            bb = buf[b0:b1]
            for i in range(d.shape[0]):
                bi = bb[i] * mu + d[i]                        # buf <- mu buf + g / d
                bb[i] = bi
                pb[i] = pb[i] - lr * bi
        else:
            for i in range(d.shape[0]):
                pb[i] = pb[i] - lr * d[i]


@njit(parallel=True, **_JIT)
def _rmsprop_parallel(p, g, v, buf, lr, alpha, one_minus_alpha, eps, wd, mu):
    n = p.shape[0]
    scratch = np.empty((_CHUNKS, _BLOCK), p.dtype)
    for c in prange(_CHUNKS):
        _rmsprop_range(p, g, v, buf, scratch[c], lr, alpha, one_minus_alpha, eps, wd, mu,
                       n * c // _CHUNKS, n * (c + 1) // _CHUNKS)


def rmsprop_update(p, grad, square_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum):
    """PyTorch's (non-centered) RMSprop step on arrays, in place.

    The formulas are ``tinymbv2.optim.RMSprop``'s.

    Args:
        p: The parameter, updated in place.
        grad: Its gradient.
        square_avg: The running mean of the squared gradient, updated in place.
        momentum_buffer: The momentum buffer, updated in place; used when ``momentum > 0``.
        lr: The learning rate.
        alpha: The decay of ``square_avg``.
        eps: Added to the denominator, outside the square root.
        weight_decay: The L2 coefficient.
        momentum: The momentum factor (0: none).

    Returns:
        True; False, touching nothing, when the arrays are not all C-contiguous of one float
        dtype (the caller then runs the NumPy form).
    """
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
        _rmsprop_range(flat[0], flat[1], flat[2], buf, np.empty(_BLOCK, dtype), *args, 0, p.size)
    return True


@njit(**_JIT)
def _sgd_range(p, g, buf, scratch, lr, mu, one_minus_dampening, wd, nesterov, first, lo, hi):
    """Elements [lo, hi) of the SGD step, a block of ``_BLOCK`` at a time, as
    ``_rmsprop_range`` (``scratch`` holds g + wd p)."""
    for b0 in range(lo, hi, _BLOCK):
        b1 = min(hi, b0 + _BLOCK)
        pb, gb, d = p[b0:b1], g[b0:b1], scratch[:b1 - b0]
        src = gb
        if wd != 0:
            for i in range(d.shape[0]):
                d[i] = gb[i] + wd * pb[i]                     # g <- g + wd * p
            src = d
        if mu != 0:
            bb = buf[b0:b1]
            if first:
                for i in range(d.shape[0]):
                    bb[i] = src[i]                            # buf <- g
            else:
                for i in range(d.shape[0]):
                    bb[i] = bb[i] * mu + one_minus_dampening * src[i]  # buf <- mu buf + (1 - d) g
            if nesterov:
                for i in range(d.shape[0]):
                    pb[i] = pb[i] - lr * (src[i] + mu * bb[i])
            else:
                for i in range(d.shape[0]):
                    pb[i] = pb[i] - lr * bb[i]
        else:
            for i in range(d.shape[0]):
                pb[i] = pb[i] - lr * src[i]


@njit(parallel=True, **_JIT)
def _sgd_parallel(p, g, buf, lr, mu, one_minus_dampening, wd, nesterov, first):
    n = p.shape[0]
    scratch = np.empty((_CHUNKS, _BLOCK), p.dtype)
    for c in prange(_CHUNKS):
        _sgd_range(p, g, buf, scratch[c], lr, mu, one_minus_dampening, wd, nesterov, first,
                   n * c // _CHUNKS, n * (c + 1) // _CHUNKS)


def sgd_update(p, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov,
               first=False):
    """PyTorch's SGD step on arrays, in place, in one pass: ``ReferenceKernels.sgd_update``'s
    arithmetic in its order and in the parameter's dtype (the same bits).

    Args:
        p: The parameter, updated in place.
        grad: Its gradient.
        momentum_buffer: The velocity, updated in place; used when ``momentum != 0``.
        lr: The learning rate.
        momentum: The momentum factor (0: none).
        dampening: The dampening of the momentum.
        weight_decay: The L2 coefficient.
        nesterov: Nesterov momentum.
        first: The first step with momentum: the buffer is set to the gradient.

    Returns:
        True; False, touching nothing, when the arrays are not all C-contiguous of one float
        dtype (the caller then runs the NumPy form).
    """
    arrays = [p, grad] + ([momentum_buffer] if momentum != 0 else [])
    dtype = p.dtype
    if dtype not in (np.float32, np.float64) or any(
            a.dtype != dtype or not a.flags.c_contiguous or a.shape != p.shape for a in arrays):
        return False
    f = dtype.type
    flat = [a.reshape(-1) for a in arrays]
    buf = flat[2] if momentum != 0 else flat[0][:0]
    args = (f(lr), f(momentum), f(1.0 - dampening), f(weight_decay), bool(nesterov), bool(first))
    if p.size >= _PARALLEL_FROM:
        _sgd_parallel(flat[0], flat[1], buf, *args)
    else:
        _sgd_range(flat[0], flat[1], buf, np.empty(_BLOCK, dtype), *args, 0, p.size)
    return True
