"""Pointwise (1x1) convolution on channels-last tensors: the whole batch is one GEMM.

A channels-last (N, C, H, W) tensor (see :mod:`.numba_layout`) is the matrix
x (M, C), M = N*H*W, one row per pixel of every image. A 1x1 convolution mixes
the channels of each pixel alone, so over the whole batch it is

    forward          y  (M, Co) = x  (M, Ci) @ W.T (Ci, Co)
    backward-input   gx (M, Ci) = gy (M, Co) @ W   (Co, Ci)
    backward-weight  gw (Co, Ci) = gy.T (Co, M) @ x (M, Ci)

one GEMM each, however small the plane: no per-image GEMMs of a few columns and
no gathering of images side by side (:mod:`.numba_pointwise`). The transposes
are BLAS flags, never copies.

Forward and backward-input with a long sum (``numba_gemm.MIN_SUM`` channels or more)
run :mod:`.numba_gemm`'s register-blocked loop instead of BLAS: both read their
operands along the channels (backward-input after copying W.T, a few hundred KiB).

Threads (deterministic, as everywhere in this set): a product worth two threads is
cut in two (``_split``, a function of the shapes alone, never of the thread count).
With many rows, forward and backward-input cut the M rows into two blocks, one GEMM
each; every output row is computed whole by one GEMM, so the boundary changes nothing,
and the weight gradient sums each block into a partial (Co, Ci) product, added in
order. With few rows each thread takes half of the output columns instead, so that it
packs only half of the other operand.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import numba_pool  # noqa: F401  (pins Numba's BLAS to one thread, starts the pool passive)
from .numba_bn_rows import affine_rows_inplace
from .numba_gemm import MIN_SUM, row_block, row_blocks

_JIT = dict(cache=True, fastmath=False)
_PARALLEL_ROWS = 384  # a GEMM is cut into two blocks of rows from this many rows ...
_PARALLEL_MACS = 1 << 22  # ... and this many multiply-adds; none under it
"""Waking the pool (~45 us, passive) and each thread packing the whole other operand cost
more than half the arithmetic of a small GEMM. Measured: (64, 960) @ (960, 160) took
0.19 ms whole and 0.24 ms in two blocks of rows; (392, 960) @ (960, 160) at 224 px needs
both threads."""
COLUMN_SPLIT = True
"""Cut products of few rows (but enough multiply-adds) over output columns, rather than
run them in the calling thread: 32 px batch 64 training step 45.8 -> 43.1 ms, A/B. A
switch for that A/B and for the tests."""


def _split(m: int, k: int, n: int) -> str:
    """How an (M, K) @ (K, N) product is shared by two threads: "rows", "columns" or
    "none". A function of the shapes alone (see the module on determinism)."""
    if m * k * n < _PARALLEL_MACS:
        return "none"
    if m >= _PARALLEL_ROWS:
        return "rows"
    return "columns" if COLUMN_SPLIT else "none"


@njit(**_JIT)
def _matmul_block(a, b, out, r0, r1, ep):
    np.dot(a[r0:r1], b, out[r0:r1])
    mean, scale, bias, flags = ep
    if flags[0]:
        affine_rows_inplace(out, r0, r1, 0, out.shape[1], mean, scale, bias, flags[1])


@njit(parallel=True, **_JIT)
def _matmul_parallel(a, b, out, blocks, ep):
    m = a.shape[0]
    for t in prange(blocks):
        _matmul_block(a, b, out, t * m // blocks, (t + 1) * m // blocks, ep)
    return out


@njit(**_JIT)
def _matmul_serial(a, b, out, ep):
    _matmul_block(a, b, out, 0, a.shape[0], ep)
    return out


@njit(parallel=True, **_JIT)
def _matmul_columns(a, bt, out, blocks, ep):
    """out (M, N) = a (M, K) @ bt.T for bt (N, K): ``blocks`` blocks of output columns, each
    one GEMM bt[n0:n1] @ a.T into scratch (n1 - n0, M), then copied into its columns of out
    (and through the epilogue there). For few rows: each thread packs only its share of b."""
    m, n = a.shape[0], bt.shape[0]
    tmp = np.empty((n, m), a.dtype)
    mean, scale, bias, flags = ep
    for t in prange(blocks):
        n0, n1 = t * n // blocks, (t + 1) * n // blocks
        np.dot(bt[n0:n1], a.T, tmp[n0:n1])
        for r in range(m):
            o = out[r]
            for c in range(n0, n1):
                o[c] = tmp[c, r]
        if flags[0]:
            affine_rows_inplace(out, 0, m, n0, n1, mean, scale, bias, flags[1])
    return out


@njit(parallel=True, **_JIT)
def _weight_grad_columns(g, x, blocks):
    """gw (Co, Ci) = g (M, Co).T @ x (M, Ci) in ``blocks`` blocks of output rows, each
    thread transposing its share of g first (a GEMM of the whole sum: no partials)."""
    m, co = g.shape
    gt = np.empty((co, m), g.dtype)
    gw = np.empty((co, x.shape[1]), g.dtype)
    for t in prange(blocks):
        c0, c1 = t * co // blocks, (t + 1) * co // blocks
        for r in range(m):
            gr = g[r]
            for c in range(c0, c1):
                gt[c, r] = gr[c]
        np.dot(gt[c0:c1], x, gw[c0:c1])
    return gw


def _matmul(a, b, out, ep):
    """out (M, K) = a (M, J) @ b (J, K), then the BatchNorm-eval epilogue ``ep``
    (``numba_bn.epilogue_args``), shared by the threads as ``_split`` says."""
    split = _split(a.shape[0], a.shape[1], b.shape[1])
    if split == "rows":
        return _matmul_parallel(a, b, out, 2, ep)
    if split == "columns":
        return _matmul_columns(a, np.ascontiguousarray(b.T), out, 2, ep)
    return _matmul_serial(a, b, out, ep)


@njit(parallel=True, **_JIT)
def _weight_grad_parallel(g, x, runs):
    m = g.shape[0]
    part = np.empty((runs, g.shape[1], x.shape[1]), g.dtype)
    for t in prange(runs):
        r0, r1 = t * m // runs, (t + 1) * m // runs
        np.dot(g[r0:r1].T, x[r0:r1], part[t])
    total = part[0].copy()
    for t in range(1, runs):
        total += part[t]
    return total


@njit(**_JIT)
def _weight_grad_serial(g, x):
    return np.dot(g.T, x)


@njit(**_JIT)
def _nt_block(a, c, out, blk, ep):
    """Rows 4*blk .. 4*blk + 3 of out = a @ c.T (numba_gemm), then through ``ep``."""
    row_block(a.reshape((1,) + a.shape), c.reshape((1,) + c.shape), out, blk)
    mean, scale, bias, flags = ep
    if flags[0]:
        i = 4 * blk
        affine_rows_inplace(out, i, min(i + 4, out.shape[0]), 0, out.shape[1],
                            mean, scale, bias, flags[1])


@njit(parallel=True, **_JIT)
def _nt_parallel(a, c, out, ep):
    for blk in prange(row_blocks(a.shape[0])):
        _nt_block(a, c, out, blk, ep)
    return out


@njit(**_JIT)
def _nt_serial(a, c, out, ep):
    for blk in range(row_blocks(a.shape[0])):
        _nt_block(a, c, out, blk, ep)
    return out


def _matmul_nt(a, c, out, ep):
    """out (M, N) = a (M, K) @ c.T for c (N, K), K >= MIN_SUM: numba_gemm's register-blocked
    loop (faster than this machine's BLAS there), then the epilogue ``ep``."""
    if _split(a.shape[0], a.shape[1], c.shape[0]) == "none":
        return _nt_serial(a, c, out, ep)
    return _nt_parallel(a, c, out, ep)


def forward(x2, w2, y2, ep):
    """y2 (M, Co) = x2 (M, Ci) @ w2.T, w2 (Co, Ci); with the epilogue ``ep``."""
    if x2.shape[1] >= MIN_SUM:
        return _matmul_nt(x2, w2, y2, ep)
    return _matmul(x2, w2.T, y2, ep)


def backward_input(g2, w2, gx2, ep):
    """gx2 (M, Ci) = g2 (M, Co) @ w2 (Co, Ci)."""
    if g2.shape[1] >= MIN_SUM:
        return _matmul_nt(g2, np.ascontiguousarray(w2.T), gx2, ep)
    return _matmul(g2, w2, gx2, ep)


def backward_weight(g2, x2):
    """gw (Co, Ci) = g2.T @ x2, summed over the M rows in a fixed order."""
    split = _split(g2.shape[0], g2.shape[1], x2.shape[1])
    if split == "rows":
        return _weight_grad_parallel(g2, x2, 2)
    if split == "columns":
        return _weight_grad_columns(g2, x2, 2)
    return _weight_grad_serial(g2, x2)
