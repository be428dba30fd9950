"""Numba kernels for BatchNorm2d (CPU, parallel over channels).

Same names, signatures and results as ``tinymbv2.kernels.reference``;
``NumbaKernels`` takes them as its kernels.

* Training forward reads x twice: once for the statistics, once to write y.
  The statistics are sums of ``x - K`` and ``(x - K)^2`` with K the channel's
  first value ("shifted data"), accumulated in float64 even for float32
  input, so ``var = E[(x-K)^2] - E[x-K]^2`` does not suffer the cancellation
  of the naive ``E[x^2] - E[x]^2``.
* Training backward reads (gy, x) twice: once for ``sum gy`` and
  ``sum gy * (x - mean)``, once to write gx. With the fused ReLU6 the first pass
  leaves the masked gradient in gx's row, and the second turns it into the input
  gradient in place, so the mask is computed once, not twice: faster, with the same
  bits (figures: docs/kernels.md, "BatchNorm").
* ``relu6=True`` fuses the ReLU6 that follows BatchNorm in MobileNetV2: the
  forward clamps y to [0, 6] as it writes it; the backward recomputes the
  BatchNorm output ``z = (x - mean) * scale + bias`` (the very expression, in the
  very dtype, the forward used) and lets gy through only where 0 < z < 6.
  No mask is stored and no separate ReLU6 pass runs either way. ``relu=True`` is
  the same with the clamp's upper bound at infinity (the segmentation heads' ReLU):
  the kernels take the bound, ``top``, not a copy of themselves per activation.
* Each channel's values are summed by one thread, in float64 SIMD partial
  sums whose order is fixed by the compiled loop and the shapes (the sums are
  marked reassociable so LLVM may vectorise them), so results are
  bit-identical from run to run and for any number of threads.
* Elementwise passes compute in the input dtype; per-channel scalars are
  rounded to it by storing them in a small array of that dtype.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from ...checks import batch_norm_args, clamp_bound, relu6_bias, same_float_dtype
from .. import pool  # noqa: F401  (the one-pool set-up, see there)
from ..layout import as_channels_last, channels_last_plane, empty_channels_last, rows
from .flat import backward_train_flat, forward_train_flat
from .channels_last import backward_train_rows, forward_train_rows

_JIT = dict(cache=CACHE, fastmath=False)
# The sums may be reassociated so LLVM keeps them in SIMD partial sums: a fixed
# order set by the compiled loop and the row length, never by thread timing.
_JIT_SUM = dict(cache=CACHE, fastmath={"reassoc", "contract"})


@njit(**_JIT_SUM)
def _shifted_sums(a, k):
    """(sum(a - k), sum((a - k)^2)) in float64."""
    s = q = 0.0
    for i in range(a.shape[0]):
        d = a[i] - k
        s += d
        q += d * d
    return s, q


@njit(**_JIT)
def _passes_relu6(a, mu, sc, bi, top=6):
    """True where the fused ReLU6 passes the gradient: ``0 < (a - mu) * sc + bi < top``.

    ``top`` is the clamp's upper bound: 6 for ReLU6, inf for ReLU.

    ``&``, not ``and``: no branch, so the loops compile to selects (the mask is
    data-dependent and a branch on it would be mispredicted half the time).
    """
    z = (a - mu) * sc + bi
    return (z > 0) & (z < top)


@njit(**_JIT_SUM)
def grad_sums(g, a, k):
    """``(sum(g), sum(g * (a - k)))`` in float64.

    Args:
        g: A row of the (masked) output gradient.
        a: The same row of x.
        k: The channel's mean, a float64.

    Returns:
        The two sums, float64.
    """
    s = q = 0.0
    for i in range(g.shape[0]):
        gi = np.float64(g[i])
        s += gi
        q += gi * (a[i] - k)
    return s, q


@njit(**_JIT)
def mask_relu6(g, a, mu, sc, bi, out, top=6):
    """``out = g`` where the fused ReLU6 passed it (see ``_passes_relu6``), else 0.

    Args:
        g: A row of the output gradient.
        a: The same row of the input x.
        mu: The channel's mean.
        sc: The channel's scale, weight times invstd (rounded to the dtype).
        bi: The channel's bias.
        out: The row written.
        top: The clamp's upper bound (6: ReLU6; inf: ReLU).
    """
    zero, upper = g.dtype.type(0), g.dtype.type(top)
    for i in range(g.shape[0]):
        out[i] = g[i] if _passes_relu6(a[i], mu, sc, bi, upper) else zero


@njit(**_JIT)
def channel_stats(x3, ch, weight, eps, mean, invstd, scale):
    r"""Channel ``ch``'s mean, ``1/sqrt(var + eps)`` (biased variance) and ``weight * invstd``.

    Stored (so rounded to the dtype) in ``mean[ch]``, ``invstd[ch]``, ``scale[ch]``.

    Args:
        x3: The input as (N, C, HW).
        ch: The channel.
        weight: $\gamma$ (C,).
        eps: $\epsilon$, added to the variance.
        mean: (C,), written at ``ch``.
        invstd: (C,), written at ``ch``.
        scale: (C,), written at ``ch``.
    """
    n, hw = x3.shape[0], x3.shape[2]
    k = np.float64(x3[0, ch, 0])
    s1 = 0.0
    s2 = 0.0
    for b in range(n):
        a1, a2 = _shifted_sums(x3[b, ch], k)
        s1 += a1
        s2 += a2
    d = s1 / (n * hw)
    var = max(s2 / (n * hw) - d * d, 0.0)
    mean[ch] = k + d
    invstd[ch] = 1.0 / np.sqrt(var + eps)
    scale[ch] = weight[ch] * invstd[ch]


@njit(parallel=True, **_JIT)
def _forward_train(x, weight, bias, eps, clamp, top, y):
    n, c, h, wd = x.shape
    x3 = x.reshape(n, c, h * wd)
    y3 = y.reshape(n, c, h * wd)
    mean = np.empty(c, x.dtype)
    invstd = np.empty(c, x.dtype)
    scale = np.empty(c, x.dtype)
    for ch in prange(c):
        channel_stats(x3, ch, weight, eps, mean, invstd, scale)
        affine_channel(x3, y3, ch, mean[ch], scale[ch], bias[ch], clamp, top)
    return y, mean, invstd


@njit(**_JIT)
def grad_row_inplace(g, x, mu, a, bt, cc):
    """``g = a * (g - bt - (x - mu) * cc)`` in place: a row of the input gradient.

    Computed over the masked gradient that the row held (one array read and written, so it
    vectorises).

    Args:
        g: The row: the masked output gradient, then the input gradient.
        x: The same row of x.
        mu: The channel's mean.
        a: ``coef0``, weight times invstd.
        bt: ``coef1``, sum(g) / M.
        cc: ``coef2``, ``invstd * sum(g * xhat) / M``.
    """
    for i in range(g.shape[0]):
        g[i] = a * (g[i] - bt - (x[i] - mu) * cc)


@njit(**_JIT)
def mask_relu6_inplace(g, a, mu, sc, bi):
    """``g = g`` where the fused ReLU6 passed it (see ``_passes_relu6``), else 0, in place.

    Args:
        g: The row of the output gradient, masked in place.
        a: The same row of the input x.
        mu: The channel's mean.
        sc: The channel's scale, weight times invstd (rounded to the dtype).
        bi: The channel's bias.
    """
    zero = g.dtype.type(0)
    for i in range(g.shape[0]):
        g[i] = g[i] if _passes_relu6(a[i], mu, sc, bi) else zero


@njit(**_JIT)
def grad_coefs(sg, sgx, ch, invstd, weight, m, coef, gweight, gbias):
    r"""Channel ``ch``'s ``gbias``, ``gweight`` and the coefficients of its input gradient.

    ``coef[ch] = (weight * invstd, sum(g) / M, invstd * sum(g * xhat) / M)``, the numbers of
    ``gx = coef0 * (g - coef1 - (x - mean) * coef2)``.

    Args:
        sg: ``sum(g)`` over the channel.
        sgx: ``sum(g * (x - mean))`` over the channel.
        ch: The channel.
        invstd: (C,).
        weight: $\gamma$ (C,).
        m: M, the values per channel.
        coef: (C, 3), written at ``ch``.
        gweight: (C,), written at ``ch``.
        gbias: (C,), written at ``ch``.
    """
    istd = np.float64(invstd[ch])
    gw = sgx * istd  # sum(gy * xhat)
    gbias[ch] = sg
    gweight[ch] = gw
    coef[ch, 0] = np.float64(weight[ch]) * istd
    coef[ch, 1] = sg / m
    coef[ch, 2] = istd * gw / m


@njit(parallel=True, **_JIT)
def _backward_train(gy, x, mean, invstd, weight, bias, clamp, top, gx):
    n, c, h, wd = x.shape
    hw = h * wd
    x3 = x.reshape(n, c, hw)
    gy3 = gy.reshape(n, c, hw)
    gx3 = gx.reshape(n, c, hw)
    gweight = np.empty(c, x.dtype)
    gbias = np.empty(c, x.dtype)
    coef = np.empty((c, 3), x.dtype)
    scale = np.empty(c, x.dtype)  # rounded as in _forward_train, for the same ReLU6 mask
    for ch in prange(c):
        mu = mean[ch]
        scale[ch] = weight[ch] * invstd[ch]
        sc, bi = scale[ch], bias[ch]
        sg = 0.0
        sgx = 0.0
        for b in range(n):
            g = gy3[b, ch]
            if clamp:  # gx's row holds the masked gradient until the second pass
                mask_relu6(g, x3[b, ch], mu, sc, bi, gx3[b, ch], top)
                g = gx3[b, ch]
            a1, a2 = grad_sums(g, x3[b, ch], np.float64(mu))
            sg += a1
            sgx += a2
        # gx = weight*invstd * (gy - sum(gy)/M - (x - mean) * invstd * sum(gy*xhat)/M)
        grad_coefs(sg, sgx, ch, invstd, weight, n * hw, coef, gweight, gbias)
        a, bt, cc = coef[ch, 0], coef[ch, 1], coef[ch, 2]
        for b in range(n):
            xr, out = x3[b, ch], gx3[b, ch]
            if clamp:
                grad_row_inplace(out, xr, mu, a, bt, cc)
                continue
            gr = gy3[b, ch]
            for i in range(hw):
                out[i] = a * (gr[i] - bt - (xr[i] - mu) * cc)
    return gx, gweight, gbias


@njit(parallel=True, **_JIT)
def _forward_eval(x, mean, var, weight, bias, eps, relu6, y):
    n, c, h, wd = x.shape
    hw = h * wd
    x3 = x.reshape(n, c, hw)
    y3 = y.reshape(n, c, hw)
    scale = eval_scale(var, weight, eps)
    for ch in prange(c):
        affine_channel(x3, y3, ch, mean[ch], scale[ch], bias[ch], relu6)
    return y


@njit(**_JIT)
def eval_scale(var, weight, eps):
    r"""``weight / sqrt(var + eps)`` per channel, rounded to the dtype: BatchNorm-eval's scale.

    Args:
        var: The running variance (C,).
        weight: $\gamma$ (C,).
        eps: $\epsilon$.

    Returns:
        The scale (C,).
    """
    scale = np.empty(var.shape[0], var.dtype)
    for ch in range(var.shape[0]):
        scale[ch] = weight[ch] / np.sqrt(np.float64(var[ch]) + eps)
    return scale


@njit(**_JIT)
def affine_row(src, dst, mu, sc, bi, relu6, top=6):
    """``dst = (src - mu) * sc + bi``, clamped to [0, top] when ``relu6``.

    Args:
        src: A row of one channel.
        dst: The row written.
        mu: The channel's mean.
        sc: The channel's scale.
        bi: The channel's bias.
        relu6: Clamp to [0, top].
        top: The clamp's upper bound: 6 (ReLU6, the default) or inf (ReLU).
    """
    zero, upper = src.dtype.type(0), src.dtype.type(top)  # in the array's dtype, so the
    # clamp stays in it (Numba types ``bi * 0``, float32 times an int, as float64)
    if relu6:
        for i in range(src.shape[0]):
            z = (src[i] - mu) * sc + bi
            dst[i] = min(max(z, zero), upper)
    else:
        for i in range(src.shape[0]):
            dst[i] = (src[i] - mu) * sc + bi


@njit(**_JIT)
def affine_inplace(row, mu, sc, bi, relu6):
    """``affine_row(row, row, ...)``, written for one array.

    With two views of the same memory LLVM's overlap check fails and it runs the scalar loop
    (measured several times slower).

    Args:
        row: The row, changed in place.
        mu: The channel's mean.
        sc: The channel's scale.
        bi: The channel's bias.
        relu6: Clamp to [0, 6].
    """
    zero, six = row.dtype.type(0), row.dtype.type(6)
    if relu6:
        for i in range(row.shape[0]):
            z = (row[i] - mu) * sc + bi
            row[i] = min(max(z, zero), six)
    else:
        for i in range(row.shape[0]):
            row[i] = (row[i] - mu) * sc + bi


@njit(**_JIT)
def affine_channel(x3, y3, ch, mu, sc, bi, relu6, top=6):
    """``y3[:, ch] = (x3[:, ch] - mu) * sc + bi``, clamped to [0, top] when ``relu6``.

    Args:
        x3: The input (N, C, HW).
        y3: The output (N, C, HW).
        ch: The channel.
        mu: The channel's mean.
        sc: The channel's scale.
        bi: The channel's bias.
        relu6: Clamp to [0, top].
        top: The clamp's upper bound: 6 (ReLU6, the default) or inf (ReLU).
    """
    for b in range(x3.shape[0]):
        affine_row(x3[b, ch], y3[b, ch], mu, sc, bi, relu6, top)


@njit(**_JIT)
def epilogue(y2, ep):
    """Apply a BatchNorm-eval epilogue in place to one image's convolution output.

    While it is still in cache. Nothing when it is off. The epilogue is ``epilogue_args``'.

    Args:
        y2: The image's output (C, P).
        ep: ``(mean, scale, bias, flags)`` from ``epilogue_args``.
    """
    mean, scale, bias, flags = ep
    if flags[0]:
        for ch in range(y2.shape[0]):
            affine_inplace(y2[ch], mean[ch], scale[ch], bias[ch], flags[1])


def epilogue_args(fn, bn_eval, c, dtype):
    """The ``bn`` of the ``*_bn_eval`` convolution kernels as the jitted cores take it.

    ``(mean, scale, bias, flags=[on, relu6])``, the scale computed exactly as
    ``batch_norm_forward_eval`` computes it, so a fused epilogue gives the bits of the
    separate op on the same convolution output.

    Args:
        fn: The kernel's name, for the message.
        bn_eval: ``(mean, var, weight, bias, eps, relu6)``; None: no epilogue.
        c: The output channels.
        dtype: The output's dtype.

    Returns:
        ``(mean, scale, bias, flags)``.

    Raises:
        ValueError: An array of another shape.
        TypeError: Another dtype.
    """
    if bn_eval is None:
        empty = np.empty(0, dtype)
        return empty, empty, empty, np.zeros(2, np.bool_)
    mean, var, weight, bias, eps, relu6 = bn_eval
    mean, var, weight, bias = (_c(a) for a in (mean, var, weight, bias))
    same_float_dtype(fn, y=np.empty(0, dtype), mean=mean, var=var, weight=weight, bias=bias)
    for name, a in (("mean", mean), ("var", var), ("weight", weight), ("bias", bias)):
        if a.shape != (c,):
            raise ValueError(f"{fn}: bn_eval {name} must have shape ({c},), got {a.shape}")
    return mean, eval_scale(var, weight, float(eps)), bias, np.array([True, bool(relu6)])


def epilogue_table(ep, c, dtype) -> np.ndarray:
    """``epilogue_args``' (mean, scale, bias) as one (3, C) table, for the register kernels
    that apply the epilogue before their stores; no BatchNorm: the identity (0, 1, 0).

    Args:
        ep: ``(mean, scale, bias, flags)``.
        c: C, the channels.
        dtype: The values' dtype.

    Returns:
        The table.
    """
    mean, scale, bias, flags = ep
    table = np.empty((3, c), dtype)  # filled row by row: np.stack's checks cost more, per call
    if not flags[0]:
        mean, scale, bias = 0, 1, 0
    table[0], table[1], table[2] = mean, scale, bias
    return table


FLAT_MAX = 1 << 18
"""NCHW tensors (1x1 planes; larger planes too when the channels-last layout is off) of
up to this many values take ``.flat`` (contiguous rows, in the calling
thread). Measured against the parallel kernels below (float32, forward and backward
with ReLU6), the flat kernels were faster on MobileNetV2's small batch-64 tensors up to
64x192x4x4; from 64x96x8x8 (393,216 values) the parallel kernels win (figures:
docs/kernels.md, "BatchNorm"). Only on planes of at most ``FLAT_PLANE_MAX`` pixels,
though."""
FLAT_PLANE_MAX = 16
"""Pixels per plane up to which ``FLAT_MAX`` holds. On larger planes the per-channel kernels
are faster at any size, their loops running along a plane instead of ``C*H*W`` float64 sums
per image: several times faster on 8x32x28x28 (MobileNetV2's 28 px projections at 224 px,
three of them a step) and 8x64x14x14, clearly faster on 64x32x8x8, while at 64x96x4x4 the
flat ones win (figures: docs/kernels.md, "BatchNorm")."""
ROWS_SERIAL_MAX = 1 << 16
"""Channels-last tensors (``.channels_last``) of up to this many values run in the
calling thread, larger ones on Numba's pool. In an A/B of the 32 px batch 64 training
step, 2^16 was faster than 2^18 and level with 2^15 (figures: docs/kernels.md,
"BatchNorm")."""
def _c(a):
    return np.ascontiguousarray(a)


def _rows_layout(x) -> bool:
    """Work channels-last (``.channels_last``)? On small planes.

    On a 1x1 plane (the same memory in both layouts) only above ``FLAT_MAX`` values, where
    the flat kernels' single thread falls behind: up to there they were faster (at
    64x960x1x1, forward and backward), above it the rows ran several times faster than
    the channel-vectorised kernels this set had for 1x1 planes (at 512x1280x1x1; figures:
    docs/kernels.md, "BatchNorm").
    """
    h, w = x.shape[2], x.shape[3]
    return channels_last_plane(h, w) and (h * w > 1 or x.size > FLAT_MAX)


def _flat(x) -> bool:
    """Take ``.flat`` (NCHW, in the calling thread)? See ``FLAT_MAX``."""
    return x.size <= FLAT_MAX and x.shape[2] * x.shape[3] <= FLAT_PLANE_MAX


def batch_norm_forward_train(x, weight, bias, eps, relu6=False, relu=False):
    r"""BatchNorm in training mode, with the biased batch variance.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, C, H, W).
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,).
        eps: $\epsilon$, added to the variance.
        relu6: Clamp y to [0, 6] (BatchNorm and ReLU6 fused).
        relu: Clamp y to [0, inf) (BatchNorm and ReLU fused).

    Returns:
        ``(y, mean, invstd)``: y like x, the others (C,).
    """
    fn = "batch_norm_forward_train"
    x, weight, bias = np.asarray(x), _c(weight), _c(bias)
    same_float_dtype(fn, x=x, weight=weight, bias=bias)
    batch_norm_args(fn, x, train=True, weight=weight, bias=bias)
    clamp, top = clamp_bound(fn, relu6, relu)
    top = x.dtype.type(top)  # the clamp in x's dtype
    if _rows_layout(x):  # see ..layout and .channels_last
        x = as_channels_last(x)
        y = empty_channels_last(x.shape, x.dtype)
        mean, invstd = forward_train_rows(rows(x), weight, bias, float(eps), clamp, top, rows(y),
                                          parallel=x.size > ROWS_SERIAL_MAX)
        return y, mean, invstd
    x = _c(x)
    core = forward_train_flat if _flat(x) else _forward_train
    return core(x, weight, bias, float(eps), clamp, top, np.empty_like(x))  # see kernels.numba


def batch_norm_backward_train(gy, x, mean, invstd, weight, bias=None, relu6=False, relu=False):
    r"""BatchNorm's gradients in training mode.

    ``gx = weight * invstd * (gy - gbias / M - xhat * gweight / M)``. The contract is
    ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, C, H, W).
        x: The input (N, C, H, W).
        mean: The per-channel mean (C,).
        invstd: $1/\sqrt{\sigma^2 + \epsilon}$ per channel (C,).
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,); needed with ``relu6`` or ``relu``.
        relu6: The forward applied ReLU6: gy is first masked where it was flat.
        relu: The forward applied ReLU: gy is first masked where it was flat.

    Returns:
        ``(gx, gweight, gbias)``.

    Raises:
        ValueError: gy of another shape than x, or arrays that do not fit.
    """
    fn = "batch_norm_backward_train"
    clamp, top = clamp_bound(fn, relu6, relu)
    bias = relu6_bias(fn, relu6, bias, weight, relu)
    mean, invstd, weight, bias = (_c(a) for a in (mean, invstd, weight, bias))
    gy, x = np.asarray(gy), np.asarray(x)
    same_float_dtype(fn, gy=gy, x=x, mean=mean, invstd=invstd, weight=weight, bias=bias)
    batch_norm_args(fn, x, train=True, mean=mean, invstd=invstd, weight=weight, bias=bias)
    if gy.shape != x.shape:
        raise ValueError(f"{fn}: gy must have the shape of x {x.shape}, got {gy.shape}")
    top = x.dtype.type(top)  # the mask's bound in x's dtype
    if _rows_layout(x):  # see ..layout and .channels_last
        gy, x = as_channels_last(gy), as_channels_last(x)
        gx = empty_channels_last(x.shape, x.dtype)
        gweight, gbias = backward_train_rows(rows(gy), rows(x), mean, invstd, weight, bias,
                                             clamp, top, rows(gx), parallel=x.size > ROWS_SERIAL_MAX)
        return gx, gweight, gbias
    gy, x = _c(gy), _c(x)
    core = backward_train_flat if _flat(x) else _backward_train
    return core(gy, x, mean, invstd, weight, bias, clamp, top, np.empty_like(x))


def batch_norm_forward_eval(x, mean, var, weight, bias, eps, relu6=False):
    r"""BatchNorm in eval mode: ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, C, H, W).
        mean: The per-channel mean (C,).
        var: The per-channel variance (C,).
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,).
        eps: $\epsilon$, added to the variance.
        relu6: Clamp y to [0, 6].

    Returns:
        y, like x.
    """
    fn = "batch_norm_forward_eval"
    x, mean, var, weight, bias = (_c(a) for a in (x, mean, var, weight, bias))
    same_float_dtype(fn, x=x, mean=mean, var=var, weight=weight, bias=bias)
    batch_norm_args(fn, x, mean=mean, var=var, weight=weight, bias=bias)
    return _forward_eval(x, mean, var, weight, bias, float(eps), bool(relu6), np.empty_like(x))
