"""Numba kernels for BatchNorm2d (CPU, parallel over channels).

Same names, signatures and results as :mod:`tinymbv2.kernels.reference`;
``numba_cpu`` re-exports them.

* Training forward reads x twice: once for the statistics, once to write y.
  The statistics are sums of ``x - K`` and ``(x - K)^2`` with K the channel's
  first value ("shifted data"), accumulated in float64 even for float32
  input, so ``var = E[(x-K)^2] - E[x-K]^2`` does not suffer the cancellation
  of the naive ``E[x^2] - E[x]^2``.
* Training backward reads (gy, x) twice: once for ``sum gy`` and
  ``sum gy * (x - mean)``, once to write gx.
* Each channel is one ``prange`` iteration that sums its own values in a
  fixed order (four interleaved partial sums, combined the same way every
  time), so results are bit-identical from run to run.
* Elementwise passes compute in the input dtype; per-channel scalars are
  rounded to it by storing them in a small array of that dtype.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import numba_pool  # noqa: F401  (the one-pool set-up, see there)
from ._checks import batch_norm_args, same_float_dtype

_JIT = dict(cache=True, fastmath=False)


@njit(**_JIT)
def _shifted_sums(a, k):
    """(sum(a - k), sum((a - k)^2)) in float64, four independent partial sums."""
    s0 = s1 = s2 = s3 = 0.0
    q0 = q1 = q2 = q3 = 0.0
    n = a.shape[0]
    n4 = n - n % 4
    for i in range(0, n4, 4):
        d0 = a[i] - k
        d1 = a[i + 1] - k
        d2 = a[i + 2] - k
        d3 = a[i + 3] - k
        s0 += d0
        s1 += d1
        s2 += d2
        s3 += d3
        q0 += d0 * d0
        q1 += d1 * d1
        q2 += d2 * d2
        q3 += d3 * d3
    for i in range(n4, n):
        d = a[i] - k
        s0 += d
        q0 += d * d
    return (s0 + s1) + (s2 + s3), (q0 + q1) + (q2 + q3)


@njit(**_JIT)
def _grad_sums(g, a, k):
    """(sum(g), sum(g * (a - k))) in float64, four independent partial sums."""
    s0 = s1 = s2 = s3 = 0.0
    q0 = q1 = q2 = q3 = 0.0
    n = g.shape[0]
    n4 = n - n % 4
    for i in range(0, n4, 4):
        g0 = np.float64(g[i])
        g1 = np.float64(g[i + 1])
        g2 = np.float64(g[i + 2])
        g3 = np.float64(g[i + 3])
        s0 += g0
        s1 += g1
        s2 += g2
        s3 += g3
        q0 += g0 * (a[i] - k)
        q1 += g1 * (a[i + 1] - k)
        q2 += g2 * (a[i + 2] - k)
        q3 += g3 * (a[i + 3] - k)
    for i in range(n4, n):
        s0 += np.float64(g[i])
        q0 += np.float64(g[i]) * (a[i] - k)
    return (s0 + s1) + (s2 + s3), (q0 + q1) + (q2 + q3)


@njit(parallel=True, **_JIT)
def _forward_train(x, weight, bias, eps):
    n, c, h, wd = x.shape
    hw = h * wd
    m = n * hw
    x3 = x.reshape(n, c, hw)
    y = np.empty_like(x)
    y3 = y.reshape(n, c, hw)
    mean = np.empty(c, x.dtype)
    invstd = np.empty(c, x.dtype)
    scale = np.empty(c, x.dtype)
    for ch in prange(c):
        k = np.float64(x3[0, ch, 0])
        s1 = 0.0
        s2 = 0.0
        for b in range(n):
            a1, a2 = _shifted_sums(x3[b, ch], k)
            s1 += a1
            s2 += a2
        d = s1 / m
        var = max(s2 / m - d * d, 0.0)
        mean[ch] = k + d
        invstd[ch] = 1.0 / np.sqrt(var + eps)
        scale[ch] = weight[ch] * invstd[ch]
        mu, sc, bi = mean[ch], scale[ch], bias[ch]
        for b in range(n):
            xr = x3[b, ch]
            yr = y3[b, ch]
            for i in range(hw):
                yr[i] = (xr[i] - mu) * sc + bi
    return y, mean, invstd


@njit(parallel=True, **_JIT)
def _backward_train(gy, x, mean, invstd, weight):
    n, c, h, wd = x.shape
    hw = h * wd
    m = n * hw
    x3 = x.reshape(n, c, hw)
    gy3 = gy.reshape(n, c, hw)
    gx = np.empty_like(x)
    gx3 = gx.reshape(n, c, hw)
    gweight = np.empty(c, x.dtype)
    gbias = np.empty(c, x.dtype)
    coef = np.empty((c, 3), x.dtype)
    for ch in prange(c):
        mu = mean[ch]
        sg = 0.0
        sgx = 0.0
        for b in range(n):
            a1, a2 = _grad_sums(gy3[b, ch], x3[b, ch], np.float64(mu))
            sg += a1
            sgx += a2
        istd = np.float64(invstd[ch])
        gw = sgx * istd  # sum(gy * xhat)
        gbias[ch] = sg
        gweight[ch] = gw
        # gx = weight*invstd * (gy - sum(gy)/M - (x - mean) * invstd * sum(gy*xhat)/M)
        coef[ch, 0] = np.float64(weight[ch]) * istd
        coef[ch, 1] = sg / m
        coef[ch, 2] = istd * gw / m
        a, bt, cc = coef[ch, 0], coef[ch, 1], coef[ch, 2]
        for b in range(n):
            xr = x3[b, ch]
            gr = gy3[b, ch]
            out = gx3[b, ch]
            for i in range(hw):
                out[i] = a * (gr[i] - bt - (xr[i] - mu) * cc)
    return gx, gweight, gbias


@njit(parallel=True, **_JIT)
def _forward_eval(x, mean, var, weight, bias, eps):
    n, c, h, wd = x.shape
    hw = h * wd
    x3 = x.reshape(n, c, hw)
    y = np.empty_like(x)
    y3 = y.reshape(n, c, hw)
    scale = np.empty(c, x.dtype)
    for ch in range(c):
        scale[ch] = weight[ch] / np.sqrt(np.float64(var[ch]) + eps)
    for t in prange(n * c):
        b, ch = t // c, t % c
        mu, sc, bi = mean[ch], scale[ch], bias[ch]
        xr = x3[b, ch]
        yr = y3[b, ch]
        for i in range(hw):
            yr[i] = (xr[i] - mu) * sc + bi
    return y


def _c(a):
    return np.ascontiguousarray(a)


def batch_norm_forward_train(x, weight, bias, eps):
    """x: (N, C, H, W), weight/bias: (C,) -> (y, mean, invstd) with the biased batch variance."""
    fn = "batch_norm_forward_train"
    x, weight, bias = _c(x), _c(weight), _c(bias)
    same_float_dtype(fn, x=x, weight=weight, bias=bias)
    batch_norm_args(fn, x, train=True, weight=weight, bias=bias)
    return _forward_train(x, weight, bias, float(eps))


def batch_norm_backward_train(gy, x, mean, invstd, weight):
    """-> (gx, gweight, gbias); gx = weight*invstd*(gy - gbias/M - xhat*gweight/M)."""
    fn = "batch_norm_backward_train"
    gy, x, mean, invstd, weight = (_c(a) for a in (gy, x, mean, invstd, weight))
    same_float_dtype(fn, gy=gy, x=x, mean=mean, invstd=invstd, weight=weight)
    batch_norm_args(fn, x, train=True, mean=mean, invstd=invstd, weight=weight)
    if gy.shape != x.shape:
        raise ValueError(f"{fn}: gy must have the shape of x {x.shape}, got {gy.shape}")
    return _backward_train(gy, x, mean, invstd, weight)


def batch_norm_forward_eval(x, mean, var, weight, bias, eps):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel."""
    fn = "batch_norm_forward_eval"
    x, mean, var, weight, bias = (_c(a) for a in (x, mean, var, weight, bias))
    same_float_dtype(fn, x=x, mean=mean, var=var, weight=weight, bias=bias)
    batch_norm_args(fn, x, mean=mean, var=var, weight=weight, bias=bias)
    return _forward_eval(x, mean, var, weight, bias, float(eps))
