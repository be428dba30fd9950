r"""The int8 depthwise 3x3 on a padded float32 copy of each plane: no border pixels.

``qlinear_conv2d`` (``.int8``) sends a depthwise 3x3 here (groups = C = Co, a horizontal
stride of 1 or 2). Per (image, channel) plane:

1. the plane is copied, centred ($q_x - z_x$) and as float32, into a zeroed scratch of
   $(H + 2p_h) \times (W + 2p_w)$ (+ 2) values: the padding is the real 0, so every output
   pixel sums its nine taps the same way, with no test for the border;
2. at stride 1, the whole plane is one loop over the flat scratch: output $(o_h, o_w)$ sits
   at $q = o_h W_p + o_w$ ($W_p = W + 2p_w$) and its taps at $q + i W_p + j$, so that one
   loop of $H_o W_p$ steps (the two columns past each row computed and dropped) runs at the
   vector width even for a 7 x 7 map, where a loop per row of 7 would not; at other
   strides, one loop per output row (stride 2 in the row as its own loop: LLVM gathers
   every load when the stride is a variable);
3. the sum is converted to int32, the bias added in int32, and ``requant`` (MLAS's float32
   steps) gives the output.

Why float32: every product $|w (q_x - z_x)| \le 128 \cdot 255$ and every partial sum of
nine ($< 2^{19}$) is an integer below $2^{24}$, so the float32 sums are exact, in any
order, and equal the int32 sums of ``int8_reference.qlinear_conv2d``; float32 FMAs run
on every AVX-512 port where Numba's int32 products widen to int64 or run on ``vpmulld``.
The outputs are the reference's integers (tests/kernels/test_int8_kernels.py). Planes are
independent: the same bits at any thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (starts Numba's pool passive)
from .int8_requant import requant

_JIT = dict(cache=CACHE, boundscheck=False, fastmath=False)


@njit(inline="always")
def _centred_plane(x, n, ch, zp, ph, pw, plane):
    """plane (Hp * Wp + 2,) float32 <- x[n, ch] - zp inside, 0 in the padding."""
    h, w = x.shape[2], x.shape[3]
    wp = w + 2 * pw
    plane[:ph * wp + pw] = 0
    for r in range(h):
        row = plane[(r + ph) * wp + pw:(r + ph) * wp + pw + w]
        src = x[n, ch, r]
        for j in range(w):
            row[j] = np.float32(np.int32(src[j]) - zp)
        plane[(r + ph) * wp + pw + w:(r + ph + 1) * wp + pw] = 0  # right pad, next row's left
    plane[(h + ph) * wp + pw:] = 0


@njit(parallel=True, **_JIT)
def depthwise3x3(x, w, zp, sh, sw, ph, pw, bias, m, yzp, lo, hi, groups, out):
    """out[n, c] = requant(depthwise 3x3 of (x[n, c] - zp) + bias[c]) (the module's steps).

    x: (N, C, H, W) uint8 or int8; w: (C, 9) float32 (the int8 taps, row by row); zp, yzp:
    int32; sh, sw: strides (sw 1 or 2); ph, pw: paddings; bias: (C,) int32; m: (C,) float32;
    lo, hi: float32 bounds of ``acc * m``; groups: how many scratch buffers (the planes are
    split into that many runs); out: (N, C, Ho, Wo) of the output's dtype.
    """
    n_img, c, h, wd = x.shape
    ho, wo = out.shape[2], out.shape[3]
    hp, wp = h + 2 * ph, wd + 2 * pw
    tasks = n_img * c
    flat = sh == 1 and sw == 1
    for g in prange(groups):
        plane = np.empty(hp * wp + 2, np.float32)
        res = np.empty(ho * wp if flat else 0, np.int32)
        for t in range(g * tasks // groups, (g + 1) * tasks // groups):
            n, ch = t // c, t % c
            _centred_plane(x, n, ch, zp, ph, pw, plane)
            w00, w01, w02, w10, w11, w12, w20, w21, w22 = (w[ch, 0], w[ch, 1], w[ch, 2], w[ch, 3],
                                                           w[ch, 4], w[ch, 5], w[ch, 6], w[ch, 7],
                                                           w[ch, 8])
            bc, mc = bias[ch], m[ch]
            if flat:
                r0, r1, r2 = plane[0:], plane[wp:], plane[2 * wp:]
                for q in range(ho * wp):  # loop-counter indices: LLVM vectorises it
                    s = (w00 * r0[q] + w01 * r0[q + 1] + w02 * r0[q + 2]
                         + w10 * r1[q] + w11 * r1[q + 1] + w12 * r1[q + 2]
                         + w20 * r2[q] + w21 * r2[q + 1] + w22 * r2[q + 2])
                    res[q] = requant(np.int32(np.int32(s) + bc), mc, yzp, lo, hi)
                for oh in range(ho):
                    orow, rrow = out[n, ch, oh], res[oh * wp:oh * wp + wo]
                    for ow in range(wo):
                        orow[ow] = rrow[ow]
                continue
            for oh in range(ho):
                base = oh * sh * wp
                r0, r1, r2 = plane[base:], plane[base + wp:], plane[base + 2 * wp:]
                orow = out[n, ch, oh]
                if sw == 1:
                    for ow in range(wo):
                        s = (w00 * r0[ow] + w01 * r0[ow + 1] + w02 * r0[ow + 2]
                             + w10 * r1[ow] + w11 * r1[ow + 1] + w12 * r1[ow + 2]
                             + w20 * r2[ow] + w21 * r2[ow + 1] + w22 * r2[ow + 2])
                        orow[ow] = requant(np.int32(np.int32(s) + bc), mc, yzp, lo, hi)
                else:
                    for ow in range(wo):
                        q = 2 * ow
                        s = (w00 * r0[q] + w01 * r0[q + 1] + w02 * r0[q + 2]
                             + w10 * r1[q] + w11 * r1[q + 1] + w12 * r1[q + 2]
                             + w20 * r2[q] + w21 * r2[q + 1] + w22 * r2[q + 2])
                        orow[ow] = requant(np.int32(np.int32(s) + bc), mc, yzp, lo, hi)
    return out
