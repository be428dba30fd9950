"""Matrix products in Numba loops that beat this machine's BLAS on MobileNetV2's shapes.

**Why not BLAS.** This machine's OpenBLAS is pinned to its Haswell kernels
(``OPENBLAS_CORETYPE``), whose FMAs hold 8 float32. Numba compiles for the CPU it
runs on; on one with AVX-512 the same multiply-add takes 16. Two loop shapes
that LLVM vectorises well turn that into speed (float32, same thread count,
GFLOP/s, BLAS -> these loops, measured on this 2-core AVX-512 machine).

**The dot-product form** (``sum_of_products``)::

    out (M, N) = sum_b  a[b] (M, K) @ c[b].T (K, N)        a: (B, M, K), c: (B, N, K)

Both operands are read along K, the axis they are contiguous in: every entry of
``out`` is a dot product of a row of ``a`` with a row of ``c``. One pass along K
computes a 4x4 block of ``out``: each step loads four values of ``a`` and four of
``c`` and makes 16 multiply-adds into 16 running sums. LLVM turns each running sum
into a vector register of partial sums (added across once at the end), so a step
is 8 vector loads for 16 vector FMAs, and 16 sums + 8 operands fit in AVX-512's 32
registers. Splitting a sum into lanes changes the order of the additions, which
LLVM does only when told the order may change: ``fastmath={"reassoc", "contract"}``
here, and nothing else of fast-math. Used for

* the weight gradient of a pointwise convolution on NCHW planes, gw (Co, Ci) =
  sum_n gy[n] (Co, P) @ x[n].T, the pixels P as K. 8 images: 16->96 at 112x112
  121 -> 173, 32->16 103 -> 192; 24->144 at 56x56 181 -> 219, 144->24 136 -> 166;
  32->192 at 28x28 171 -> 264, 192->32 137 -> 257. Also the stem's, over its im2col
  columns (2.38 -> 1.61 ms at 224 px batch 8);
* a channels-last pointwise convolution (:mod:`.numba_pointwise_rows`): forward
  y (M, Co) = x (M, Ci) @ W.T, and backward-input with W.T (Ci, Co) copied once.
  Forward, ms: 1568 rows 576->96 0.78 -> 0.59, 384->96 0.54 -> 0.45; 392 rows
  960->160 0.59 -> 0.39, 960->320 1.09 -> 0.77, 320->1280 1.44 -> 1.22. Backward-input
  gains where the sum is the longer side (96->576: 0.78 -> 0.63 ms; 64->384: 0.43 ->
  0.34) and loses a little where it is not (392 rows, 960->320: 1.07 -> 1.22); the
  training steps as a whole gained (``MIN_SUM``).

Each 4x4 block ends with 16 sums across vector lanes, a cost that a short sum does
not pay back: at K = 64 (207 -> 172 GFLOP/s) and K = 96 (1568 rows, 96 -> 576: 0.78 ->
1.08 ms) BLAS's packed kernel is ahead, so the channels-last callers use this loop only
from ``MIN_SUM`` terms on.

**The broadcast form** (``columns_nn``)::

    out (M, P) = a (M, K) @ x (K, P)            x and out contiguous along P

the per-image products of a pointwise convolution on NCHW planes (forward, and
backward-input with a = W.T). Here the sum runs across rows of x, so the vector
runs along P: four rows of ``out`` take eight terms per pass,

    out[i + r, j] += sum_{t < 8} a[i + r, p + t] * x[p + t, j]      r < 4, vectorised over j,

eight vector loads of x, four loads and four stores of ``out`` for 32 FMAs. Two
things make LLVM vectorise it: the 32 values of ``a`` are an 8-tuple per row
(registers; reloaded from memory in the loop, because ``a`` might overlap ``out``),
and the runs of x and of ``out`` are slices of one flat array each, so the overlap
test before the loop is one per array, not one per pair of rows. Measured, one
image per thread, 8 images, GFLOP/s: 16->96 at 112x112 84 -> 162, 32->16 102 -> 170,
144->24 at 56x56 139 -> 187, 24->144 183 -> 200, 192->32 at 28x28 146 -> 208.

**Determinism.** Every entry of ``out`` is summed whole, in an order fixed by the
compiled loop and the shapes, by one thread: the same bits on every run and for any
thread count. The dot-product form shares out blocks of four rows of ``out``, and
sums over b, then K in chunks of ``CHUNK`` (the 8 rows a step reads stay in L1 and
L2 while the block's columns sweep past them).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import numba_pool  # noqa: F401  (starts Numba's pool passive)

_REASSOC = {"reassoc", "contract"}  # only these fast-math flags; see the module
_JIT = dict(cache=True, fastmath=_REASSOC, boundscheck=False)
_JIT_NN = dict(cache=True, fastmath=False, boundscheck=False)  # no sums to split into lanes
CHUNK = 2048
"""Terms of K summed per pass of a 4x4 block (measured 1024-4096 alike; 2048 best)."""
MIN_SUM = 128
"""The channels-last callers use this loop for sums of at least this many terms, BLAS
under it. A/B, training step: 224 px batch 8 158.3 -> 155.8 ms, 32 px batch 64 40.0 ->
38.8 ms (against BLAS for every sum)."""


@njit(inline="always", **_JIT)
def _dot_4x4(a, c, i, j, k0, k1):
    """The 16 dot products a[i + r, k0:k1] . c[j + s, k0:k1], r, s in 0..3, as a tuple."""
    a0, a1, a2, a3 = a[i, k0:k1], a[i + 1, k0:k1], a[i + 2, k0:k1], a[i + 3, k0:k1]
    c0, c1, c2, c3 = c[j, k0:k1], c[j + 1, k0:k1], c[j + 2, k0:k1], c[j + 3, k0:k1]
    z = a.dtype.type(0)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = z
    for q in range(k1 - k0):
        x0, x1, x2, x3 = a0[q], a1[q], a2[q], a3[q]
        y0, y1, y2, y3 = c0[q], c1[q], c2[q], c3[q]
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
        s20 += x2 * y0
        s21 += x2 * y1
        s22 += x2 * y2
        s23 += x2 * y3
        s30 += x3 * y0
        s31 += x3 * y1
        s32 += x3 * y2
        s33 += x3 * y3
    return (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)


@njit(inline="always", **_JIT)
def _dot_4x1(a, c_row, i, k0, k1):
    """The 4 dot products a[i + r, k0:k1] . c_row, for the columns left of a 4x4 block."""
    a0, a1, a2, a3 = a[i, k0:k1], a[i + 1, k0:k1], a[i + 2, k0:k1], a[i + 3, k0:k1]
    z = a.dtype.type(0)
    s0 = s1 = s2 = s3 = z
    for q in range(k1 - k0):
        y = c_row[q]
        s0 += a0[q] * y
        s1 += a1[q] * y
        s2 += a2[q] * y
        s3 += a3[q] * y
    return s0, s1, s2, s3


@njit(inline="always", **_JIT)
def _dot(a_row, c_row):
    """One dot product, for the rows left over from the blocks of four."""
    s = a_row.dtype.type(0)
    for q in range(a_row.shape[0]):
        s += a_row[q] * c_row[q]
    return s


@njit(**_JIT)
def row_blocks(m):
    """How many blocks of (up to) four rows an M-row ``out`` has."""
    return (m + 3) // 4


@njit(**_JIT)
def row_block(a3, c3, out, blk):
    """Rows 4*blk .. 4*blk + 3 of ``out`` (fewer at the bottom edge): their sum over b,
    K in chunks of ``CHUNK``, in order."""
    nb, m, k = a3.shape
    n = c3.shape[1]
    i = 4 * blk
    rows = min(4, m - i)
    full = n - n % 4 if rows == 4 else 0  # columns done in 4x4 blocks
    out[i:i + rows] = 0
    for b in range(nb):
        a, c = a3[b], c3[b]
        for k0 in range(0, k, CHUNK):
            k1 = min(k, k0 + CHUNK)
            for j in range(0, full, 4):
                s = _dot_4x4(a, c, i, j, k0, k1)
                for r in range(4):
                    o = out[i + r]
                    o[j] += s[4 * r]
                    o[j + 1] += s[4 * r + 1]
                    o[j + 2] += s[4 * r + 2]
                    o[j + 3] += s[4 * r + 3]
            for j in range(full, n):
                if rows == 4:
                    s0, s1, s2, s3 = _dot_4x1(a, c[j, k0:k1], i, k0, k1)
                    out[i, j] += s0
                    out[i + 1, j] += s1
                    out[i + 2, j] += s2
                    out[i + 3, j] += s3
                else:
                    for r in range(i, i + rows):
                        out[r, j] += _dot(a[r, k0:k1], c[j, k0:k1])


@njit(parallel=True, **_JIT)
def _blocks_parallel(a3, c3, out):
    for blk in prange(row_blocks(a3.shape[1])):
        row_block(a3, c3, out, blk)
    return out


def sum_of_products(a3: np.ndarray, c3: np.ndarray) -> np.ndarray:
    """out (M, N) = sum_b a3[b] @ c3[b].T for a3 (B, M, K), c3 (B, N, K), C-contiguous
    (other strides work, slower), on Numba's pool."""
    return _blocks_parallel(a3, c3, np.empty((a3.shape[1], c3.shape[1]), a3.dtype))


