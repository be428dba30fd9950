r"""The int8 depthwise 3x3 on a padded float32 copy of each plane: no border pixels.

``qlinear_conv2d`` (``.int8``) sends a depthwise 3x3 here (groups = C = Co, a stride $s$ of
1 or 2 along both axes) on a CPU without AVX-512 VNNI; with it, ``.int8_filter`` filters
the bytes in vector registers instead, without this copy. Per (image, channel) plane:

1. the plane is copied, centred ($q_x - z_x$) and as float32, with its padding (the real
   0, so that every output pixel sums its nine taps the same way, with no test for the
   border), into $s \times s$ *phase planes*: padded pixel $(r, c)$ goes to plane
   $(r \bmod s, c \bmod s)$ at row $\lfloor r/s \rfloor$, column $\lfloor c/s \rfloor$ of
   width $W_q = \lceil W_p / s \rceil$ ($W_p = W + 2 p_w$; at stride 1, one plane: the padded
   plane itself);
2. the images are taken in runs of $n_b$ (as many as ``_SCRATCH`` float32 values hold, at
   least one, so that the planes are still in the cache when the filter reads them); the
   planes of one channel of a run follow each other in every phase plane ($H_q W_q$
   values apart, $H_q = \lceil H_p / s \rceil$), and output $(n, o_h, o_w)$ sits at
   $q = (n - n_0) H_q W_q + o_h W_q + o_w$ ($n_0$ the run's first image), its tap $(i, j)$ at
   $q + \lfloor i/s \rfloor W_q + \lfloor j/s \rfloor$ in phase plane
   $(i \bmod s, j \bmod s)$: one channel of a run is one loop over nine contiguous runs
   (the columns and rows past each map computed and dropped), at the vector width even for
   7 x 7 maps, where a loop per row of 7 would not be, and with no strided loads at
   stride 2. The padding's places are the same for every channel: zeroed once per buffer;
3. the sum is converted to int32, the bias added in int32, and ``requant`` (MLAS's float32
   steps) gives the output.

Why float32: every product $|w (q_x - z_x)| \le 128 \cdot 255$ and every partial sum of
nine ($< 2^{19}$) is an integer below $2^{24}$, so the float32 sums are exact, in any
order, and equal the int32 sums of ``int8_reference.qlinear_conv2d``; float32 products
and sums are plain vector instructions, where Numba's int32 products widen to int64 or
run on the slower ``vpmulld``.
The outputs are the reference's integers (tests/kernels/test_int8_kernels.py). Channels
are independent: the same bits at any thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (starts Numba's pool passive)
from .int8_requant import requant

_JIT = dict(cache=CACHE, boundscheck=False, fastmath=False)
# the float32 phase planes' room, in values: a run of images that fits it at a time
_SCRATCH = 16384


@njit(inline="always")
def _phases(x, n0, n1, ch, zp, s, ph, pw, hq, wq, size, buf):
    """buf <- the s x s phase planes of x[n, ch] - zp, padded (module), float32, n0 <= n < n1.

    Padded pixel (r, c) of image n goes to plane ``(r % s) * s + c % s`` (each ``size``
    long), at ``(n - n0) * hq * wq + (r // s) * wq + c // s``. Only the pixels are written: the
    rest (the padding, the columns and rows past it, the tail) is the same for every
    channel and stays at the zeros the caller wrote once.
    """
    h, w = x.shape[2], x.shape[3]
    # uint8 (or int8) to float32, then the zero point off: exact (integers below 2^9), and
    # one conversion of the narrow type, where the int32 difference widens to int64 first
    zf = np.float32(zp)
    if s == 1:  # each row one contiguous run
        for n in range(n0, n1):
            for xr in range(h):
                start = ((n - n0) * hq + xr + ph) * wq + pw
                seg, src = buf[start:start + w], x[n, ch, xr]
                for u in range(w):
                    seg[u] = np.float32(src[u]) - zf
        return
    # stride 2: both parities in one pass over the row (pairs of loads, no gathers)
    for n in range(n0, n1):
        for xr in range(h):
            r = xr + ph
            row = (r % 2) * 2 * size + ((n - n0) * hq + r // 2) * wq
            # image column j is padded column j + pw: plane (j + pw) % 2, column (j + pw) // 2
            a, b = row + pw % 2 * size + pw // 2, row + (1 - pw % 2) * size + (pw + 1) // 2
            ev, od, src = buf[a:a + (w + 1) // 2], buf[b:b + w // 2], x[n, ch, xr]
            # an odd row's last pixel first: stored after the loop, it kept LLVM from
            # vectorising the loop (about 2.5 times slower)
            if w % 2:
                ev[w // 2] = np.float32(src[w - 1]) - zf
            for u in range(w // 2):
                ev[u] = np.float32(src[2 * u]) - zf
                od[u] = np.float32(src[2 * u + 1]) - zf


@njit(parallel=True, **_JIT)
def depthwise3x3(x, w, zp, s, ph, pw, bias, m, yzp, lo, hi, groups, out):
    """out[n, c] = requant(depthwise 3x3 of (x[n, c] - zp) + bias[c]) (the module's steps).

    Args:
        x: (N, C, H, W) uint8 or int8, C-contiguous.
        w: (C, 9) float32: the int8 taps, row by row.
        zp: The input's zero point (int32).
        s: The stride, 1 or 2, along both axes.
        ph: The padding along H.
        pw: The padding along W.
        bias: (C,) int32.
        m: (C,) float32 multipliers.
        yzp: The output's zero point (int32).
        lo: The float32 lower bound of ``acc * m``.
        hi: The float32 upper bound.
        groups: How many scratch buffers: the channels are split into that many runs.
        out: (N, C, Ho, Wo) of the output's dtype, written.

    Returns:
        out.
    """
    n_img, c, h, wd = x.shape
    ho, wo = out.shape[2], out.shape[3]
    hq, wq = (h + 2 * ph + s - 1) // s, (wd + 2 * pw + s - 1) // s
    block = hq * wq  # one image's share of a phase plane
    # a run of nb images at a time: the phase planes stay in the cache between the copy
    # and the filter (the whole batch's, at 112 px, would not)
    nb = max(1, min(n_img, _SCRATCH // (s * s * block)))
    size = nb * block + wq + 2
    # tap (i, j): plane (i % s) * s + j % s, offset (i // s) * wq + j // s in it
    row1, row2 = (1 % s) * s * size + (1 // s) * wq, (2 % s) * s * size + (2 // s) * wq
    for g in prange(groups):
        buf = np.zeros(s * s * size, np.float32)  # the padding's zeros, for every channel
        res = np.empty((nb - 1) * block + ho * wq, out.dtype)  # the outputs: a byte each
        for ch in range(g * c // groups, (g + 1) * c // groups):
            w00, w01, w02, w10, w11, w12, w20, w21, w22 = (w[ch, 0], w[ch, 1], w[ch, 2], w[ch, 3],
                                                           w[ch, 4], w[ch, 5], w[ch, 6], w[ch, 7],
                                                           w[ch, 8])
            bc, mc = bias[ch], m[ch]
            for n0 in range(0, n_img, nb):
                n1 = min(n_img, n0 + nb)
                _phases(x, n0, n1, ch, zp, s, ph, pw, hq, wq, size, buf)
                # every output of these images, and the dropped ones (past each map), which
                # alone read the buffer past the last image (what an earlier run left there)
                steps = (n1 - n0 - 1) * block + ho * wq
                # loop-counter indices into a few runs (one per tap row and column parity):
                # LLVM vectorises the loop only while its run-time overlap tests with res stay few
                if s == 1:
                    r0, r1, r2 = buf[0:], buf[row1:], buf[row2:]
                    for q in range(steps):
                        acc = (w00 * r0[q] + w01 * r0[q + 1] + w02 * r0[q + 2]
                               + w10 * r1[q] + w11 * r1[q + 1] + w12 * r1[q + 2]
                               + w20 * r2[q] + w21 * r2[q + 1] + w22 * r2[q + 2])
                        res[q] = requant(np.int32(np.int32(acc) + bc), mc, yzp, lo, hi)
                else:  # even columns in plane a * 2, odd ones in plane a * 2 + 1
                    e0, o0 = buf[0:], buf[size:]
                    e1, o1, e2, o2 = buf[row1:], buf[row1 + size:], buf[row2:], buf[row2 + size:]
                    for q in range(steps):
                        acc = (w00 * e0[q] + w01 * o0[q] + w02 * e0[q + 1]
                               + w10 * e1[q] + w11 * o1[q] + w12 * e1[q + 1]
                               + w20 * e2[q] + w21 * o2[q] + w22 * e2[q + 1])
                        res[q] = requant(np.int32(np.int32(acc) + bc), mc, yzp, lo, hi)
                for n in range(n0, n1):
                    k = (n - n0) * block
                    for oh in range(ho):
                        orow = out[n, ch, oh]
                        rrow = res[k + oh * wq:k + oh * wq + wo]
                        for ow in range(wo):
                            orow[ow] = rrow[ow]
    return out
