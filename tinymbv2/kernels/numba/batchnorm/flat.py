"""Training BatchNorm for small planes: every image read as one contiguous row.

On a (N, C, H, W) batch with ``H*W`` of a few pixels (MobileNetV2's last blocks at
32 px are 2x2 and 1x1), a channel's values lie in N runs of ``H*W`` elements, too
short for the per-channel loops of ``..batchnorm``. Here image b is read as one
row ``x[b]`` of ``L = C*H*W`` values, and every position j of that row (channel
``j // HW``, pixel ``j % HW``) keeps its own float64 accumulators, summed over the
images in order: one long vectorised loop per image,

    S1[j] = sum_b (x[b, j] - K[j]),   S2[j] = sum_b (x[b, j] - K[j])^2           (forward)
    G[j]  = sum_b g[b, j],            GX[j] = sum_b g[b, j] (x[b, j] - mean[j])   (backward)

then a channel's HW accumulators are added in pixel order. The elementwise
passes read the per-channel scalars repeated along the row (``_repeat``), so
they are contiguous too.

These tensors are small (at most ``batchnorm.FLAT_MAX`` values), so the loops run
in the calling thread: waking Numba's pool for them cost more than it saved
(measured in ``..batchnorm``). Same arithmetic, dtypes and ReLU6 fusion as
``..batchnorm``, only the order of the float64 sums differs; deterministic.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..cache import CACHE

_JIT = dict(cache=CACHE, fastmath=False)


@njit(**_JIT)
def _repeat(per_channel, hw, out):
    """out[j] = per_channel[j // hw]: a channel's scalar under each of its pixels."""
    for ch in range(per_channel.shape[0]):
        v = per_channel[ch]
        for p in range(hw):
            out[ch * hw + p] = v


@njit(**_JIT)
def _per_channel(acc, hw, out):
    """``out[ch] = acc[ch*hw] + acc[ch*hw + 1] + ...`` (float64, pixel order)."""
    for ch in range(out.shape[0]):
        s = 0.0
        for p in range(hw):
            s += acc[ch * hw + p]
        out[ch] = s


@njit(inline="always", **_JIT)
def passed(g, xv, mu, sc, bi, clamp, zero, top):
    """``g`` where the fused clamp let the gradient through (0 < BN output < top), else 0.

    ``g`` itself without ``clamp``. ``top`` is the clamp's upper bound: 6 for ReLU6, inf for
    ReLU. A select, not a branch (see ``batchnorm.mask_relu6``);
    the kernels of ``.channels_last`` use this too.

    Args:
        g: One value of the output gradient.
        xv: The input value it belongs to.
        mu: Its channel's mean.
        sc: Its channel's scale (weight times invstd).
        bi: Its channel's bias.
        clamp: The forward clamped its output to [0, top].
        zero: 0 in g's dtype.
        top: The clamp's upper bound, in g's dtype.

    Returns:
        The gradient that passes.
    """
    if clamp:
        z = (xv - mu) * sc + bi
        return g if (z > 0) & (z < top) else zero
    return g


@njit(**_JIT)
def forward_train_flat(x, weight, bias, eps, clamp, top, y):
    r"""``batchnorm._forward_train`` for small tensors.

    Args:
        x: The input (N, C, H, W), C-contiguous.
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,).
        eps: $\epsilon$, added to the variance.
        clamp: Clamp y to [0, top] (BatchNorm and ReLU6 or ReLU fused).
        top: The clamp's upper bound: 6 (ReLU6) or inf (ReLU).
        y: The output, written.

    Returns:
        ``(y, mean, invstd)``.
    """
    n, c, h, wd = x.shape
    hw = h * wd
    length, m = c * hw, n * hw
    x2, y2 = x.reshape(n, length), y.reshape(n, length)
    first = np.empty(c)  # the shift K: each channel's first value, in float64
    for ch in range(c):
        first[ch] = x2[0, ch * hw]
    shift = np.empty(length)
    _repeat(first, hw, shift)
    s1, s2 = np.zeros(length), np.zeros(length)
    for b in range(n):
        xr = x2[b]
        for j in range(length):
            d = xr[j] - shift[j]
            s1[j] += d
            s2[j] += d * d
    t1, t2 = np.empty(c), np.empty(c)
    _per_channel(s1, hw, t1)
    _per_channel(s2, hw, t2)
    mean = np.empty(c, x.dtype)
    invstd = np.empty(c, x.dtype)
    scale = np.empty(c, x.dtype)
    for ch in range(c):
        d = t1[ch] / m
        var = max(t2[ch] / m - d * d, 0.0)
        mean[ch] = first[ch] + d
        invstd[ch] = 1.0 / np.sqrt(var + eps)
        scale[ch] = weight[ch] * invstd[ch]
    mu, sc, bi = np.empty(length, x.dtype), np.empty(length, x.dtype), np.empty(length, x.dtype)
    _repeat(mean, hw, mu)
    _repeat(scale, hw, sc)
    _repeat(bias, hw, bi)
    zero, upper = x.dtype.type(0), x.dtype.type(top)
    for b in range(n):
        xr, yr = x2[b], y2[b]
        if clamp:
            for j in range(length):
                yr[j] = min(max((xr[j] - mu[j]) * sc[j] + bi[j], zero), upper)
        else:
            for j in range(length):
                yr[j] = (xr[j] - mu[j]) * sc[j] + bi[j]
    return y, mean, invstd


@njit(**_JIT)
def backward_train_flat(gy, x, mean, invstd, weight, bias, clamp, top, gx):
    r"""``batchnorm._backward_train`` for small tensors.

    Args:
        gy: $\partial L / \partial y$ (N, C, H, W).
        x: The input (N, C, H, W).
        mean: The per-channel mean (C,).
        invstd: $1/\sqrt{\sigma^2 + \epsilon}$ per channel (C,).
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,).
        clamp: The forward clamped y to [0, top].
        top: The clamp's upper bound: 6 (ReLU6) or inf (ReLU).
        gx: The input gradient, written.

    Returns:
        ``(gx, gweight, gbias)``.
    """
    n, c, h, wd = x.shape
    hw = h * wd
    length, m = c * hw, n * hw
    x2, gy2, gx2 = x.reshape(n, length), gy.reshape(n, length), gx.reshape(n, length)
    scale = np.empty(c, x.dtype)  # rounded as in the forward, for the same ReLU6 mask
    for ch in range(c):
        scale[ch] = weight[ch] * invstd[ch]
    mu, sc, bi = np.empty(length, x.dtype), np.empty(length, x.dtype), np.empty(length, x.dtype)
    _repeat(mean, hw, mu)
    _repeat(scale, hw, sc)
    _repeat(bias, hw, bi)
    mu64 = np.empty(length)
    _repeat(mean.astype(np.float64), hw, mu64)
    sg, sgx = np.zeros(length), np.zeros(length)
    zero, upper = x.dtype.type(0), x.dtype.type(top)
    for b in range(n):
        xr, gr = x2[b], gy2[b]
        for j in range(length):
            g = np.float64(passed(gr[j], xr[j], mu[j], sc[j], bi[j], clamp, zero, upper))
            sg[j] += g
            sgx[j] += g * (xr[j] - mu64[j])
    t1, t2 = np.empty(c), np.empty(c)
    _per_channel(sg, hw, t1)
    _per_channel(sgx, hw, t2)
    gweight = np.empty(c, x.dtype)
    gbias = np.empty(c, x.dtype)
    coef = np.empty((3, c), x.dtype)
    for ch in range(c):
        istd = np.float64(invstd[ch])
        gw = t2[ch] * istd  # sum(gy * xhat)
        gbias[ch] = t1[ch]
        gweight[ch] = gw
        coef[0, ch] = np.float64(weight[ch]) * istd
        coef[1, ch] = t1[ch] / m
        coef[2, ch] = istd * gw / m
    a, bt, cc = np.empty(length, x.dtype), np.empty(length, x.dtype), np.empty(length, x.dtype)
    _repeat(coef[0], hw, a)
    _repeat(coef[1], hw, bt)
    _repeat(coef[2], hw, cc)
    for b in range(n):
        xr, gr, out = x2[b], gy2[b], gx2[b]
        for j in range(length):
            g = passed(gr[j], xr[j], mu[j], sc[j], bi[j], clamp, zero, upper)
            out[j] = a[j] * (g - bt[j] - (xr[j] - mu[j]) * cc[j])
    return gx, gweight, gbias
