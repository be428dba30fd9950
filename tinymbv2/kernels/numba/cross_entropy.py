r"""Per-pixel softmax cross-entropy in two passes forward and one backward (the numba set's
``cross_entropy_*`` on (N, K, H, W) logits).

``ReferenceKernels.cross_entropy_forward`` writes the loss as whole-array NumPy: the maximum
over the classes, the shift, the exponential, the sum, the logarithm, the log-softmax, the
pick of each pixel's class, each one a pass over all K planes, and the backward as many
again (the exponential of the saved log-softmax, the scaling, a one-hot array). A
segmentation step's logits are large (4 images of 11 classes at 256 px: 2.9 million values,
11.5 MB in float32), so those passes, not the arithmetic, are its cost. Here each pass
works on a run of ``RUN`` pixels of one image at a time, whose K class rows stay in cache:

* forward: a Numba pass writes $e^{z - \max_k z}$ (and keeps the maximum); a second Numba
  pass sums each pixel's exponentials, divides them by the sum into the softmax $p$ (saved
  for the backward) and writes each pixel's loss and $w_{t_i} m_i$;
* backward: one pass, $\partial L / \partial z = p \cdot a_i$ (plus the smoothing term)
  with $a_i$ subtracted at the pixel's own class, as ``cross_entropy_backward`` derives.

**The exponential.** Numba's own ``math.exp``, without Intel's SVML library, is one scalar
call per value, several times slower than NumPy's vectorised one. In float32 the first pass
computes it itself, ``exp_nonpositive`` (Cephes' ``expf``: $x = n \ln 2 + r$ with
$|r| \le \ln(2)/2$, $e^r$ by a polynomial, $2^n$ built from its exponent bits), a loop LLVM
vectorises, within one unit in the last place where NumPy's float32 ``exp`` is within about
2.5 (``tests/kernels/test_cross_entropy_kernels.py``); that saves NumPy's pass over the
11.5 MB (in the ASPP step: the loss's forward 5.4 -> 3.5 ms, docs/kernels.md). In float64
the first pass writes $z - \max_k z$ and NumPy's ``exp`` runs over it in place: the
polynomial would need twice the terms there, and float64 is for checking, not speed.

The formulas are the reference's; the softmax is $e / \sum e$ rather than
$\exp(\log p)$, which differs in the last bit. Each pixel is computed by one task alone, so
the result is the same at any number of threads.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from . import pool  # noqa: F401  (the one-pool set-up)
from .cache import CACHE

_JIT = dict(cache=CACHE, fastmath=False)
RUN = 512
"""Pixels per task: K rows of them (11 classes: 22 KB in float32) stay in L1/L2 cache."""


def supported(z) -> bool:
    """Whether these kernels take the logits.

    Args:
        z: The logits (or the softmax, for the backward).

    Returns:
        True for a non-empty float32 or float64 NumPy array (N, K, H, W).
    """
    return (isinstance(z, np.ndarray) and z.ndim == 4 and z.dtype in (np.float32, np.float64)
            and z.size > 0)


@njit(**_JIT)
def _run(task, runs, pixels):
    """(image, first pixel, end) of a task: the tasks are the runs of every image in turn."""
    b, r = task // runs, task % runs
    return b, r * RUN, min(pixels, (r + 1) * RUN)


# exp for float32 arguments x <= 0 (Cephes' expf): x = n ln 2 + r with |r| <= ln(2) / 2,
# ln 2 split in two (C1 exact in few bits, so n * C1 is exact), e^r by a degree-7 polynomial,
# then times 2^n, built from its bits (a table lookup would keep the loop from vectorising)
_LOG2E = np.float32(1.44269504088896341)
_C1 = np.float32(0.693359375)
_C2 = np.float32(-2.12194440e-4)
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
_HALF, _ONE = np.float32(0.5), np.float32(1.0)
_LOWEST = np.float32(-104.0)  # e^x rounds to 0 in float32 below about -103.97


@intrinsic
def _float32_bits(typingctx, bits):
    """The float32 whose bits are the int32 ``bits``."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always", **_JIT)
