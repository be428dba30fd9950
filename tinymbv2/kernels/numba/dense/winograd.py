r"""A 3x3 convolution at stride 1 by Winograd's minimal filtering, $F(2 \times 2, 3 \times 3)$.

DeepLabHead's 3x3 convolution (256 to 256 channels on a 16 x 16 map) is the one dense 3x3
filter with many channels in these networks. Computed directly, each output costs $9 C_i$
multiply-adds per output channel. Winograd's algorithm (Lavin and Gray, "Fast Algorithms
for Convolutional Neural Networks", CVPR 2016) computes a 2 x 2 block of outputs from the
4 x 4 block of inputs around it with 16 products instead of 36, 2.25 times fewer.

**One dimension first.** Two outputs of a 3-tap correlation, $y_0 = d_0 g_0 + d_1 g_1 +
d_2 g_2$ and $y_1 = d_1 g_0 + d_2 g_1 + d_3 g_2$, need six products directly and four
this way:

$$
m_1 = (d_0 - d_2)\, g_0, \quad m_2 = (d_1 + d_2) \frac{g_0 + g_1 + g_2}{2}, \quad
m_3 = (d_2 - d_1) \frac{g_0 - g_1 + g_2}{2}, \quad m_4 = (d_1 - d_3)\, g_2,
$$

$y_0 = m_1 + m_2 + m_3$, $y_1 = m_2 - m_3 - m_4$. In matrices, $y = A^T [(G g) \odot
(B^T d)]$ with

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]     (4 x 4)
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]       (4 x 3)
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]                                  (2 x 4)

**Two dimensions, many channels.** Nesting the 1-D algorithm in rows and columns, a 2 x 2
output tile is $Y = A^T [U \odot V] A$ with $U = G g G^T$ and $V = B^T d B$ (4 x 4 each).
Summed over the input channels, each of the 16 positions $\xi$ of the 4 x 4 tile is a
matrix product over the $T$ tiles of the batch:

    M[xi] (T, Co) = V[xi] (T, Ci) @ U[xi] (Ci, Co)          16 products, then Y = A^T M A

so the work is 16 matrix products of $T C_i C_o$ multiply-adds where the direct
convolution has $9 \cdot 4 T C_i C_o$: 2.25 times fewer, on ``.tile``'s register
blocks. The transforms (``_input_tiles``, ``_output_tiles``) only add and subtract (and
halve, for U), once per tile and channel, which is cheap beside $C_i$-long sums.

**The three passes.**

* forward: U from w, V from x, the 16 products, Y;
* input gradient: at stride 1, the convolution of gy with the kernel flipped and
  transposed, ``w'[ci, co] = w[co, ci, ::-1, ::-1]``, padding $2 - p$: the forward's code;
* weight gradient: $Y_t = A^T (U \odot V_t) A$ is linear in U, so
  $\partial L / \partial U = \sum_t (A\, \partial Y_t A^T) \odot V_t$, per position $\xi$
  the product ``dU[xi] (Ci, Co) = V[xi].T (Ci, T) @ dM[xi] (T, Co)`` with
  $dM_t = A\, \partial Y_t A^T$ (``_gradient_tiles``), then
  $\partial L / \partial g = G^T\, dU\, G$ (``_weight_gradient``).

Tiles past the output's last row or column (an odd $H_o$) read zeros and are not
written; their gradient tiles are zero there.

**Rounding.** Each output is a different sum of the same terms than the direct
convolution's, so the two differ in the last bits: in float32 a few units of $10^{-7}$
relative to the output's scale, about twice the direct sum's error against float64; in
float64 it agrees with PyTorch to about $10^{-15}$ (``tests/kernels/test_winograd.py``).
Larger tiles, $F(4 \times 4, 3 \times 3)$, would save more products (4 times fewer than
direct), but their transforms have larger coefficients, which lose more precision in
float32; they are not used.

**Where it runs** (``fits``): a dense 3x3 filter, stride 1, no dilation, padding 1, at
least ``MIN_CHANNELS`` channels on each side, on a plane the numba set keeps
channels-last (``..layout``); the tiles read a pixel's channels as one contiguous run.
Every other dense convolution keeps ``dense``'s or ``..tap_regions``' kernels.

**Determinism.** Each of the 16 products runs in row blocks fixed by the shapes; each value
is summed whole, in order, by one register block; the transforms are elementwise. The
threads and their number change no bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...checks import conv_geometry, grad_out_shape, pair, same_float_dtype
from ..cache import CACHE
from ..layout import channels_last_plane, empty_channels_last, nhwc
from ..tile import product
from ..transpose import transpose_images, transpose_matrix
from .. import pool  # noqa: F401  (the one-pool set-up, see there)

_JIT = dict(cache=CACHE, fastmath=False, boundscheck=False)
MIN_CHANNELS = 64
"""Input and output channels at least this many (DeepLabHead's have 256): the transforms
cost per channel what the products save per pair of channels, so few channels gain little.
Not measured below 64."""
BLOCK_ROWS = 96
"""Rows of a product per task (a multiple of ``.tile``'s 6-row blocks): with the 16
positions, enough tasks for the threads, each long enough to keep a register block busy."""


def fits(x_shape, w_shape, stride, padding, dilation) -> bool:
    """Does the numba set send this dense convolution here? See the module docstring.

    Args:
        x_shape: (N, Ci, H, W).
        w_shape: (Co, Ci, kh, kw).
        stride: An int or (sh, sw).
        padding: An int or (ph, pw).
        dilation: An int or (dh, dw).

    Returns:
        Whether it does (arguments that are not ints or pairs, or shapes that are not 4-D,
        give False, for the other kernels to refuse with their messages).
    """
    try:
        geometry = [pair(v, what, "fits") for v, what in
                    ((stride, "stride"), (padding, "padding"), (dilation, "dilation"))]
    except TypeError:
        return False
    if geometry != [(1, 1)] * 3 or len(w_shape) != 4 or len(x_shape) != 4:
        return False
    co, ci, kh, kw = (int(s) for s in w_shape)
    n, c, h, w = (int(s) for s in x_shape)
    return ((kh, kw) == (3, 3) and c == ci and n > 0 and channels_last_plane(h, w)
            and ci >= MIN_CHANNELS and co >= MIN_CHANNELS)


# ---------------------------------------------------------------- the transforms
@njit(inline="always", **_JIT)
def _transform3(a, b, c):
    """G's rows against a 3-vector: ``(a, (a + b + c) / 2, (a - b + c) / 2, c)``."""
    return a, 0.5 * (a + b + c), 0.5 * (a - b + c), c


@njit(inline="always", **_JIT)
def _filter_tile(u, r, c, g00, g01, g02, g10, g11, g12, g20, g21, g22):
    """``u[:, r, c] = G g G^T`` for the 3 x 3 filter g (row-major taps)."""
    # G g (4 x 3), column by column; then each of its rows times G^T
    a0, a1, a2, a3 = _transform3(g00, g10, g20)
    b0, b1, b2, b3 = _transform3(g01, g11, g21)
    c0, c1, c2, c3 = _transform3(g02, g12, g22)
    u[0, r, c], u[1, r, c], u[2, r, c], u[3, r, c] = _transform3(a0, b0, c0)
    u[4, r, c], u[5, r, c], u[6, r, c], u[7, r, c] = _transform3(a1, b1, c1)
    u[8, r, c], u[9, r, c], u[10, r, c], u[11, r, c] = _transform3(a2, b2, c2)
    u[12, r, c], u[13, r, c], u[14, r, c], u[15, r, c] = _transform3(a3, b3, c3)


@njit(parallel=True, **_JIT)
def _filter_tiles(g, flip, u):
    """``u[xi, r, c] = (G g[r, :, :, c] G^T)[xi]`` (taps flipped with ``flip``).

    Args:
        g: (R, 3, 3, C), the filters with their taps in the middle: ``w`` laid out
            (Ci, 3, 3, Co) for the forward, (Co, 3, 3, Ci) for the input gradient.
        flip: Read tap (2 - a, 2 - b) for (a, b): the input gradient's flipped kernel.
        u: (16, R, C), written.
    """
    rows, cols = u.shape[1], u.shape[2]
    for r in prange(rows):
        if flip:
            for c in range(cols):
                _filter_tile(u, r, c, g[r, 2, 2, c], g[r, 2, 1, c], g[r, 2, 0, c],
                             g[r, 1, 2, c], g[r, 1, 1, c], g[r, 1, 0, c],
                             g[r, 0, 2, c], g[r, 0, 1, c], g[r, 0, 0, c])
        else:
            for c in range(cols):
                _filter_tile(u, r, c, g[r, 0, 0, c], g[r, 0, 1, c], g[r, 0, 2, c],
                             g[r, 1, 0, c], g[r, 1, 1, c], g[r, 1, 2, c],
                             g[r, 2, 0, c], g[r, 2, 1, c], g[r, 2, 2, c])


@njit(inline="always", **_JIT)
def _bt(d0, d1, d2, d3):
    """B^T against a 4-vector: ``(d0 - d2, d1 + d2, d2 - d1, d1 - d3)``."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(inline="always", **_JIT)
def _at(m0, m1, m2, m3):
    """A^T against a 4-vector: ``(m0 + m1 + m2, m1 - m2 - m3)``."""
    return m0 + m1 + m2, m1 - m2 - m3


@njit(inline="always", **_JIT)
def _a(y0, y1):
    """A against a 2-vector: ``(y0, y0 + y1, y0 - y1, -y1)``."""
    return y0, y0 + y1, y0 - y1, -y1


@njit(inline="always", **_JIT)
def _scatter(scratch, t, v):
    """``v[xi, t] = scratch[xi]``: a tile's 16 rows of channels into their positions' matrices."""
    for xi in range(16):
        v[xi, t] = scratch[xi]


@njit(parallel=True, **_JIT)
def _input_tiles(x, ph, pw, th, tw, v):
    """``v[xi, t] = (B^T d B)[xi]`` for each tile t and channel: d the tile's 4 x 4 inputs.

    Tile ``t = (n*th + ty)*tw + tx`` reads rows ``2 ty - ph + (0..3)`` and columns
    ``2 tx - pw + (0..3)`` of image n (zeros outside the image).

    Args:
        x: The input (N, H, W, C), C-contiguous.
        ph: Padding along rows.
        pw: Padding along columns.
        th: Tile rows.
        tw: Tile columns.
        v: (16, T, C), T = ``N*th*tw``, written.
    """
    n, h, wd, c = x.shape
    width = 2 * tw + 2
    for task in prange(n * th):
        b, ty = task // th, task % th
        # the tile row's 4 input rows, zero-padded on every side: no test in the loops below
        d = np.zeros((4, width, c), x.dtype)
        for i in range(4):
            row = 2 * ty - ph + i
            if 0 <= row < h:
                for j in range(max(0, pw), min(width, wd + pw)):
                    d[i, j] = x[b, row, j - pw]
        # one tile's 16 rows, computed here (one array written: the loop over the channels
        # vectorises), then copied to the 16 positions' matrices
        e = np.empty((16, c), x.dtype)
        for tx in range(tw):
            j = 2 * tx
            for ch in range(c):
                # B^T d, column by column (columns j..j+3), then each row times B
                a0, a1, a2, a3 = _bt(d[0, j, ch], d[1, j, ch], d[2, j, ch], d[3, j, ch])
                b0, b1, b2, b3 = _bt(d[0, j + 1, ch], d[1, j + 1, ch], d[2, j + 1, ch], d[3, j + 1, ch])
                c0, c1, c2, c3 = _bt(d[0, j + 2, ch], d[1, j + 2, ch], d[2, j + 2, ch], d[3, j + 2, ch])
                e0, e1, e2, e3 = _bt(d[0, j + 3, ch], d[1, j + 3, ch], d[2, j + 3, ch], d[3, j + 3, ch])
                e[0, ch], e[1, ch], e[2, ch], e[3, ch] = _bt(a0, b0, c0, e0)
                e[4, ch], e[5, ch], e[6, ch], e[7, ch] = _bt(a1, b1, c1, e1)
                e[8, ch], e[9, ch], e[10, ch], e[11, ch] = _bt(a2, b2, c2, e2)
                e[12, ch], e[13, ch], e[14, ch], e[15, ch] = _bt(a3, b3, c3, e3)
            _scatter(e, task * tw + tx, v)


@njit(parallel=True, **_JIT)
def _output_tiles(m, th, tw, y):
    """``y``'s 2 x 2 tiles ``A^T M_t A``, for each tile t and channel; rows and columns past
    y's are not written.

    Args:
        m: (16, T, C), T = ``N*th*tw``, the products.
        th: Tile rows.
        tw: Tile columns.
        y: The output (N, Ho, Wo, C), C-contiguous, written.
    """
    n, ho, wo, c = y.shape
    for task in prange(n * th):
        b, ty = task // th, task % th
        two_rows = 2 * ty + 1 < ho
        for tx in range(tw):
            t, col = task * tw + tx, 2 * tx
            two_cols = col + 1 < wo
            for ch in range(c):
                # A^T M: each column's 4 values to 2, then each of the 2 rows times A
                p0, q0 = _at(m[0, t, ch], m[4, t, ch], m[8, t, ch], m[12, t, ch])
                p1, q1 = _at(m[1, t, ch], m[5, t, ch], m[9, t, ch], m[13, t, ch])
                p2, q2 = _at(m[2, t, ch], m[6, t, ch], m[10, t, ch], m[14, t, ch])
                p3, q3 = _at(m[3, t, ch], m[7, t, ch], m[11, t, ch], m[15, t, ch])
                y00, y01 = _at(p0, p1, p2, p3)
                y10, y11 = _at(q0, q1, q2, q3)
                y[b, 2 * ty, col, ch] = y00
                if two_cols:
                    y[b, 2 * ty, col + 1, ch] = y01
                if two_rows:
                    y[b, 2 * ty + 1, col, ch] = y10
                    if two_cols:
                        y[b, 2 * ty + 1, col + 1, ch] = y11


@njit(parallel=True, **_JIT)
def _gradient_tiles(gy, th, tw, dm):
    """``dm[xi, t] = (A dY_t A^T)[xi]`` for each tile t and channel: dY_t the tile's 2 x 2
    output gradients (zeros past gy's last row or column).

    Args:
        gy: The output gradient (N, Ho, Wo, C), C-contiguous.
        th: Tile rows.
        tw: Tile columns.
        dm: (16, T, C), T = ``N*th*tw``, written.
    """
    n, ho, wo, c = gy.shape
    for task in prange(n * th):
        b, ty = task // th, task % th
        zero = gy.dtype.type(0)
        r0, r1 = 2 * ty, min(2 * ty + 1, ho - 1)
        row1 = 2 * ty + 1 < ho
        e = np.empty((16, c), gy.dtype)  # one tile's rows, as in _input_tiles
        for tx in range(tw):
            c0 = 2 * tx
            c1 = min(c0 + 1, wo - 1)
            col1 = c0 + 1 < wo
            for ch in range(c):
                # past the last row or column: zeros (not a multiple of a real value)
                g00 = gy[b, r0, c0, ch]
                g01 = gy[b, r0, c1, ch] if col1 else zero
                g10 = gy[b, r1, c0, ch] if row1 else zero
                g11 = gy[b, r1, c1, ch] if row1 and col1 else zero
                # A dY (4 x 2), then each row times A^T
                a0, a1, a2, a3 = _a(g00, g10)
                b0, b1, b2, b3 = _a(g01, g11)
                e[0, ch], e[1, ch], e[2, ch], e[3, ch] = _a(a0, b0)
                e[4, ch], e[5, ch], e[6, ch], e[7, ch] = _a(a1, b1)
                e[8, ch], e[9, ch], e[10, ch], e[11, ch] = _a(a2, b2)
                e[12, ch], e[13, ch], e[14, ch], e[15, ch] = _a(a3, b3)
            _scatter(e, task * tw + tx, dm)


@njit(inline="always", **_JIT)
def _gt(u0, u1, u2, u3):
    """G^T against a 4-vector: ``(u0 + (u1 + u2) / 2, (u1 - u2) / 2, (u1 + u2) / 2 + u3)``."""
    return u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3


@njit(parallel=True, **_JIT)
def _weight_gradient(du, g):
    """``g[ci, :, :, co] = G^T dU[:, ci, co] G`` (3 x 3 from 4 x 4) for each pair of channels.

    Args:
        du: (16, Ci, Co), the products.
        g: (Ci, 3, 3, Co), written: the weight gradient with its taps in the middle.
    """
    ci, co = du.shape[1], du.shape[2]
    for i in prange(ci):
        for o in range(co):
            # G^T dU (3 x 4), column by column; then each of its rows times G
            a0, a1, a2 = _gt(du[0, i, o], du[4, i, o], du[8, i, o], du[12, i, o])
            b0, b1, b2 = _gt(du[1, i, o], du[5, i, o], du[9, i, o], du[13, i, o])
            c0, c1, c2 = _gt(du[2, i, o], du[6, i, o], du[10, i, o], du[14, i, o])
            e0, e1, e2 = _gt(du[3, i, o], du[7, i, o], du[11, i, o], du[15, i, o])
            g[i, 0, 0, o], g[i, 0, 1, o], g[i, 0, 2, o] = _gt(a0, b0, c0, e0)
            g[i, 1, 0, o], g[i, 1, 1, o], g[i, 1, 2, o] = _gt(a1, b1, c1, e1)
            g[i, 2, 0, o], g[i, 2, 1, o], g[i, 2, 2, o] = _gt(a2, b2, c2, e2)


# ---------------------------------------------------------------- the products
@njit(inline="always", **_JIT)
def _task(task, blocks, rows):
    """Task ``task``'s position and rows ``[r0, r1)``: ``blocks`` runs of ``BLOCK_ROWS`` per position."""
    blk = task % blocks
    return task // blocks, blk * BLOCK_ROWS, min(rows, (blk + 1) * BLOCK_ROWS)


@njit(parallel=True, **_JIT)
def _products(v, u, m):
    """``m[xi] (T, Co) = v[xi] (T, Ci) @ u[xi] (Ci, Co)`` for the 16 positions, in tasks of
    ``BLOCK_ROWS`` tiles.

    Args:
        v: (16, T, Ci), the input tiles.
        u: (16, Ci, Co), the filter tiles.
        m: (16, T, Co), written.
    """
    rows = m.shape[1]
    blocks = (rows + BLOCK_ROWS - 1) // BLOCK_ROWS
    for task in prange(16 * blocks):
        xi, r0, r1 = _task(task, blocks, rows)
        product(v[xi], u[xi], m[xi], r0, r1, 0, m.shape[2], False)


@njit(parallel=True, **_JIT)
def _gradient_products(v, dm, du):
    """``du[xi] (Ci, Co) = v[xi].T (Ci, T) @ dm[xi] (T, Co)`` for the 16 positions, in tasks
    of ``BLOCK_ROWS`` input channels; each sum over all T tiles in order.

    Args:
        v: (16, T, Ci), the input tiles.
        dm: (16, T, Co), the output gradient's tiles.
        du: (16, Ci, Co), written.
    """
    rows = du.shape[1]
    blocks = (rows + BLOCK_ROWS - 1) // BLOCK_ROWS
    for task in prange(16 * blocks):
        xi, r0, r1 = _task(task, blocks, rows)
        product(v[xi].T, dm[xi], du[xi], r0, r1, 0, du.shape[2], False)


# ---------------------------------------------------------------- the kernels
def _geometry(fn, x_shape, w_shape, padding):
    """``((ph, pw), (Ho, Wo))`` of a 3x3 convolution at stride 1, checked.

    Raises:
        ValueError: A filter that is not 3 x 3, a padding above 2 (the input gradient's
            padding, 2 - p, would be negative), or shapes that do not fit.
    """
    _, (ph, pw), out_hw = conv_geometry(fn, x_shape, w_shape, (1, 1), padding)
    if tuple(w_shape[2:]) != (3, 3):
        raise ValueError(f"{fn}: Winograd's F(2x2, 3x3) takes a 3 x 3 filter, got "
                         f"{w_shape[2]} x {w_shape[3]}")
    if max(ph, pw) > 2:
        raise ValueError(f"{fn}: expected a padding of at most 2, got {(ph, pw)}")
    return (ph, pw), out_hw


def _tiles(ho, wo):
    return (ho + 1) // 2, (wo + 1) // 2


def _convolve(x, w, flip, padding, out_shape):
    """The convolution of x (N, C, H, W) with w (or w flipped and transposed), stride 1."""
    n = x.shape[0]
    ph, pw = padding
    ho, wo = out_shape[2], out_shape[3]
    th, tw = _tiles(ho, wo)
    co, ci = w.shape[0], w.shape[1]
    if flip:  # (Co, 3, 3, Ci): each output channel's (Ci, 9) transposed
        g = np.empty((co, 9, ci), w.dtype)
        transpose_images(w.reshape(co, ci, 9), g)
        rows, cols = co, ci
    else:  # (Ci, 3, 3, Co): W (Co, Ci*9) transposed
        g = np.empty((ci * 9, co), w.dtype)
        transpose_matrix(w.reshape(co, ci * 9), g)
        rows, cols = ci, co
    u = np.empty((16, rows, cols), x.dtype)
    _filter_tiles(g.reshape(rows, 3, 3, cols), flip, u)
    v = np.empty((16, n * th * tw, rows), x.dtype)
    _input_tiles(nhwc(x), ph, pw, th, tw, v)
    m = np.empty((16, n * th * tw, cols), x.dtype)
    _products(v, u, m)
    y = empty_channels_last(out_shape, x.dtype)
    _output_tiles(m, th, tw, nhwc(y))
    return y


def conv2d_forward(x, w, padding):
    """Dense 3x3 convolution at stride 1 (``fits``); ``ReferenceKernels.conv2d_forward``'s
    contract.

    Args:
        x: The input (N, Ci, H, W), NCHW or channels-last.
        w: The weight (Co, Ci, 3, 3).
        padding: (ph, pw), at most 2 each.

    Returns:
        y (N, Co, Ho, Wo), channels-last.
    """
    fn = "conv2d_forward"
    x, w = np.asarray(x), np.ascontiguousarray(w)
    same_float_dtype(fn, x=x, w=w)
    padding, (ho, wo) = _geometry(fn, x.shape, w.shape, padding)
    return _convolve(x, w, False, padding, (x.shape[0], w.shape[0], ho, wo))


def conv2d_backward_input(gy, w, x_shape, padding):
    r"""Input gradient: gy convolved with the flipped, transposed kernel, padding $2 - p$.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo), NCHW or channels-last.
        w: The weight (Co, Ci, 3, 3).
        x_shape: The input's shape (N, Ci, H, W).
        padding: (ph, pw), at most 2 each.

    Returns:
        gx, of ``x_shape``, channels-last.
    """
    fn = "conv2d_backward_input"
    gy, w = np.asarray(gy), np.ascontiguousarray(w)
    same_float_dtype(fn, gy=gy, w=w)
    x_shape = tuple(int(s) for s in x_shape)
    (ph, pw), (ho, wo) = _geometry(fn, x_shape, w.shape, padding)
    grad_out_shape(fn, gy.shape, (x_shape[0], w.shape[0], ho, wo))
    return _convolve(gy, w, True, (2 - ph, 2 - pw), x_shape)


def conv2d_backward_weight(gy, x, w_shape, padding):
    r"""Weight gradient: $G^T (\sum_t V_t^T\, dM_t) G$ per position; the reference kernel's contract.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo), NCHW or channels-last.
        x: The input (N, Ci, H, W), NCHW or channels-last.
        w_shape: The weight's shape (Co, Ci, 3, 3).
        padding: (ph, pw), at most 2 each.

    Returns:
        gw, of ``w_shape``.
    """
    fn = "conv2d_backward_weight"
    gy, x = np.asarray(gy), np.asarray(x)
    dtype = same_float_dtype(fn, gy=gy, x=x)
    w_shape = tuple(int(s) for s in w_shape)
    (ph, pw), (ho, wo) = _geometry(fn, x.shape, w_shape, padding)
    n, ci = x.shape[0], x.shape[1]
    co = w_shape[0]
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    th, tw = _tiles(ho, wo)
    v = np.empty((16, n * th * tw, ci), dtype)
    _input_tiles(nhwc(x), ph, pw, th, tw, v)
    dm = np.empty((16, n * th * tw, co), dtype)
    _gradient_tiles(nhwc(gy), th, tw, dm)
    du = np.empty((16, ci, co), dtype)
    _gradient_products(v, dm, du)
    g = np.empty((ci * 9, co), dtype)
    _weight_gradient(du, g.reshape(ci, 3, 3, co))
    gw = np.empty((co, ci * 9), dtype)  # (Ci*9, Co) transposed: (Co, Ci, 3, 3)
    transpose_matrix(g, gw)
    return gw.reshape(w_shape)
