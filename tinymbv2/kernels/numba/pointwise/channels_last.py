"""Pointwise (1x1) convolution on channels-last tensors: the whole batch is one GEMM.

A channels-last (N, C, H, W) tensor (see ``..layout``) is the matrix
x (M, C), ``M = N*H*W``, one row per pixel of every image. A 1x1 convolution mixes
the channels of each pixel alone, so over the whole batch it is

    forward          y  (M, Co) = x  (M, Ci) @ W.T (Ci, Co)
    backward-input   gx (M, Ci) = gy (M, Co) @ W   (Co, Ci)
    backward-weight  gw (Co, Ci) = gy.T (Co, M) @ x (M, Ci)

one GEMM each, however small the plane: no per-image GEMMs of a few columns and
no gathering of images side by side (``..pointwise``). All three run
``..tile``'s register blocks, whose right-hand operand needs contiguous rows:
W for backward-input and x for backward-weight are that already (gy.T is read one value
at a time, as a view); forward copies W.T one strip of output columns at a time, in
blocks transposed in vector registers (``..transpose``; element by element, the
copies were a quarter of the forward of the 7x7 layers; figures: docs/kernels.md,
"Pointwise on channels-last planes").

Threads (deterministic, as everywhere in this set): a product worth two threads is
cut in two (``_split``, a function of the shapes alone, never of the thread count).
With many rows, forward and backward-input cut the M rows into two blocks; with few,
the output columns. The weight gradient cuts its Co output rows. Every output value is
summed whole by one register block, so where the cut falls changes no bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from .. import pool  # noqa: F401  (starts Numba's pool passive)
from ..batchnorm.channels_last import affine_rows_inplace
from ..tile import STREAM_BYTES, packed_product, product, strip_width, tile_columns
from ..transpose import transpose_into

_JIT = dict(cache=CACHE, fastmath=False)
_PARALLEL_ROWS = 384  # a GEMM is cut into two blocks of rows from this many rows ...
_PARALLEL_MACS = 1 << 22  # ... and this many multiply-adds; none under it
"""Waking the passive pool (``..pool``) costs more than half the arithmetic of a small
GEMM: with the BLAS products these blocks replaced, (64, 960) @ (960, 160) was slower cut
in two blocks of rows than whole (figures: docs/kernels.md, "Pointwise on channels-last
planes")."""
COLUMN_SPLIT = True
"""Cut products of few rows (but enough multiply-adds) over output columns, rather than
run them in the calling thread (with BLAS, an A/B made the 32 px training step faster
this way; figures: docs/kernels.md, "Pointwise on channels-last planes"). A switch for
that A/B and for the tests."""
ONE_STRIP_BY_ROWS = True
"""... unless the output is a single strip of the register block (64 float32 columns or
fewer: a batch-1 inference's 14x14 projections), which a cut at whole strips would leave
to one thread: such a product, with rows for two blocks of ``ROW_BLOCK``, is cut
into two blocks of rows (each thread copies the whole, narrow, W.T). Uneven cuts of
several strips (96 columns: 64 against 32; 160: 64 against 96) stay by columns: cut by
rows instead, they made the 32 px training step about 1% slower, within the noise of a
batch-1 inference's gain (figures: docs/kernels.md, "Inference blocks"). Off, every
product of few rows is cut by columns (the tests' path)."""
ROW_BLOCK = 6
"""The rows of the register block's widest form (``..tile``)."""


def _split(m: int, k: int, n: int, width: int) -> str:
    """How an (M, K) @ (K, N) product is shared by two threads: "rows", "columns" or
    "none"; ``width`` is the register block's columns (``tile.strip_width``). A function
    of the shapes alone (see the module on determinism)."""
    if m * k * n < _PARALLEL_MACS:
        return "none"
    if m >= _PARALLEL_ROWS:
        return "rows"
    if not COLUMN_SPLIT:
        return "none"
    if ONE_STRIP_BY_ROWS and n <= width and m >= 2 * ROW_BLOCK:
        return "rows"  # one strip: a cut by columns leaves the first thread nothing
    return "columns"


@njit(inline="always", **_JIT)
def _block(a, b, out, r0, r1, c0, c1, panel, ep):
    """out[r0:r1, c0:c1] = a[r0:r1] @ b[:, c0:c1], then the epilogue ``ep`` there. Given a
    ``panel`` (K, tile_columns), b is b.T (N, K): each strip of its columns is copied into
    the panel first. A large output with no epilogue is streamed (``tile.product``)."""
    mean, scale, bias, flags = ep
    stream = not flags[0] and out.size * out.itemsize >= STREAM_BYTES
    if panel.size:
        width = panel.shape[1]
        for j in range(c0, c1, width):
            n = min(width, c1 - j)
            transpose_into(b, j, j + n, 0, b.shape[1], panel)  # panel[p, q] = b[j + q, p]
            product(a, panel[:, :n], out[:, j:j + n], r0, r1, 0, n, False, stream)
    else:
        product(a, b, out, r0, r1, c0, c1, False, stream)
    if flags[0]:
        affine_rows_inplace(out, r0, r1, c0, c1, mean, scale, bias, flags[1])


@njit(inline="always", **_JIT)
def _share(t, blocks, m, n, width, by_rows):
    """Block t of ``blocks``: rows (r0, r1) and columns (c0, c1) of an (m, n) output, cut
    by rows, or by columns at multiples of the register block's ``width``."""
    if by_rows:
        return t * m // blocks, (t + 1) * m // blocks, 0, n
    strips = (n + width - 1) // width
    return 0, m, min(n, t * strips // blocks * width), min(n, (t + 1) * strips // blocks * width)


@njit(parallel=True, **_JIT)
def _matmul_parallel(a, b, out, panels, by_rows, ep):
    m, n = out.shape
    for t in prange(2):
        r0, r1, c0, c1 = _share(t, 2, m, n, tile_columns(out), by_rows)
        _block(a, b, out, r0, r1, c0, c1, panels[t], ep)
    return out


@njit(**_JIT)
def _matmul_serial(a, b, out, panels, ep):
    _block(a, b, out, 0, out.shape[0], 0, out.shape[1], panels[0], ep)
    return out


_workspace: dict = {}


def _panels(k: int, dtype, width: int) -> np.ndarray:
    """Two (k, width) panels, one per thread, from a buffer kept between calls (it only
    grows, to 2 x 1280 x 64 values for MobileNetV2): copies of W.T's strips need no
    allocation per call, and a chunked inference (``models.memory``) peaks no higher."""
    buffer = _workspace.get(np.dtype(dtype))
    if buffer is None or buffer.size < 2 * k * width:
        buffer = _workspace[np.dtype(dtype)] = np.empty(2 * k * width, dtype)
    return buffer[:2 * k * width].reshape(2, k, width)


def _matmul(a, b, out, transposed, ep):
    """out (M, N) = a (M, K) @ b (K, N) (b given as b.T (N, K) when ``transposed``), then
    the BatchNorm-eval epilogue ``ep`` (``batchnorm.epilogue_args``), shared by the threads
    as ``_split`` says."""
    if transposed and a.shape[1] == 0:  # an empty sum: nothing to copy
        b, transposed = np.empty((0, out.shape[1]), out.dtype), False
    panels = _panels(a.shape[1], a.dtype, strip_width(out.dtype) if transposed else 0)
    split = _split(a.shape[0], a.shape[1], out.shape[1], strip_width(out.dtype))
    if split == "none":
        return _matmul_serial(a, b, out, panels, ep)
    return _matmul_parallel(a, b, out, panels, split == "rows", ep)


@njit(parallel=True, **_JIT)
def _prepared_parallel(a, packed, out, table, relu6, by_rows):
    m, n = out.shape
    for t in prange(2):
        r0, r1, c0, c1 = _share(t, 2, m, n, tile_columns(out), by_rows)
        packed_product(a, packed, out, r0, r1, c0, c1, table, relu6)
    return out


@njit(**_JIT)
def _prepared_serial(a, packed, out, table, relu6):
    packed_product(a, packed, out, 0, out.shape[0], 0, out.shape[1], table, relu6)
    return out


def forward_prepared(x2, packed, y2, table, relu6):
    """``y2 (M, Co) = x2 (M, Ci) @ W.T`` with a BatchNorm-eval table applied in the register
    blocks, for a weight laid out once (``packed = tile.pack_strips(W.T)``): no strip of W.T
    copied per call, each read from one run of memory. Shared by the threads as ``forward``
    shares it; the same bits as ``forward`` with the same BatchNorm.

    Args:
        x2: The input rows (M, Ci).
        packed: ``tile.pack_strips(W.T)``.
        y2: The output rows (M, Co), written.
        table: ``batchnorm.epilogue_table`` (3, Co).
        relu6: Clamp to [0, 6].

    Returns:
        y2.
    """
    split = _split(x2.shape[0], x2.shape[1], y2.shape[1], strip_width(y2.dtype))
    if split == "none":
        return _prepared_serial(x2, packed, y2, table, relu6)
    return _prepared_parallel(x2, packed, y2, table, relu6, split == "rows")


@njit(inline="always", **_JIT)
def _weight_grad_rows(g, x, gw, r0, r1):
    """gw[r0:r1] = g[:, r0:r1].T @ x (summed over M in tile.product's chunks)."""
    product(g.T, x, gw, r0, r1, 0, gw.shape[1], False)


@njit(parallel=True, **_JIT)
def _weight_grad_parallel(g, x):
    co = g.shape[1]
    gw = np.empty((co, x.shape[1]), g.dtype)
    for t in prange(2):
        _weight_grad_rows(g, x, gw, t * co // 2, (t + 1) * co // 2)
    return gw


@njit(**_JIT)
def _weight_grad_serial(g, x):
    gw = np.empty((g.shape[1], x.shape[1]), g.dtype)
    _weight_grad_rows(g, x, gw, 0, gw.shape[0])
    return gw


def forward(x2, w2, y2, ep):
    """``y2 (M, Co) = x2 (M, Ci) @ w2.T``, with the epilogue ``ep``.

    Args:
        x2: The input rows (M, Ci).
        w2: The weight (Co, Ci).
        y2: The output rows (M, Co), written.
        ep: The BatchNorm-eval epilogue (``batchnorm.epilogue_args``).

    Returns:
        y2.
    """
    return _matmul(x2, w2, y2, True, ep)


def backward_input(g2, w2, gx2, ep):
    """``gx2 (M, Ci) = g2 (M, Co) @ w2 (Co, Ci)``.

    Args:
        g2: The output gradient rows (M, Co).
        w2: The weight (Co, Ci).
        gx2: The input gradient rows (M, Ci), written.
        ep: An epilogue (off for a gradient).

    Returns:
        gx2.
    """
    return _matmul(g2, w2, gx2, False, ep)


def backward_weight(g2, x2):
    """``gw (Co, Ci) = g2.T @ x2``, summed over the M rows in a fixed order.

    Args:
        g2: The output gradient rows (M, Co).
        x2: The input rows (M, Ci).

    Returns:
        gw (Co, Ci).
    """
    if _split(g2.shape[0], g2.shape[1], x2.shape[1], strip_width(g2.dtype)) == "none":
        return _weight_grad_serial(g2, x2)
    return _weight_grad_parallel(g2, x2)