def _pow2(m):
    """$2^m$ as float32, for an integer m in [-126, 127]: exponent field m + 127."""
    return _float32_bits(np.int32((m + 127) << 23))


@njit(inline="always", **_JIT)
def exp_nonpositive(x):
    """$e^x$ for a float32 x <= 0 (or NaN, which it returns), within about one unit in the
    last place (the ``tests`` measure it); a loop of these vectorises, where Numba's
    ``math.exp`` is a call per value.

    Args:
        x: The float32 argument.

    Returns:
        float32 $e^x$.
    """
    if x < _LOWEST:
        x = _LOWEST
    n = np.floor(x * _LOG2E + _HALF)
    r = (x - n * _C1) - n * _C2
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    y = (p * (r * r) + r) + _ONE
    if not n >= np.float32(-151.0):  # NaN: any n; y is NaN already
        n = np.float32(0.0)
    k = int(n)
    half = k >> 1  # 2^n as 2^half * 2^(n - half): both normal down to n = -151
    return (y * _pow2(half)) * _pow2(k - half)


@njit(parallel=True, **_JIT)
def _shift(z, e, m, exponentiate):
    """``m[b, i] = max_k z[b, k, i]``, ``e[b, k, i] = z[b, k, i] - m[b, i]``, or its
    exponential (``exp_nonpositive``, float32) with ``exponentiate``."""
    n, k, pixels = z.shape
    runs = (pixels + RUN - 1) // RUN
    for task in prange(n * runs):
        b, lo, hi = _run(task, runs, pixels)
        top = m[b, lo:hi]
        top[:] = z[b, 0, lo:hi]
        for c in range(1, k):
            row = z[b, c, lo:hi]
            for j in range(hi - lo):
                if not row[j] <= top[j]:  # NaN too: it spreads to the loss, as np.max's
                    top[j] = row[j]
        for c in range(k):
            row, out = z[b, c, lo:hi], e[b, c, lo:hi]
            if exponentiate:
                for j in range(hi - lo):
                    out[j] = exp_nonpositive(row[j] - top[j])
            else:
                for j in range(hi - lo):
                    out[j] = row[j] - top[j]


@njit(parallel=True, **_JIT)
def _normalise(p, z, m, t, w, eps, ignore, losses, w_t):
    """p (holding exp(z - m)) divided by its class sum; each pixel's loss and w_t m_i."""
    n, k, pixels = p.shape
    runs = (pixels + RUN - 1) // RUN
    for task in prange(n * runs):
        b, lo, hi = _run(task, runs, pixels)
        total = losses[b, lo:hi]  # the sums, until the losses replace them
        total[:] = p[b, 0, lo:hi]
        for c in range(1, k):
            total += p[b, c, lo:hi]
        for c in range(k):
            row = p[b, c, lo:hi]
            for j in range(hi - lo):
                row[j] /= total[j]
        for j in range(hi - lo):
            i = lo + j
            log_sum = math.log(total[j])
            keep = t[b, i] != ignore
            c = t[b, i] if keep else 0
            weight = w[c] if keep else 0.0
            loss = -(1.0 - eps) * weight * ((z[b, c, i] - m[b, i]) - log_sum)
            if eps != 0.0 and keep:
                smooth = 0.0
                for q in range(k):
                    smooth += w[q] * ((z[b, q, i] - m[b, i]) - log_sum)
                loss -= (eps / k) * smooth
            losses[b, i] = loss
            w_t[b, i] = weight


