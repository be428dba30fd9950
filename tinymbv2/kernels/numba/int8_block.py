r"""A whole int8 inverted residual block in one kernel, band by band: its tensors stay in the cache.

Run layer by layer (``int8.py``'s prepared convolutions), a block writes its expanded
tensor E to memory and reads it back for the depthwise filter, then writes the filter's
output D and reads it back, as quads, for the projection: at 224 px batch 8 block 2's E
alone is 8 x 96 x 112 x 112 bytes = 9.2 MiB, more than the cores' L2 caches hold. Here
one task is a band of output rows of one image (``block.band_rows``, ``block.even_tasks``):

1. the band's input rows (its output rows at the stride, and the filter's halo of one row
   above and below, clipped to the image) go through the expansion's GEMM
   (``int8_dot.dot_requant_rows4x64`` on the quads of x, laid out once for the whole
   batch by ``int8.activation_quads``), requantized into a band of E, (Ch, rows, W)
   uint8, in the cache (a block without expansion reads x's rows instead);
2. four channels at a time, each plane of E is filtered on its bytes
   (``int8_filter.filter_rows_q``: the band's output rows; the rows outside the image are
   the padding), and the four channels' bytes are packed into D's quads, (Ch / 4, pixels)
   int32 words, the projection's operand;
3. the projection's GEMM requantizes into the output (N, Co, Ho, Wo), and, where the block
   has a residual sum, adds the input in its epilogue (``dot_requant_add_rows4x64``).

The arithmetic is each layer's own, operation by operation (the GEMMs' requantization,
the filter's exact sums), so the outputs are the integers of the layers run one by one
(tests: ``tests/kernels/test_int8_block.py``); only where the values live changes. The
halo rows' expansion is computed by both bands that need it (two extra rows of E a band
at stride 1, one at stride 2).

``prepare_qlinear_block`` takes the block's prepared convolutions (``prepare_qlinear_conv2d``)
and returns the block where all of them suit the kernel (uint8 activations, the VNNI GEMM's
1x1 convolutions, the 3x3 depthwise filter with padding 1, Ch a multiple of 4), else None
(the caller runs the layers one by one). At 224 px it takes all 17 blocks: fused, the 7x7
and 14x14 ones were faster too (figures in docs/kernels.md, "Int8 inference").
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (starts Numba's pool passive)
from ..int8_reference import prepared_input
from .block import band_rows, even_tasks
from .int8 import activation_quads
from .int8_dot import dot_requant_add_rows4x64, dot_requant_rows4x64
from .int8_filter import filter_rows_q

_JIT = dict(cache=CACHE, boundscheck=False, fastmath=False)
BAND_BYTES = 1024 * 1024
"""E + D of one band at most (bytes; ``block.band_rows``): a band stays in a core's L2."""
EVEN_TASKS_BELOW = 8
"""Fewer tasks than this are made even (``block.even_tasks``): two threads share them."""


@njit(**_JIT)
def _expand(xb, ae, kbi, base, m, zp, lo, hi, p0, p1, e):
    """e[i, p - p0] = requant(base[i] + sum_k we[i, k] x[k, p]) for pixels p0 <= p < p1.

    xb: (KBi, P) int32 quads of one image (P past p1 by 64 at least); ae: (Ch4, KBi) int32
    weight quads; e: (Ch, p1 - p0) uint8, written by ``dot_requant_rows4x64``.
    """
    ch = e.shape[0]
    for i0 in range(0, ae.shape[0], 4):
        for j0 in range(p0, p1, 64):
            dot_requant_rows4x64(ae, i0, xb, j0, kbi, base, m, zp, lo, hi, e, i0, j0 - p0,
                                 p1 - j0, min(4, ch - i0))