# ------------------------------------------------------------- the NN form
# out (M, P) = a (M, K) @ x (K, P), x and out contiguous along P: the per-image GEMMs of
# a pointwise convolution on NCHW planes (forward, and backward-input with a = W.T).

COLUMNS = 2048
"""Columns of x and out per block: the block's K rows of x stay in L2 while every row of
out takes its turn (measured 1024-4096 alike)."""


@njit(inline="always", **_JIT_NN)
def _eight(a, r, p):
    """a[r, p:p + 8] as a tuple: values LLVM keeps in registers, where loads from ``a``
    inside the loop would have to be repeated (``a`` might overlap ``out``)."""
    return (a[r, p], a[r, p + 1], a[r, p + 2], a[r, p + 3],
            a[r, p + 4], a[r, p + 5], a[r, p + 6], a[r, p + 7])


@njit(inline="always", **_JIT_NN)
def _dot8(w, u):
    """w . u for two 8-tuples, as two sums of four."""
    return ((w[0] * u[0] + w[1] * u[1] + w[2] * u[2] + w[3] * u[3])
            + (w[4] * u[4] + w[5] * u[5] + w[6] * u[6] + w[7] * u[7]))


@njit(inline="always", **_JIT_NN)
def _eight_runs(f, row, width, j0, n):
    """Rows row .. row + 7 of a flat (rows, width) array, columns j0 .. j0 + n - 1: slices
    of one array, which LLVM checks for overlap with ``out`` as one group."""
    s = row * width + j0
    return (f[s:s + n], f[s + width:s + width + n], f[s + 2 * width:s + 2 * width + n],
            f[s + 3 * width:s + 3 * width + n], f[s + 4 * width:s + 4 * width + n],
            f[s + 5 * width:s + 5 * width + n], f[s + 6 * width:s + 6 * width + n],
            f[s + 7 * width:s + 7 * width + n])


