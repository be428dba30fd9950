"""Matrix products in Numba loops that beat a Haswell-kernel BLAS on MobileNetV2's shapes.

**Why not BLAS.** An OpenBLAS pinned to its Haswell kernels (``OPENBLAS_CORETYPE``, as
on the machine these loops were written on) runs FMAs that hold 8 float32. Numba
compiles for the CPU it runs on; on one with AVX-512 the same multiply-add takes 16.
On such a CPU two loop shapes turn that into speed (float32, the same thread count as
BLAS; the GFLOP/s of both, shape by shape: docs/kernels.md, "Matrix products").

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
  sum_n gy[n] (Co, P) @ x[n].T, the pixels P as K: ahead of BLAS on every such layer
  measured, expansions and projections, 112x112 down to 28x28. Also the stem's, over
  its im2col columns;
* the classifier's forward, y = x @ W.T (``.matmul``).

Each 4x4 block ends with 16 sums across vector lanes, a cost that a short sum does
not pay back: at K = 64 and K = 96 BLAS's packed kernel was ahead, so ``.matmul``
uses this loop only from ``MIN_SUM`` terms on.

**The broadcast form** (``columns_nn``)::

    out (M, P) = a (M, K) @ x (K, P)            x and out contiguous along P

the per-image products of a pointwise convolution on NCHW planes (forward, and
backward-input with a = W.T), the stem's forward and the classifier's gradients. It is
``.tile``'s register block: a 6 x 64 block of ``out`` held in 24 vector
registers for the whole sum, each step 4 vector loads of x and 6 broadcasts of ``a`` for
24 FMAs. An earlier loop written in Numba (four rows of ``out``, eight terms per pass,
reloading and storing ``out`` on every pass; chapter 2.7 shows it) was slower on every
one of these shapes than the block, with a prefetch of x's next strip: by far on the 56
and 28 px planes, a little on the 112 px ones, which are bound by memory either way
(figures: docs/kernels.md, "Matrix products").

**Determinism.** Every entry of ``out`` is summed whole, in an order fixed by the
compiled loop and the shapes, by one thread: the same bits on every run and for any
thread count. The dot-product form shares out blocks of four rows of ``out``, and
sums over b, then K in chunks of ``CHUNK`` (the 8 rows a step reads stay in L1 and
L2 while the block's columns sweep past them). The broadcast form sums each entry in
order of K, one FMA per term (``.tile``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (starts Numba's pool passive)
from .tile import product

_REASSOC = {"reassoc", "contract"}  # only these fast-math flags; see the module
_JIT = dict(cache=CACHE, fastmath=_REASSOC, boundscheck=False)
_JIT_NN = dict(cache=CACHE, fastmath=False, boundscheck=False)  # no sums to split into lanes
CHUNK = 2048
"""Terms of K summed per pass of a 4x4 block (measured 1024-4096 alike; 2048 best)."""
MIN_SUM = 128
"""The dot-product form for sums of at least this many terms (see the module)."""


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
    """How many blocks of (up to) four rows ``m`` rows make."""
    return (m + 3) // 4


@njit(inline="always", **_JIT)
def _block_products(a, c, out, i, k0, k1):
    """out[i:i + 4] += a[i:i + 4, k0:k1] @ c[:, k0:k1].T (fewer rows at the bottom edge)."""
    m, n = a.shape[0], c.shape[0]
    rows = min(4, m - i)
    full = n - n % 4 if rows == 4 else 0  # columns done in 4x4 blocks
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


@njit(**_JIT)
def row_block(a3, c3, out, blk):
    """Rows ``4*blk`` to ``4*blk + 3`` of ``out`` (fewer at the bottom edge): their sum over b.

    K runs in chunks of ``CHUNK``, in order.

    Args:
        a3: (B, M, K).
        c3: (B, N, K).
        out: (M, N), the rows written.
        blk: The block of rows.
    """
    k = a3.shape[2]
    i = 4 * blk
    out[i:i + 4] = 0
    for b in range(a3.shape[0]):
        for k0 in range(0, k, CHUNK):
            _block_products(a3[b], c3[b], out, i, k0, min(k, k0 + CHUNK))


@njit(**_JIT)
def add_products(a, c, out, k0, k1):
    """``out (M, N) += a[:, k0:k1] @ c[:, k0:k1].T``, in the 4x4 blocks above.

    For a caller that has those columns of a and c in cache for another product.

    Args:
        a: (M, K).
        c: (N, K).
        out: (M, N), added to.
        k0: The first column of K.
        k1: The column after the last.
    """
    for i in range(0, a.shape[0], 4):
        _block_products(a, c, out, i, k0, k1)


@njit(**_JIT)
def column_parts(m, n):
    """Parts the N columns of ``out`` are cut into: two where the M rows are at most two
    blocks of four (the classifier's forward at batch 1 to 8), so that each thread reads
    half of c (the weight, 5 MB at MobileNetV2's classifier: read from memory, not
    computed on, is what takes the time there) instead of all of it for its block of rows,
    or waiting; else one. A function of the shapes only.

    Args:
        m: M, the rows of out.
        n: N, its columns.

    Returns:
        1 or 2.
    """
    return 2 if row_blocks(m) <= 2 and n >= 8 else 1


@njit(inline="always", **_JIT)
def _column_cut(n, part, parts):
    """Column ``part`` of ``parts`` starts here: a multiple of four (the 4x4 blocks fall
    where they fall in one pass over all N, so each output is the same sum, to the bit)."""
    return n if part == parts else n * part // parts // 4 * 4


@njit(parallel=True, **_JIT)
def _blocks_parallel(a3, c3, out):
    parts = column_parts(a3.shape[1], c3.shape[1])
    blocks = row_blocks(a3.shape[1])
    if parts == 1:
        for t in prange(blocks):
            # int64: Numba types a prange index as int64, then compiles the parallel loop
            # with an unsigned one, and row_block would be compiled for each (a second
            # apiece, cold)
            row_block(a3, c3, out, np.int64(t))
    else:  # a task per part of the columns, all the row blocks in it: c read once
        n = c3.shape[1]
        for part in prange(parts):
            for blk in range(blocks):
                _row_block_columns(a3, c3, out, np.int64(blk), _column_cut(n, part, parts),
                                   _column_cut(n, part + 1, parts))
    return out


@njit(**_JIT)
def _row_block_columns(a3, c3, out, blk, j0, j1):
    """``row_block`` on columns [j0, j1) of out. c3[b][j0:j1] keeps c's rows typed
    contiguous, so that the dot products compile (and round) as in ``row_block``."""
    k = a3.shape[2]
    i = 4 * blk
    part = out[:, j0:j1]
    part[i:i + 4] = 0
    for b in range(a3.shape[0]):
        c = c3[b][j0:j1]
        for k0 in range(0, k, CHUNK):
            _block_products(a3[b], c, part, i, k0, min(k, k0 + CHUNK))


def sum_of_products(a3: np.ndarray, c3: np.ndarray) -> np.ndarray:
    """``out (M, N) = sum_b a3[b] @ c3[b].T``, on Numba's pool.

    C-contiguous operands (other strides work, slower).

    Args:
        a3: (B, M, K).
        c3: (B, N, K).

    Returns:
        out (M, N).
    """
    return _blocks_parallel(a3, c3, np.empty((a3.shape[1], c3.shape[1]), a3.dtype))


# ------------------------------------------------------------- the NN form
# out (M, P) = a (M, K) @ x (K, P), x and out contiguous along P: the per-image GEMMs of
# a pointwise convolution on NCHW planes (forward, and backward-input with a = W.T).

COLUMNS = 2048
"""Columns of x and out per call from the per-image callers, which run an epilogue on
each such block while it is in cache (``.pointwise``)."""


@njit(inline="always", **_JIT_NN)
def columns_nn(a, x, out, j0, j1, stream=False):
    """``out[:, j0:j1] = a (M, K) @ x[:, j0:j1]``, ``.tile``'s register blocks.

    Each strip of x's columns is held in L1 while the blocks of rows pass. Inlined, as
    ``product`` is: compiled apart, it had a version per literal argument.

    Args:
        a: (M, K), any strides.
        x: (K, P), contiguous rows.
        out: (M, P), contiguous rows.
        j0: The first column.
        j1: The column after the last.
        stream: Write ``out`` with non-temporal stores (see ``product``).
    """
    product(a, x, out, 0, a.shape[0], j0, j1, False, stream)
