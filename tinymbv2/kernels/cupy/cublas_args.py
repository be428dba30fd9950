r"""cuBLAS's arguments for a batched row-major matrix product: plain Python, no CuPy.

For ``out[n] = op(a[n]) @ op(b[n])`` (``op(m)`` = m.T when its flag is set, a 2-D operand
shared by the whole batch), ``gemm_args`` gives the arguments of one
``cublasGemmStridedBatchedEx`` call on C-contiguous operands as they lie.

cuBLAS is column-major; a row-major (r, c) matrix is, to cuBLAS, its transpose
stored column-major with leading dimension c. So the row-major product
$C = \text{op}(A)\,\text{op}(B)$ (M x N) is computed as the column-major
$C^T = \text{op}(B)^T \text{op}(A)^T$ (N x M, ld N): cuBLAS's "A" is our b and its "B"
is our a, and each transpose flag is kept as it is.

This module imports nothing from the package (nor CuPy), so that the tests check this
bookkeeping on any machine, against a NumPy model of cuBLAS's definition; ``gemm``
makes the call.
"""
from __future__ import annotations

from typing import NamedTuple

OP_N, OP_T = 0, 1  # cublasOperation_t
CUDA_R_32F, CUDA_R_64F = 0, 1  # cudaDataType
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_64F = 68, 70  # cublasComputeType_t (CUDA >= 11)
CUBLAS_GEMM_DEFAULT = -1


class GemmArgs(NamedTuple):
    """The arguments of ``cublasGemmStridedBatchedEx`` (column-major), pointers aside.

    ``A`` is our ``b`` and ``B`` our ``a`` (see the module docstring).
    """

    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    stride_a: int
    ldb: int
    stride_b: int
    ldc: int
    stride_c: int
    batch: int
    out_shape: tuple


def _split(shape, name):
    if len(shape) == 2:
        return None, shape[0], shape[1]
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    raise ValueError(f"batched_matmul: {name} must be 2-D or 3-D, got shape {tuple(shape)}")


def gemm_args(a_shape, trans_a, b_shape, trans_b) -> GemmArgs:
    """cuBLAS arguments for ``out[n] = op(a[n]) @ op(b[n])``, row-major, C-contiguous operands.

    Args:
        a_shape: (B, r, c), or (r, c) for an operand shared by the batch.
        trans_a: ``op(a)`` is its transpose.
        b_shape: (B, r, c), or (r, c).
        trans_b: ``op(b)`` is its transpose.

    Returns:
        The [GemmArgs][tinymbv2.kernels.cupy.cublas_args.GemmArgs].

    Raises:
        ValueError: Batch sizes or inner dimensions that differ, or an operand that is not
            2-D or 3-D.
    """
    ba, ra, ca = _split(a_shape, "a")
    bb, rb, cb = _split(b_shape, "b")
    if ba is not None and bb is not None and ba != bb:
        raise ValueError(f"batched_matmul: batch sizes differ, a {tuple(a_shape)} and b {tuple(b_shape)}")
    batch = ba if ba is not None else (bb if bb is not None else 1)
    m_rows, k_a = (ca, ra) if trans_a else (ra, ca)  # op(a): M x K
    k_b, n_cols = (cb, rb) if trans_b else (rb, cb)  # op(b): K x N
    if k_a != k_b:
        raise ValueError(
            f"batched_matmul: inner dimensions differ: op(a) {m_rows}x{k_a}, op(b) {k_b}x{n_cols}"
        )
    return GemmArgs(
        transa=OP_T if trans_b else OP_N, transb=OP_T if trans_a else OP_N,
        m=n_cols, n=m_rows, k=k_a,
        lda=cb, stride_a=0 if bb is None else rb * cb,
        ldb=ca, stride_b=0 if ba is None else ra * ca,
        ldc=n_cols, stride_c=m_rows * n_cols,
        batch=batch, out_shape=(batch, m_rows, n_cols),
    )