@njit(parallel=True, **_JIT)
def _blocks(x, xq, ae, e_args, w9, zsum, d_args, s, ap, p_args, add, sum_args, rows, y):
    """The block (module) over tasks (image, band of ``rows`` output rows); y written.

    x: (N, Ci, H, W) uint8; xq: (N, KBi, P64 + 64) its quads (unused without expansion:
    ae has no rows); e_args, d_args, p_args: each layer's (base or bias, m, zp, lo, hi);
    w9: (Ch, 9) float32 taps; ap: (Co4, Ch / 4) int32 projection quads; sum_args: the
    residual sum's float32 constants (``int8._gemm_quads``); y: (N, Co, Ho, Wo) uint8.
    """
    n, ci, h, wd = x.shape
    co, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    ch = w9.shape[0]
    expand = ae.shape[0] > 0
    eb, em, ezp, elo, ehi = e_args
    dbias, dm, dxzp, dzp, dlo, dhi = d_args
    pb, pm, pzp, plo, phi = p_args
    za, sa, zb, sb, inv, z = sum_args
    bands = (ho + rows - 1) // rows
    xf = x.reshape(n, ci, h * wd)
    yf = y.reshape(n, co, ho * wo)
    for t in prange(n * bands):
        img, r0 = t // bands, t % bands * rows
        r1 = min(ho, r0 + rows)
        hb = r1 - r0
        top = r0 * s  # the band's first padded row
        xr0, xr1 = max(0, top - 1), min(h, (r1 - 1) * s + 2)  # its image rows
        e = np.empty((ch if expand else 0, (xr1 - xr0) * wd), np.uint8)
        if expand:
            _expand(xq[img], ae, xq.shape[1], eb, em, ezp, elo, ehi, xr0 * wd, xr1 * wd, e)
        pix = hb * wo
        res = np.empty((4, pix), np.uint8)
        d = np.empty((ch // 4, pix + (-pix % 64)), np.int32)
        for q4 in range(ch // 4):
            for k in range(4):
                c = 4 * q4 + k
                src = e[c] if expand else xf[img, c]
                first = xr0 if expand else 0  # the image row at src's start
                filter_rows_q(src, first, h, w9, c, s, 1, 1, wd, wo, r0, r1, dbias[c], dm[c],
                              zsum[c], dxzp, dzp, dlo, dhi, res[k], 0)
            drow = d[q4]
            a0, a1, a2, a3 = res[0], res[1], res[2], res[3]
            for u in range(pix):
                drow[u] = (np.int32(a0[u]) | np.int32(a1[u]) << 8 | np.int32(a2[u]) << 16
                           | np.int32(a3[u]) << 24)
        sums = (za, sa, zb, sb, inv, z)
        for i0 in range(0, ap.shape[0], 4):
            for j0 in range(0, pix, 64):
                if add:
                    dot_requant_add_rows4x64(ap, i0, d, j0, ch // 4, pb, pm, pzp, plo, phi,
                                             yf[img], i0, r0 * wo + j0, pix - j0,
                                             min(4, co - i0), xf[img], sums)
                else:
                    dot_requant_rows4x64(ap, i0, d, j0, ch // 4, pb, pm, pzp, plo, phi, yf[img],
                                         i0, r0 * wo + j0, pix - j0, min(4, co - i0))
    return y


def _suits(p, path):
    """Is prepared convolution p one the fused block takes (uint8 in and out, ``path``)?"""
    return (p.path == path and p.x_dtype == np.uint8
            and p.y_dtype == np.uint8 and (path != "vnni" or p.pointwise)
            and (path != "depthwise" or p.padding == (1, 1)))


def prepare_qlinear_block(convs):
    """The fused block of an inverted residual block's prepared convolutions, or None.

    Args:
        convs: ``prepare_qlinear_conv2d``'s convolutions in order: the expansion (1x1; left
            out where the block has none), the depthwise 3x3 (padding 1, stride 1 or 2),
            the projection (1x1, prepared with ``residual=`` where the block adds its input).

    Returns:
        ``block(xq)``: xq (N, Ci, H, W) uint8 to the projection's output (N, Co, Ho, Wo)
        uint8, the integers of the convolutions run one by one; or None where a
        convolution does not suit the fused kernel (module).
    """
    prepared = [getattr(conv, "prepared", None) for conv in convs]
    if len(prepared) not in (2, 3) or any(p is None for p in prepared):
        return None
    expand = prepared[0] if len(prepared) == 3 else None
    dw, proj = prepared[-2], prepared[-1]
    if (expand is not None and not _suits(expand, "vnni")) or not _suits(dw, "depthwise") \
            or not _suits(proj, "vnni") or dw.c % 4 or proj.kb * 4 != dw.c:
        return None
    first = expand if expand is not None else dw
    add = proj.residual is not None
    if (expand is not None and expand.co != dw.c) or (add and (first.c != proj.co or
                                                              dw.stride != (1, 1))):
        return None
    s = dw.stride[0]
    ch, co = dw.c, proj.co
    if expand is not None:
        ae, e_args = expand.a, (expand.base, expand.m, expand.y_zp, *expand.lo_hi)
    else:  # the filter reads x itself
        ae = np.zeros((0, 1), np.int32)
        e_args = (np.zeros(1, np.int32), np.zeros(1, np.float32), np.int32(0),
                  np.float32(0), np.float32(0))
    d_args = (dw.bias, dw.m, dw.x_zp, dw.y_zp, *dw.lo_hi)
    p_args = (proj.base, proj.m, proj.y_zp, *proj.lo_hi)
    sum_args = proj.sum_args if add else (np.float32(0),) * 6
    fn = "prepare_qlinear_block"

    def block(xq):
        ho, wo = prepared_input(fn, xq, np.uint8, first.c, first.kernel, first.stride,
                                first.padding, first.dilation)
        if expand is not None:  # the filter's output size (3x3, padding 1, stride s)
            ho, wo = (ho - 1) // s + 1, (wo - 1) // s + 1
        xq = np.ascontiguousarray(xq)
        n, ci, h, wd = xq.shape
        if expand is not None:  # 64 words past the last pixel: the GEMM reads 64 at a time
            p = h * wd
            xb = activation_quads(xq.reshape(n, ci, p), 0, expand.kb, p + (-p % 64) + 64)
        else:
            xb = np.zeros((1, 1, 1), np.int32)
        rows = band_rows(ch, wd, wo, s, ho, 1, BAND_BYTES)
        rows = even_tasks(ho, rows, n, EVEN_TASKS_BELOW)
        y = np.empty((n, co, ho, wo), np.uint8)
        return _blocks(xq, xb, ae, e_args, dw.w9, dw.zsum, d_args, s, proj.a, p_args, add,
                       sum_args, rows, y)
    return block
