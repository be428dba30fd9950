r"""Per-pixel softmax cross-entropy in three passes forward and one backward (the numba set's
``cross_entropy_*`` on (N, K, H, W) logits).

``ReferenceKernels.cross_entropy_forward`` writes the loss as whole-array NumPy: the maximum
over the classes, the shift, the exponential, the sum, the logarithm, the log-softmax, the
pick of each pixel's class, each one a pass over all K planes, and the backward as many
again (the exponential of the saved log-softmax, the scaling, a one-hot array). A
segmentation step's logits are large (4 images of 11 classes at 256 px: 2.9 million values,
11.5 MB in float32), so those passes, not the arithmetic, are its cost. Here each pass
works on a run of ``RUN`` pixels of one image at a time, whose K class rows stay in cache:

* forward: a Numba pass writes $e = z - \max_k z$ (and keeps the maximum); NumPy's
  exponential then runs over e in place (vectorised: Numba's own ``exp``, without Intel's
  SVML library, is one scalar call per value and was measured several times slower); a
  second Numba pass sums each pixel's $e^{z_k - \max z}$, divides e by the sum into the
  softmax $p$ (saved for the backward) and writes each pixel's loss and $w_{t_i} m_i$;
* backward: one pass, $\partial L / \partial z = p \cdot a_i$ (plus the smoothing term)
  with $a_i$ subtracted at the pixel's own class, as ``cross_entropy_backward`` derives.

The formulas are the reference's; the softmax is $e / \sum e$ rather than
$\exp(\log p)$, which differs in the last bit. Each pixel is computed by one task alone, so
the result is the same at any number of threads.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

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


@njit(parallel=True, **_JIT)
def _shift(z, e, m):
    """``m[b, i] = max_k z[b, k, i]``, ``e[b, k, i] = z[b, k, i] - m[b, i]``."""
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
    _shift(z3, p, m)
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