@njit(parallel=True, **_JIT)
def _backward(p, t, w, eps, ignore, scale, per_pixel, coefs, dz):
    """dz = p (a + b sum(w)) - b w, minus a at the pixel's class; a, b per pixel in coefs."""
    n, k, pixels = p.shape
    runs = (pixels + RUN - 1) // RUN
    w_sum = w.sum()
    for task in prange(n * runs):
        b, lo, hi = _run(task, runs, pixels)
        a, s = coefs[task, 0], coefs[task, 1]
        for j in range(hi - lo):
            i = lo + j
            g = scale[b, i] if per_pixel else scale[0, 0]
            keep = t[b, i] != ignore
            c = t[b, i] if keep else 0
            a[j] = (1.0 - eps) * w[c] * g if keep else 0.0
            s[j] = (eps / k) * g if keep else 0.0
        for c in range(k):
            row, out = p[b, c, lo:hi], dz[b, c, lo:hi]
            if eps != 0.0:
                for j in range(hi - lo):
                    out[j] = row[j] * (a[j] + s[j] * w_sum) - s[j] * w[c]
            else:
                for j in range(hi - lo):
                    out[j] = row[j] * a[j]
        for j in range(hi - lo):
            i = lo + j
            if t[b, i] != ignore:
                dz[b, t[b, i], i] -= a[j]


def _class_weights(weight, k, dtype):
    return np.ones(k, dtype) if weight is None else np.ascontiguousarray(weight, dtype=dtype)


def cross_entropy_forward(z, target, weight, label_smoothing, ignore_index):
    """``ReferenceKernels.cross_entropy_forward`` for (N, K, H, W) logits (``supported``).

    Args:
        z: The logits (N, K, H, W).
        target: int64 classes or ``ignore_index``, (N, H, W).
        weight: (K,) class weights, or None.
        label_smoothing: $\\epsilon$.
        ignore_index: The ignored target value.

    Returns:
        ``(losses, w_t, p)``: (N, H, W), (N, H, W) and the softmax (N, K, H, W).
    """
    n, k, h, wd = z.shape
    z3 = np.ascontiguousarray(z).reshape(n, k, h * wd)
    t = np.ascontiguousarray(target, dtype=np.int64).reshape(n, h * wd)
    p = np.empty_like(z3)
    m = np.empty((n, h * wd), z.dtype)
    fused = z.dtype == np.float32  # float64 keeps NumPy's exponential, a pass of its own
    _shift(z3, p, m, fused)
    if not fused:
        np.exp(p, out=p)
    losses, w_t = np.empty_like(m), np.empty_like(m)
    _normalise(p, z3, m, t, _class_weights(weight, k, z.dtype), float(label_smoothing),
               int(ignore_index), losses, w_t)
    return losses.reshape(n, h, wd), w_t.reshape(n, h, wd), p.reshape(n, k, h, wd)


def cross_entropy_backward(p, target, weight, label_smoothing, ignore_index, scale):
    """``ReferenceKernels.cross_entropy_backward`` for the softmax of (N, K, H, W) logits.

    Args:
        p: The forward's softmax (N, K, H, W).
        target: The forward's target (N, H, W).
        weight: (K,) class weights, or None.
        label_smoothing: $\\epsilon$.
        ignore_index: The ignored target value.
        scale: A number, or an (N, H, W) array: the upstream gradient of each pixel's loss.

    Returns:
        $\\partial L / \\partial z$ (N, K, H, W).
    """
    n, k, h, wd = p.shape
    p3 = np.ascontiguousarray(p).reshape(n, k, h * wd)
    t = np.ascontiguousarray(target, dtype=np.int64).reshape(n, h * wd)
    g = np.asarray(scale, dtype=p.dtype)
    per_pixel = g.ndim > 0
    g = np.ascontiguousarray(g.reshape(n, h * wd) if per_pixel else g.reshape(1, 1))
    runs = -(-(h * wd) // RUN)
    coefs = np.empty((n * runs, 2, RUN), p.dtype)
    dz = np.empty_like(p3)
    _backward(p3, t, _class_weights(weight, k, p.dtype), float(label_smoothing),
              int(ignore_index), g, per_pixel, coefs, dz)
    return dz.reshape(n, k, h, wd)
