"""Batched row-major matrix products on the GPU through one cuBLAS call, no copies.

``batched_matmul(a, b, trans_a, trans_b)`` computes, for every batch index n,

    out[n] = op(a[n]) @ op(b[n]),      op(m) = m.T if trans else m

where ``a``/``b`` are C-contiguous CuPy arrays of shape (B, r, c), or (r, c) for
an operand shared by the whole batch (a weight). ``out`` is (B, M, N), C-contiguous.

Why not ``cupy.matmul``: it makes both operands C-contiguous first, so
``gy3 @ x3.transpose(0, 2, 1)`` (a pointwise weight gradient) would copy the whole
activation ``x``, and it broadcasts a 2-D weight with a pointer-array batched GEMM.
cuBLAS itself takes a transpose flag and a batch stride (0 for a shared operand),
so ``cublasGemmStridedBatchedEx`` does every case in one call on the arrays as they are.

cuBLAS is column-major; a row-major (r, c) matrix is, to cuBLAS, its transpose
stored column-major with leading dimension c. So the row-major product
C = op(A) op(B) (M x N) is computed as the column-major C^T = op(B)^T op(A)^T
(N x M, ld N): cuBLAS's "A" is our b and its "B" is our a, and each transpose flag
is kept as it is. :func:`gemm_args` does this bookkeeping in plain Python (no CuPy),
so the tests check it on the CPU against a NumPy model of cuBLAS's definition.

Setting ``TINYMBV2_CUPY_GEMM=matmul`` in the environment (or a CuPy without the
low-level binding) falls back to ``cupy.matmul`` (same answers, the copies above).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

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
    """cuBLAS arguments for out[n] = op(a[n]) @ op(b[n]), row-major, C-contiguous operands."""
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


def _use_cublas() -> bool:
    if os.environ.get("TINYMBV2_CUPY_GEMM", "cublas") == "matmul":
        return False
    try:
        from cupy_backends.cuda.libs import cublas  # noqa: F401
    except ImportError:
        return False
    return hasattr(cublas, "gemmStridedBatchedEx")


def batched_matmul(a, b, trans_a: bool = False, trans_b: bool = False):
    """op(a[n]) @ op(b[n]) for C-contiguous CuPy arrays (see the module docstring) -> (B, M, N)."""
    import cupy as cp

    p = gemm_args(a.shape, trans_a, b.shape, trans_b)
    dtype = np.dtype(a.dtype)
    if p.batch == 0 or p.m == 0 or p.n == 0 or p.k == 0:
        return cp.zeros(p.out_shape, dtype)
    if not _use_cublas():
        aa = a.swapaxes(-1, -2) if trans_a else a
        bb = b.swapaxes(-1, -2) if trans_b else b
        return cp.ascontiguousarray(cp.broadcast_to(cp.matmul(aa, bb), p.out_shape))
    from cupy_backends.cuda.libs import cublas

    assert a.flags.c_contiguous and b.flags.c_contiguous and b.dtype == dtype
    data_type, compute = (
        (CUDA_R_32F, CUBLAS_COMPUTE_32F) if dtype == np.float32 else (CUDA_R_64F, CUBLAS_COMPUTE_64F)
    )
    out = cp.empty(p.out_shape, dtype)
    one, zero = np.ones((), dtype), np.zeros((), dtype)  # host scalars, read during the call
    cublas.gemmStridedBatchedEx(
        cp.cuda.device.get_cublas_handle(), p.transa, p.transb, p.m, p.n, p.k,
        one.ctypes.data,
        b.data.ptr, data_type, p.lda, p.stride_a,
        a.data.ptr, data_type, p.ldb, p.stride_b,
        zero.ctypes.data,
        out.data.ptr, data_type, p.ldc, p.stride_c,
        p.batch, compute, CUBLAS_GEMM_DEFAULT,
    )
    return out


def matmul(a, b):
    """a (M, K) @ b (K, N) -> (M, N) on the GPU (cuBLAS through CuPy): the Linear layer."""
    import cupy as cp

    from ._checks import matmul_args
    from .cupy_common import device_arrays

    fn = "matmul"
    _, a, b = device_arrays(fn, a=a, b=b)
    matmul_args(fn, a, b)
    return cp.ascontiguousarray(a @ b)
