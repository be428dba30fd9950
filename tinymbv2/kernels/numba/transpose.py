"""Transposing a matrix in blocks held in vector registers.

The channels-last pointwise forward, ``y (M, Co) = x (M, Ci) @ W.T``, needs W.T with
contiguous rows for the register blocks of ``.tile``, and W (Co, Ci) has them
the other way round, so each strip of W.T is copied first. Element by element, such a
copy reads along one matrix and writes across the other, a value at a time: on the
small layers it took more than a quarter of the forward.

Here an L x L block (L = the values in one vector register: 16 float32 with AVX-512) is
loaded as L row vectors, transposed in registers and stored as L row vectors. A transpose
moves element (r, c) to (c, r): it swaps the bits of the row and the column index. Each
step swaps one bit s (s = L/2, L/4, ..., 1) between the pairs of rows i and i + s:

    new row i     = [row i at the columns with bit s clear | row i+s moved down by s]
    new row i + s = [row i moved up by s | row i+s at the columns with bit s set]

one two-input shuffle (``shufflevector``, ``vpermt2ps``) per new row, L log2(L) in all:
64 for a 16 x 16 block, against 256 scalar loads and stores: several times faster
than the element-by-element copy on W's shapes (figures: docs/kernels.md, "Matrix
products").

``transpose_images`` does the same for every image of a batch: the copies between the
NCHW and the channels-last layouts of ``.layout``; ``transpose_matrix`` for one large
matrix, in column blocks shared out to the threads (a filter bank's (Co, K) weights).
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .cache import CACHE
from . import pool  # noqa: F401  (the one-pool set-up)
from .llvm import I32, Emit, array_data, as_i64, lanes

_JIT = dict(cache=CACHE, boundscheck=False)
MATRIX_BLOCK = 96
"""Source columns per task of ``transpose_matrix``."""


def _swap_masks(lanes: int, s: int):
    """The two shuffle masks of the step that swaps bit s, over the 2L lanes of (a, b)."""
    low = [c if not c & s else lanes + c - s for c in range(lanes)]
    high = [c + s if not c & s else lanes + c for c in range(lanes)]
    return low, high


@intrinsic
def _block(typingctx, src, src_at, src_row, dst, dst_at, dst_row):
    """``dst[dst_at + c * dst_row + r] = src[src_at + r * src_row + c]`` for r, c < L."""
    dtype = src.dtype
    if dtype not in (types.float32, types.float64) or dst.dtype != dtype:
        return None
    sig = types.void(src, src_at, src_row, dst, dst_at, dst_row)

    def codegen(context, builder, signature, args):
        e = Emit(context, builder, dtype)
        n = e.lanes
        src_data, dst_data = (array_data(context, builder, signature.args[i], args[i]) for i in (0, 3))
        src_at, src_row, dst_at, dst_row = as_i64(builder, [args[i] for i in (1, 2, 4, 5)])
        align = dtype.bitwidth // 8
        rows = [builder.load(e.pointer(src_data, e.at(src_at, e.times(r, src_row))), align=align)
                for r in range(n)]
        s = n // 2
        while s:
            low, high = (ir.Constant(ir.VectorType(I32, n), m) for m in _swap_masks(n, s))
            new = list(rows)
            for i in range(n):
                if not i & s:
                    new[i] = builder.shuffle_vector(rows[i], rows[i + s], low)
                    new[i + s] = builder.shuffle_vector(rows[i], rows[i + s], high)
            rows, s = new, s // 2
        for c in range(n):
            builder.store(rows[c], e.pointer(dst_data, e.at(dst_at, e.times(c, dst_row))),
                          align=align)
        return context.get_dummy_value()

    return sig, codegen


@njit(**_JIT)
def transpose_into(src, r0, r1, c0, c1, dst):
    """``dst[c - c0, r - r0] = src[r, c]`` for the block of rows [r0, r1) and columns [c0, c1).

    The block's transpose goes into the top left of dst. Whole L x L blocks in registers
    (``_block``), the edges value by value.

    Args:
        src: The source matrix, contiguous rows.
        r0: The first row.
        r1: The row after the last.
        c0: The first column.
        c1: The column after the last.
        dst: The destination, contiguous rows.

    Raises:
        ValueError: A matrix without contiguous rows.
    """
    size = src.itemsize
    if (src.size > src.shape[0] and src.strides[1] != size) or (
            dst.size > dst.shape[0] and dst.strides[1] != size):
        raise ValueError("transpose_into: src and dst need contiguous rows")
    n = lanes(src)
    rows, cols = r1 - r0, c1 - c0
    whole_r, whole_c = rows - rows % n, cols - cols % n
    src_row, dst_row = src.strides[0] // size, dst.strides[0] // size
    for i in range(0, whole_r, n):
        for j in range(0, whole_c, n):
            _block(src, (r0 + i) * src_row + c0 + j, src_row, dst, j * dst_row + i, dst_row)
    for r in range(rows):  # the columns past the whole blocks, then the rows below them
        for c in range(whole_c, cols):
            dst[c, r] = src[r0 + r, c0 + c]
    for r in range(whole_r, rows):
        for c in range(whole_c):
            dst[c, r] = src[r0 + r, c0 + c]


@njit(parallel=True, **_JIT)
def transpose_images(src, dst):
    """``dst[b] = src[b].T`` for every image b, one image per task.

    Args:
        src: (B, R, C), contiguous rows.
        dst: (B, C, R), contiguous rows.
    """
    for b in prange(src.shape[0]):
        transpose_into(src[b], 0, src.shape[1], 0, src.shape[2], dst[b])


@njit(parallel=True, **_JIT)
def transpose_matrix(src, dst):
    """``dst = src.T`` for one matrix, in tasks of ``MATRIX_BLOCK`` of src's columns.

    Args:
        src: (R, C), contiguous rows.
        dst: (C, R), contiguous rows, written.
    """
    cols = src.shape[1]
    for blk in prange((cols + MATRIX_BLOCK - 1) // MATRIX_BLOCK):
        c0, c1 = blk * MATRIX_BLOCK, min(cols, (blk + 1) * MATRIX_BLOCK)
        transpose_into(src, 0, src.shape[0], c0, c1, dst[c0:c1])
