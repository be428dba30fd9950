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

cuBLAS is column-major, our arrays row-major: ``cublas_args`` (plain Python, tested
on any machine) turns each product into cuBLAS's arguments.

Setting ``TINYMBV2_CUPY_GEMM=matmul`` in the environment (or a CuPy without the
low-level binding) falls back to ``cupy.matmul`` (same answers, the copies above).
"""
from __future__ import annotations

import os

import cupy as cp
import numpy as np

from ..checks import matmul_args
from .common import device_arrays
from .cublas_args import (CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT, CUDA_R_32F,
                          CUDA_R_64F, gemm_args)


def _use_cublas() -> bool:
    if os.environ.get("TINYMBV2_CUPY_GEMM", "cublas") == "matmul":
        return False
    try:
        from cupy_backends.cuda.libs import cublas  # noqa: F401
    except ImportError:
        return False
    return hasattr(cublas, "gemmStridedBatchedEx")


def batched_matmul(a, b, trans_a: bool = False, trans_b: bool = False):
    """``op(a[n]) @ op(b[n])`` for C-contiguous CuPy arrays (see the module docstring).

    Args:
        a: (B, r, c), or (r, c) shared by the batch.
        b: (B, r, c), or (r, c) shared by the batch.
        trans_a: Use ``a[n].T``.
        trans_b: Use ``b[n].T``.

    Returns:
        out (B, M, N), C-contiguous.
    """
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
    """``a @ b`` on the GPU (cuBLAS through CuPy): the Linear layer's product.

    Args:
        a: (M, K).
        b: (K, N).

    Returns:
        (M, N).
    """
    fn = "matmul"
    _, a, b = device_arrays(fn, a=a, b=b)
    matmul_args(fn, a, b)
    return cp.ascontiguousarray(a @ b)
