"""Training BatchNorm on channels-last tensors: rows of C contiguous channels.

A channels-last (N, C, H, W) tensor (see ``..layout``) is the matrix
x (M, C), ``M = N*H*W``: each row one pixel, each column one channel. Every loop here
runs along a row, so over the channels (contiguous and vectorised, every channel
its own SIMD lane) and down the rows in order:

    S1[c] = sum_r (x[r, c] - K[c]),    S2[c] = sum_r (x[r, c] - K[c])^2          (forward)
    G[c]  = sum_r g[r, c],             GX[c] = sum_r g[r, c] (x[r, c] - mean[c])  (backward)

with K = the first row (the "shifted data" of ``..batchnorm``) and float64 sums.
The rows are cut into ``_CHUNKS`` runs fixed by M alone; each run sums into its
own partial (in parallel when the tensor is large), and the partials are added in
run order, so the result is the same bits for any number of threads. Then one more
pass writes y (or gx) row by row.

Same arithmetic, dtypes and ReLU6 fusion as ``..batchnorm`` and
``.flat``; only the order of the float64 sums differs.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from .. import pool  # noqa: F401  (the one-pool set-up, see there)
from .flat import passed

_JIT = dict(cache=CACHE, fastmath=False)
_CHUNKS = 16  # runs of rows, each with its own partial sums (fixed: see above)


@njit(**_JIT)
def run_bounds(m):
    """Row bounds of the runs of rows whose sums are kept apart: a function of M alone.

    Args:
        m: M, the number of rows.

    Returns:
        (K + 1,) int64, run k is rows ``[bounds[k], bounds[k + 1])``.
    """
    k = min(_CHUNKS, m)
    return np.array([m * i // k for i in range(k + 1)], np.int64)


@njit(inline="always", **_JIT)
def mean_invstd(s1, s2, shift, m, eps):
    r"""A channel's mean and $1/\sqrt{\sigma^2 + \epsilon}$, in float64, from its shifted sums.

    $d = s_1 / m$, $\sigma^2 = \max(s_2 / m - d^2, 0)$ (the biased variance), mean $= K + d$.

    Args:
        s1: The sum of ``x - shift`` over the m values, float64.
        s2: The sum of ``(x - shift)^2``, float64.
        shift: K, the shift (the first row's value), float64.
        m: The number of values.
        eps: $\epsilon$.

    Returns:
        ``(mean, invstd)``, float64: the callers round them to the dtype as they store them.
    """
    d = s1 / m
    var = max(s2 / m - d * d, 0.0)
    return shift + d, 1.0 / np.sqrt(var + eps)


@njit(inline="always", **_JIT)
def grad_terms(sg, sgx, weight, invstd, m):
    r"""A channel's weight gradient and the coefficients of ``gx = a (g - b - (x - mean) c)``.

    Args:
        sg: The sum of the (clamp-masked) output gradient g, float64.
        sgx: The sum of ``g (x - mean)``, float64.
        weight: $\gamma$ of the channel.
        invstd: Its $1/\sqrt{\sigma^2 + \epsilon}$.
        m: The number of values.

    Returns:
        ``(gweight, a, b, c)`` in float64: $\sum g \hat x$, $\gamma \cdot$ invstd, the mean of
        g, and invstd times gweight over m.
    """
    istd = np.float64(invstd)
    gw = sgx * istd  # sum(gy * xhat)
    return gw, np.float64(weight) * istd, sg / m, istd * gw / m


@njit(**_JIT)
def _shifted_sums(x2, r0, r1, shift, s1, s2):
    """s1, s2 (C,) float64 = sums over rows [r0, r1) of x - shift and (x - shift)^2."""
    s1[:] = 0
    s2[:] = 0
    for r in range(r0, r1):
        xr = x2[r]
        for ch in range(xr.shape[0]):
            d = xr[ch] - shift[ch]
            s1[ch] += d
            s2[ch] += d * d


@njit(**_JIT)
def _affine_rows(x2, y2, r0, r1, mu, sc, bi, clamp, top):
    """``y2[r] = (x2[r] - mu) * sc + bi`` for rows [r0, r1), clamped to [0, top] when ``clamp``."""
    zero, upper = y2.dtype.type(0), y2.dtype.type(top)
    for r in range(r0, r1):
        xr, yr = x2[r], y2[r]
        if clamp:
            for ch in range(xr.shape[0]):
                yr[ch] = min(max((xr[ch] - mu[ch]) * sc[ch] + bi[ch], zero), upper)
        else:
            for ch in range(xr.shape[0]):
                yr[ch] = (xr[ch] - mu[ch]) * sc[ch] + bi[ch]


@njit(**_JIT)
def affine_rows_inplace(y2, r0, r1, c0, c1, mu, sc, bi, relu6):
    """``_affine_rows(y2, y2, ...)`` on rows [r0, r1) and channels [c0, c1), for one array.

    With two views of the same memory LLVM's overlap check fails and the loop runs scalar
    (as ``batchnorm.affine_inplace`` says). The BatchNorm-eval epilogue of the channels-last
    convolutions.

    Args:
        y2: The rows (M, C), changed in place.
        r0: The first row.
        r1: The row after the last.
        c0: The first channel.
        c1: The channel after the last.
        mu: The means, over all C channels.
        sc: The scales, over all C channels.
        bi: The biases, over all C channels.
        relu6: Clamp to [0, 6].
    """
    zero, six = y2.dtype.type(0), y2.dtype.type(6)
    m, s, b = mu[c0:c1], sc[c0:c1], bi[c0:c1]
    for r in range(r0, r1):
        yr = y2[r, c0:c1]
        if relu6:
            for ch in range(yr.shape[0]):
                yr[ch] = min(max((yr[ch] - m[ch]) * s[ch] + b[ch], zero), six)
        else:
            for ch in range(yr.shape[0]):
                yr[ch] = (yr[ch] - m[ch]) * s[ch] + b[ch]


@njit(**_JIT)
def _grad_sums(g2, x2, r0, r1, mu, sc, bi, mu64, clamp, top, sg, sgx):
    """``sg``, ``sgx`` (C,) float64 = sums over rows [r0, r1) of ``g`` and ``g * (x - mean)``."""
    zero, upper = x2.dtype.type(0), x2.dtype.type(top)
    sg[:] = 0
    sgx[:] = 0
    for r in range(r0, r1):
        xr, gr = x2[r], g2[r]
        for ch in range(xr.shape[0]):
            g = np.float64(passed(gr[ch], xr[ch], mu[ch], sc[ch], bi[ch], clamp, zero, upper))
            sg[ch] += g
            sgx[ch] += g * (xr[ch] - mu64[ch])


@njit(**_JIT)
def _grad_rows(g2, x2, gx2, r0, r1, mu, sc, bi, coef, clamp, top):
    """``gx2[r] = a * (g - b - (x - mean) * c)`` for rows [r0, r1); ``coef`` holds (a, b, c)."""
    a, bt, cc = coef[0], coef[1], coef[2]
    zero, upper = x2.dtype.type(0), x2.dtype.type(top)
    for r in range(r0, r1):
        xr, gr, out = x2[r], g2[r], gx2[r]
        for ch in range(xr.shape[0]):
            g = passed(gr[ch], xr[ch], mu[ch], sc[ch], bi[ch], clamp, zero, upper)
            out[ch] = a[ch] * (g - bt[ch] - (xr[ch] - mu[ch]) * cc[ch])


@njit(**_JIT)
def _add_in_order(part):
    """part (K, C) -> (C,): part[0] + part[1] + ..., in run order."""
    total = part[0].copy()
    for k in range(1, part.shape[0]):
        total += part[k]
    return total


# The runs in parallel on Numba's pool (large tensors), or one after another in the
# calling thread (small ones, where waking the pool costs more than it saves: see
# batchnorm.FLAT_MAX). Same runs, same sums, same bits either way.
@njit(parallel=True, **_JIT)
def _stats_parallel(x2, bounds, shift, p1, p2):
    for k in prange(bounds.shape[0] - 1):
        _shifted_sums(x2, bounds[k], bounds[k + 1], shift, p1[k], p2[k])


@njit(**_JIT)
def _stats_serial(x2, bounds, shift, p1, p2):
    for k in range(bounds.shape[0] - 1):
        _shifted_sums(x2, bounds[k], bounds[k + 1], shift, p1[k], p2[k])


@njit(parallel=True, **_JIT)
def _affine_parallel(x2, y2, bounds, mu, sc, bi, clamp, top):
    for k in prange(bounds.shape[0] - 1):
        _affine_rows(x2, y2, bounds[k], bounds[k + 1], mu, sc, bi, clamp, top)


@njit(parallel=True, **_JIT)
def _grad_sums_parallel(g2, x2, bounds, mu, sc, bi, mu64, clamp, top, p1, p2):
    for k in prange(bounds.shape[0] - 1):
        _grad_sums(g2, x2, bounds[k], bounds[k + 1], mu, sc, bi, mu64, clamp, top, p1[k], p2[k])


@njit(**_JIT)
def _grad_sums_serial(g2, x2, bounds, mu, sc, bi, mu64, clamp, top, p1, p2):
    for k in range(bounds.shape[0] - 1):
        _grad_sums(g2, x2, bounds[k], bounds[k + 1], mu, sc, bi, mu64, clamp, top, p1[k], p2[k])


@njit(parallel=True, **_JIT)
def _grad_rows_parallel(g2, x2, gx2, bounds, mu, sc, bi, coef, clamp, top):
    for k in prange(bounds.shape[0] - 1):
        _grad_rows(g2, x2, gx2, bounds[k], bounds[k + 1], mu, sc, bi, coef, clamp, top)


@njit(**_JIT)
def forward_train_rows(x2, weight, bias, eps, clamp, top, y2, parallel):
    r"""``y2 (M, C)`` = BatchNorm-train (and ReLU6 or ReLU) of ``x2 (M, C)``.

    Args:
        x2: The input rows (M, C).
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,).
        eps: $\epsilon$, added to the variance.
        clamp: Clamp y to [0, top].
        top: The clamp's upper bound: 6 (ReLU6) or inf (ReLU).
        y2: The output rows (M, C), written.
        parallel: Sum the runs on Numba's pool (large tensors).

    Returns:
        ``(mean, invstd)``, both (C,).
    """
    m, c = x2.shape
    bounds = run_bounds(m)
    runs = bounds.shape[0] - 1
    shift = np.empty(c)  # K: the first row, in float64
    for ch in range(c):
        shift[ch] = x2[0, ch]
    p1, p2 = np.empty((runs, c)), np.empty((runs, c))
    if parallel:
        _stats_parallel(x2, bounds, shift, p1, p2)
    else:
        _stats_serial(x2, bounds, shift, p1, p2)
    t1, t2 = _add_in_order(p1), _add_in_order(p2)
    mean, invstd, scale = np.empty(c, x2.dtype), np.empty(c, x2.dtype), np.empty(c, x2.dtype)
    for ch in range(c):
        mean[ch], invstd[ch] = mean_invstd(t1[ch], t2[ch], shift[ch], m, eps)
        scale[ch] = weight[ch] * invstd[ch]  # rounded to the dtype, as in batchnorm
    if parallel:
        _affine_parallel(x2, y2, bounds, mean, scale, bias, clamp, top)
    else:
        _affine_rows(x2, y2, 0, m, mean, scale, bias, clamp, top)
    return mean, invstd


@njit(**_JIT)
def backward_train_rows(g2, x2, mean, invstd, weight, bias, clamp, top, gx2, parallel):
    r"""``gx2 (M, C)`` = BatchNorm-train's input gradient.

    Args:
        g2: $\partial L / \partial y$ as rows (M, C).
        x2: The input rows (M, C).
        mean: The per-channel mean (C,).
        invstd: $1/\sqrt{\sigma^2 + \epsilon}$ per channel (C,).
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,).
        clamp: The forward clamped y to [0, top].
        top: The clamp's upper bound: 6 (ReLU6) or inf (ReLU).
        gx2: The input gradient rows (M, C), written.
        parallel: Sum the runs on Numba's pool (large tensors).

    Returns:
        ``(gweight, gbias)``, both (C,).
    """
    m, c = x2.shape
    bounds = run_bounds(m)
    runs = bounds.shape[0] - 1
    scale = np.empty(c, x2.dtype)  # the forward's rounding, for the same ReLU6 mask
    mu64 = np.empty(c)
    for ch in range(c):
        scale[ch] = weight[ch] * invstd[ch]
        mu64[ch] = mean[ch]
    p1, p2 = np.empty((runs, c)), np.empty((runs, c))
    if parallel:
        _grad_sums_parallel(g2, x2, bounds, mean, scale, bias, mu64, clamp, top, p1, p2)
    else:
        _grad_sums_serial(g2, x2, bounds, mean, scale, bias, mu64, clamp, top, p1, p2)
    t1, t2 = _add_in_order(p1), _add_in_order(p2)
    gweight, gbias = np.empty(c, x2.dtype), np.empty(c, x2.dtype)
    coef = np.empty((3, c), x2.dtype)
    for ch in range(c):
        gweight[ch], coef[0, ch], coef[1, ch], coef[2, ch] = grad_terms(t1[ch], t2[ch],
                                                                        weight[ch], invstd[ch], m)
        gbias[ch] = t1[ch]
    if parallel:
        _grad_rows_parallel(g2, x2, gx2, bounds, mean, scale, bias, coef, clamp, top)
    else:
        _grad_rows(g2, x2, gx2, 0, m, mean, scale, bias, coef, clamp, top)
    return gweight, gbias
