"""The weight gradient of MobileNetV2's stem on NCHW planes (a dense 3x3 convolution,
stride 2, padding 1), from *tap planes*, band by band (numba).

Output (oh, ow) of the filter reads the zero-padded input xp at (2 oh + i, 2 ow + j). For
each input channel, parity p of the padded row and column tap j, the tap plane

    T[p, j][r * Wo + o] = xp[2 r + p, 2 o + j]          (r = 0 .. Ho, o < Wo)

is laid out like an output plane, so tap (i, j) of every output is one contiguous run:
output ``q = oh * Wo + ow`` reads ``T[i % 2, j][q + (i // 2) * Wo]``, and

    gw[co, ci, i, j] = sum_q gy[co][q] * T_ci[i % 2, j][q + (i // 2) * Wo]

is a dot product of contiguous runs, straight on gy's planes: no column matrix (im2col's 27
values per output pixel, 10.8 MB at 224 px batch 8, read once per block of four output
channels by ``..gemm``'s loop) and no copy of gy. One loop gives four output
channels against a kernel row's three taps (twelve running sums, seven loads for twelve
multiply-adds). The six tap planes of a channel are 1.5 times its input plane, so a task
builds them for one *band* of output rows of one image (``band_rows``: the band's tap
planes and its rows of the Co gradient planes within ``BAND_BYTES``) and sums over them
while they are in L2.

The sums are SIMD partial sums (like every weight gradient of this set), one set per band,
added in band order at the end; bands are cut by the shapes alone, so results are
bit-identical across runs and thread counts. On the stem at 224 px this ran well ahead
of im2col and the dot-product loop, with bands of about 11 rows ahead of thinner and
thicker ones. The forward stays im2col + the register-block GEMM (``..dense``): written
this way, with one output channel per loop (nine loads for nine multiply-adds), it was
slower (figures: docs/kernels.md, "The dense convolution (the stem)").
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from .. import pool  # noqa: F401  (the one-pool set-up)

_JIT = dict(cache=CACHE, fastmath=False)
_JIT_REDUCE = dict(cache=CACHE, fastmath={"reassoc", "contract"})

BAND_BYTES = 256 << 10
"""A band's tap planes plus its rows of the Co gradient planes: a quarter of a 1 MB L2,
the size it was tuned on (11 rows of 112 for MobileNetV2's stem), so a band stays in
the L2 of current x86 cores. Read at each call."""
_SCRATCH_SETS = 16
"""Bands are run in at most this many chunks, each with one set of tap planes allocated
before the parallel loop (allocated inside it, scratch made loops several times slower,
see ``kernels.numba.chunks``)."""


def supported(w_shape, stride, padding) -> bool:
    """Is this the geometry computed here: a (Co, Ci, 3, 3) filter, stride 2, padding 1?

    Args:
        w_shape: The weight's shape.
        stride: (sh, sw).
        padding: (ph, pw).

    Returns:
        Whether ``band_weight_gradients`` computes it.
    """
    return tuple(w_shape[2:]) == (3, 3) and tuple(stride) == (2, 2) and tuple(padding) == (1, 1)


@njit(**_JIT)
def band_rows(ci, co, ho, wo, itemsize, budget):
    """The output rows per band within ``budget`` bytes, at least 1.

    A band holds Ci channels' six tap planes of rows + 1 rows, and the Co planes' rows; the
    rows are then evened out over the plane.

    Args:
        ci: Ci, the input channels.
        co: Co, the output channels.
        ho: Ho, the output height.
        wo: Wo, the output width.
        itemsize: Bytes per value.
        budget: The bytes a band may take.

    Returns:
        The rows per band.
    """
    per_row = (6 * ci + co) * wo * itemsize
    rows = max(1, min(ho, (budget - 6 * ci * wo * itemsize) // per_row))
    bands = (ho + rows - 1) // rows
    return (ho + bands - 1) // bands


@njit(**_JIT)
def _tap_rows(x, r0, r1, wo, t):
    """Rows r0 <= r < r1 of one channel's tap planes, t[p, j, (r - r0) Wo + o] =
    xp[2 r + p, 2 o + j], from its input plane x (H, W) (xp: x zero-padded by 1)."""
    h, wd = x.shape
    zero = x.dtype.type(0)
    inside = wd // 2  # outputs o whose column 2o + 1 lies inside the row
    for p in range(2):
        for r in range(r0, r1):
            row = 2 * r + p - 1  # the input row of padded row 2r + p
            k = (r - r0) * wo
            t0, t1, t2 = t[p, 0, k:k + wo], t[p, 1, k:k + wo], t[p, 2, k:k + wo]
            if row < 0 or row >= h:
                t0[:] = zero
                t1[:] = zero
                t2[:] = zero
                continue
            src = x[row]
            t0[0] = zero  # x[row, -1]: the padding
            for o in range(1, wo):
                t0[o] = src[2 * o - 1]
            for o in range(wo):
                t1[o] = src[2 * o]
            for o in range(inside):
                t2[o] = src[2 * o + 1]
            for o in range(inside, wo):
                t2[o] = zero


@njit(**_JIT)
def _bands(n, ho, rows):
    """(tasks, bands per image): a task is one band of ``rows`` output rows of one image."""
    bands = (ho + rows - 1) // rows
    return n * bands, bands


@njit(**_JIT_REDUCE)
def _weight_sums4(g0, g1, g2, g3, x0, x1, x2, part, o, c, i):
    """``part[o + u, c, i, j] = sum_q g_u[q] * x_j[q]`` for u < 4, j < 3: four output channels
    against one kernel row's three taps, twelve running sums in one loop."""
    zero = part.dtype.type(0)
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = zero
    for q in range(g0.shape[0]):
        a, b, d = x0[q], x1[q], x2[q]
        u0, u1, u2, u3 = g0[q], g1[q], g2[q], g3[q]
        s00 += u0 * a
        s01 += u0 * b
        s02 += u0 * d
        s10 += u1 * a
        s11 += u1 * b
        s12 += u1 * d
        s20 += u2 * a
        s21 += u2 * b
        s22 += u2 * d
        s30 += u3 * a
        s31 += u3 * b
        s32 += u3 * d
    part[o, c, i, 0], part[o, c, i, 1], part[o, c, i, 2] = s00, s01, s02
    part[o + 1, c, i, 0], part[o + 1, c, i, 1], part[o + 1, c, i, 2] = s10, s11, s12
    part[o + 2, c, i, 0], part[o + 2, c, i, 1], part[o + 2, c, i, 2] = s20, s21, s22
    part[o + 3, c, i, 0], part[o + 3, c, i, 1], part[o + 3, c, i, 2] = s30, s31, s32


@njit(**_JIT_REDUCE)
def _weight_sums1(g0, x0, x1, x2, part, o, c, i):
    """``part[o, c, i, j] = sum_q g0[q] * x_j[q]`` for j < 3 (the output channels left over
    after blocks of four)."""
    zero = part.dtype.type(0)
    s0 = s1 = s2 = zero
    for q in range(g0.shape[0]):
        s0 += g0[q] * x0[q]
        s1 += g0[q] * x1[q]
        s2 += g0[q] * x2[q]
    part[o, c, i, 0], part[o, c, i, 1], part[o, c, i, 2] = s0, s1, s2


@njit(parallel=True, **_JIT)
def _backward_weight(gy, x, rows, parts):
    """parts[task] (Co, Ci, 3, 3) = the weight gradient of each band of each image."""
    n, ci, h, wd = x.shape
    co, ho, wo = gy.shape[1], gy.shape[2], gy.shape[3]
    g3 = gy.reshape(n, co, ho * wo)
    tasks, bands = _bands(n, ho, rows)
    sets = min(tasks, _SCRATCH_SETS)
    taps = np.empty((sets, ci, 2, 3, (rows + 1) * wo), x.dtype)
    for s in prange(sets):
        for task in range(tasks * s // sets, tasks * (s + 1) // sets):
            b, r0 = task // bands, task % bands * rows
            r1 = min(ho, r0 + rows)
            m = (r1 - r0) * wo
            t = taps[s]
            for c in range(ci):
                _tap_rows(x[b, c], r0, r1 + 1, wo, t[c])
            q0, q1 = r0 * wo, r1 * wo  # the band in the flat gy planes
            for c in range(ci):
                for i in range(3):
                    k = (i // 2) * wo
                    x0, x1, x2 = (t[c, i % 2, 0, k:k + m], t[c, i % 2, 1, k:k + m],
                                  t[c, i % 2, 2, k:k + m])
                    for o in range(0, co - co % 4, 4):  # g3[b, o, q0:q1]: contiguous views
                        _weight_sums4(g3[b, o, q0:q1], g3[b, o + 1, q0:q1], g3[b, o + 2, q0:q1],
                                      g3[b, o + 3, q0:q1], x0, x1, x2, parts[task], o, c, i)
                    for o in range(co - co % 4, co):
                        _weight_sums1(g3[b, o, q0:q1], x0, x1, x2, parts[task], o, c, i)
    return parts


def band_weight_gradients(gy, x):
    r"""The weight gradient of the 3x3 stride-2 padding-1 convolution, band by band.

    The parts are to be added in order (``dense.sum_in_order``).

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo), C-contiguous, N and Co > 0.
        x: The input (N, Ci, H, W), C-contiguous, of gy's dtype.

    Returns:
        The per-band gradients (bands, Co, Ci, 3, 3).
    """
    n, co, ho, wo = gy.shape
    ci = x.shape[1]
    rows = band_rows(ci, co, ho, wo, x.itemsize, BAND_BYTES)  # read at each call: tests shrink it
    parts = np.empty((_bands(n, ho, rows)[0], co, ci, 3, 3), x.dtype)
    return _backward_weight(gy, x, rows, parts)