@njit(**_JIT_NN)
def _four_rows(a, xf, of, width, i, j0, j1):
    """out[i:i + 4, j0:j1] = a[i:i + 4] @ x[:, j0:j1] (x, out given flat, row width
    ``width``): eight terms of the sum per pass, each x value loaded once for four rows."""
    k, n = a.shape[1], j1 - j0
    s = i * width + j0
    o0, o1 = of[s:s + n], of[s + width:s + width + n]
    o2, o3 = of[s + 2 * width:s + 2 * width + n], of[s + 3 * width:s + 3 * width + n]
    o0[:] = 0
    o1[:] = 0
    o2[:] = 0
    o3[:] = 0
    for p in range(0, k - k % 8, 8):
        x0, x1, x2, x3, x4, x5, x6, x7 = _eight_runs(xf, p, width, j0, n)
        w0, w1, w2, w3 = _eight(a, i, p), _eight(a, i + 1, p), _eight(a, i + 2, p), _eight(a, i + 3, p)
        for j in range(n):
            u = (x0[j], x1[j], x2[j], x3[j], x4[j], x5[j], x6[j], x7[j])
            o0[j] += _dot8(w0, u)
            o1[j] += _dot8(w1, u)
            o2[j] += _dot8(w2, u)
            o3[j] += _dot8(w3, u)
    for p in range(k - k % 8, k):  # the terms left over from the groups of eight
        xp = xf[p * width + j0:p * width + j1]
        w0, w1, w2, w3 = a[i, p], a[i + 1, p], a[i + 2, p], a[i + 3, p]
        for j in range(n):
            o0[j] += w0 * xp[j]
            o1[j] += w1 * xp[j]
            o2[j] += w2 * xp[j]
            o3[j] += w3 * xp[j]


@njit(**_JIT_NN)
def _one_row(a, xf, of, width, i, j0, j1):
    """out[i, j0:j1] = a[i] @ x[:, j0:j1]: ``_four_rows`` for the rows left over."""
    k, n = a.shape[1], j1 - j0
    o = of[i * width + j0:i * width + j1]
    o[:] = 0
    for p in range(0, k - k % 8, 8):
        x0, x1, x2, x3, x4, x5, x6, x7 = _eight_runs(xf, p, width, j0, n)
        w = _eight(a, i, p)
        for j in range(n):
            o[j] += _dot8(w, (x0[j], x1[j], x2[j], x3[j], x4[j], x5[j], x6[j], x7[j]))
    for p in range(k - k % 8, k):
        xp, wp = xf[p * width + j0:p * width + j1], a[i, p]
        for j in range(n):
            o[j] += wp * xp[j]


@njit(**_JIT_NN)
def columns_nn(a, x, out, j0, j1):
    """out[:, j0:j1] = a (M, K) @ x[:, j0:j1] for x (K, P) and out (M, P), both C-contiguous
    (``a`` may have any strides: its values are read once per block of eight terms)."""
    m, width = a.shape[0], x.shape[1]
    xf, of = x.reshape(-1), out.reshape(-1)
    for i in range(0, m - m % 4, 4):
        _four_rows(a, xf, of, width, i, j0, j1)
    for i in range(m - m % 4, m):
        _one_row(a, xf, of, width, i, j0, j1)
