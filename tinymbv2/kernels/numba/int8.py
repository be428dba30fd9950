r"""Int8 inference kernels in Numba: int8 x int8 -> int32 products, requantized in the epilogue.

``NumbaKernels`` takes ``qlinear_conv2d`` and ``qgemm`` from here; the contract (arguments,
the arithmetic, MLAS's requantization) is ``tinymbv2.kernels.int8_reference``'s, and the
outputs are the same integers on every input: the products and sums are exact in int32
(in any order, wrapping as the reference's do), and the requantization is the same float32
operations in the same order (``float32(acc) * m``, clamp, round half to even, ``+ z_y``).

**On a CPU with AVX-512 VNNI** (``int8_dot.VNNI``) the products run on ``vpdpbusd``, four
uint8 x int8 products added into each int32 lane, through the intrinsics of ``.int8_dot``:

* pointwise and dense convolutions (``_gemm_quads``): the broadcast form. The activations
  are laid out in *quads* (``_quads``; ``_patch_quads`` for im2col, the stem's 27 values
  per pixel): one int32 word per (4 channels, pixel), words of one quad row contiguous
  along the pixels, so that one ``vpdpbusd`` multiplies 16 pixels' quads by one broadcast
  quad of weights. 4 output channels x 64 pixels per block, the sums requantized in the
  registers and stored as bytes (``int8_dot.dot_requant_rows4x64``; with a residual sum,
  ``dot_requant_add_rows4x64``);
* the Linear (``_gemm_vnni``): 4 x 4 dot products along K (long, and only a few rows).

The activations go in raw (int8 ones + 128, as uint8): the zero point comes out as
$z_x \sum_k w_{ik}$ folded into the bias (``_base``), exact in int32.

**Without VNNI**, the GEMMs are ``_gemm_requant``: 4 x 4 dot products over centred int16
activations ($q_x - z_x$, laid out (pixels, channels) by ``_centred_channels_last`` or
``_patches``), int32 sums that LLVM vectorises with ``vpmulld`` (about half the float32
FMA's rate, measured: docs/kernels.md, "Int8 inference").

**The depthwise 3x3** (a stride of 1 or 2 along both axes): on a CPU with AVX-512 VNNI
``.int8_filter`` (the bytes of each row loaded where they are, widened, summed and
requantized in vector registers); elsewhere ``.int8_depthwise`` (per channel, a centred
float32 copy of the batch's planes with their padding, at stride 2 split into phase
planes, then the nine taps of every pixel in one loop with no border test). Both sum
integers below $2^{24}$ in float32, exactly. Other depthwise kernels (5x5, dilation,
other strides and groupings) go to the reference. A whole inverted residual block can run
as one kernel instead (``.int8_block``, what ``Int8Net`` calls).

Two things kept LLVM from vectorising these loops, found on the way: Numba widens
``int32 * int32`` to int64 (so every sum is cast back to int32, which LLVM narrows), and it
wraps negative indices around (``a[i - p]`` tests ``i - p < 0``), so every index in a hot loop
is a loop counter into a slice that starts at the right place.

Work is split into disjoint outputs (row blocks of the product per image, channels of the
depthwise filter), each summed by one thread in a fixed order: bit-identical on every run
and for any thread count (exact integer arithmetic would make it so anyway). The layout
pass ``_quads`` runs on one thread for a small map (one memory pass: a parallel loop's
start costs about what a second thread would save) and over the pool's threads from
``_PARALLEL_QUADS`` words (``_quads_parallel``: the large maps of a batch).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (starts Numba's pool passive)
from ..int8_reference import (output_range, prepared_conv_args, prepared_input,
                              prepared_residual, qgemm_args, qlinear_conv2d_args)
from .int8_dot import STEP, VNNI, dot_block4x4, dot_requant_add_rows4x64, dot_requant_rows4x64
from .int8_depthwise import depthwise3x3
from .int8_filter import depthwise3x3_rows, zero_point_sums
from .int8_requant import requant as _requant
from .int8_quantize import qlinear_add

_JIT = dict(cache=CACHE, boundscheck=False, fastmath=False)
# the quad words (int32) from which ``_quads`` runs as a parallel loop: below, a pass over
# the map is shorter than waking the pool's threads costs
_PARALLEL_QUADS = 1 << 17




# ----------------------------------------------------------------------- the GEMM
@njit(parallel=True, **_JIT)
def _gemm_requant(a, b, bias, m, zp, lo, hi, out):
    """``out[n, i, j] = requant(bias[i] + sum_k a[i, k] * b[n, j, k])``, 4 x 4 outputs at a time.

    The GEMM for CPUs without VNNI: sixteen int32 sums in the loop over k (``vpmulld`` on
    widened int16 values).

    a: (R4, K) int16, R4 a multiple of 4 (zero rows past the R outputs);
    b: (N, S4, K) int16, S4 a multiple of 4 (zero rows past S);
    out: (N, R, S) int8/uint8. lo, hi: float32 bounds of ``acc * m`` (``q_min - z``, ...).
    """
    n_img, r, s = out.shape
    kk = a.shape[1]
    rb, sb = a.shape[0] // 4, b.shape[1] // 4
    for t in prange(n_img * rb):
        n, i0 = t // rb, t % rb * 4
        bn = b[n]
        for jb in range(sb):
            j0 = jb * 4
            c00 = c01 = c02 = c03 = np.int32(0)
            c10 = c11 = c12 = c13 = np.int32(0)
            c20 = c21 = c22 = c23 = np.int32(0)
            c30 = c31 = c32 = c33 = np.int32(0)
            for k in range(kk):
                a0, a1 = np.int32(a[i0, k]), np.int32(a[i0 + 1, k])
                a2, a3 = np.int32(a[i0 + 2, k]), np.int32(a[i0 + 3, k])
                b0, b1 = np.int32(bn[j0, k]), np.int32(bn[j0 + 1, k])
                b2, b3 = np.int32(bn[j0 + 2, k]), np.int32(bn[j0 + 3, k])
                c00 = np.int32(c00 + a0 * b0)
                c01 = np.int32(c01 + a0 * b1)
                c02 = np.int32(c02 + a0 * b2)
                c03 = np.int32(c03 + a0 * b3)
                c10 = np.int32(c10 + a1 * b0)
                c11 = np.int32(c11 + a1 * b1)
                c12 = np.int32(c12 + a1 * b2)
                c13 = np.int32(c13 + a1 * b3)
                c20 = np.int32(c20 + a2 * b0)
                c21 = np.int32(c21 + a2 * b1)
                c22 = np.int32(c22 + a2 * b2)
                c23 = np.int32(c23 + a2 * b3)
                c30 = np.int32(c30 + a3 * b0)
                c31 = np.int32(c31 + a3 * b1)
                c32 = np.int32(c32 + a3 * b2)
                c33 = np.int32(c33 + a3 * b3)
            block = ((c00, c01, c02, c03), (c10, c11, c12, c13), (c20, c21, c22, c23),
                     (c30, c31, c32, c33))
            for di in range(4):
                i = i0 + di
                if i < r:
                    row = block[di]
                    for dj in range(4):
                        j = j0 + dj
                        if j < s:
                            out[n, i, j] = _requant(np.int32(row[dj] + bias[i]), m[i], zp, lo, hi)
    return out


@njit(parallel=True, **_JIT)
def _gemm_vnni(a, b, base, m, zp, lo, hi, out):
    """``out[n, i, j] = requant(base[i] + sum_k a[i, k] * b[n, j, k])`` on ``vpdpbusd``.

    a: (R4, K) int8 weights, b: (N, S4, K) uint8 activations (raw, not centred), K a multiple
    of ``int8_dot.STEP`` (zeros past the sum), R4 and S4 multiples of 4; base[i] = bias[i] -
    z_x sum_k a[i, k] takes the zero point out. out: (N, R, S).
    """
    n_img, r, s = out.shape
    kk = a.shape[1]
    rb, sb = a.shape[0] // 4, b.shape[1] // 4
    for t in prange(n_img * rb):
        n, i0 = t // rb, t % rb * 4
        bn = b[n]
        for jb in range(sb):
            j0 = jb * 4
            c = dot_block4x4(a, i0, bn, j0, kk)
            for di in range(4):
                i = i0 + di
                if i < r:
                    for dj in range(4):
                        j = j0 + dj
                        if j < s:
                            out[n, i, j] = _requant(np.int32(c[4 * di + dj] + base[i]), m[i], zp,
                                                    lo, hi)
    return out


@njit(parallel=True, **_JIT)
def _gemm_quads(a, b, base, m, zp, lo, hi, out, add, res, za, sa, zb, sb, inv, z):
    """out[n, i, j] = requant(base[i] + sum_k w[i, k] x[n, k, j]) on
    ``dot_requant_rows4x64``; where ``add``, QLinearAdd of res and that output instead
    (``dot_requant_add_rows4x64``).

    a: (R4, KB) int32 weight quads; b: (N, KB, P64) int32 activation quads (``_quads``).
    One task per (image, 4 rows); each 4 x 64 block of sums is requantized in registers and
    stored as bytes. With ``add``: res (N, R, S) uint8 (scale sa, zero point za, float32),
    the output's own quantization (sb, zb), the sum's ``inv = 1 / scale`` and z;
    out[n, i, j] = ``int8_quantize``'s sum of res[n, i, j] and the requantized output, the
    same float32 operations (the residual sum of an inverted residual block in the
    projection's epilogue, not a pass of its own).
    """
    n_img, r, s = out.shape
    kb = a.shape[1]
    rb, sb_ = a.shape[0] // 4, b.shape[2] // 64
    for t in prange(n_img * rb):
        n, i0 = t // rb, t % rb * 4
        bn = b[n]
        for jb in range(sb_):
            j0 = jb * 64
            # the requantization (and the sum) in registers, bytes stored
            if add:
                dot_requant_add_rows4x64(a, i0, bn, j0, kb, base, m, zp, lo, hi, out[n], i0, j0,
                                         s - j0, min(4, r - i0), res[n], (za, sa, zb, sb, inv, z))
            else:
                dot_requant_rows4x64(a, i0, bn, j0, kb, base, m, zp, lo, hi, out[n], i0, j0,
                                     s - j0, min(4, r - i0))
    return out


@njit(parallel=True, **_JIT)
def _patch_quads(x, flip, zp, kh, kw, sh, sw, ph, pw, ho, wo, out):
    """im2col into the quad layout: value k of pixel p's patch (k = (c kh + i) kw + j) in
    byte k % 4 of out[n, k // 4, p]; x + flip, ``zp`` (the real 0) in the padding.

    One task per (image, output row); each value k is OR-ed into its byte of the row's words
    in one pass over the row (loop-counter indices, so that LLVM vectorises it; the
    pixels whose tap falls in the padding get ``zp``). out starts at zero.
    """
    n_img, c, h, w = x.shape
    k_all = c * kh * kw
    for t in prange(n_img * ho):
        n, oh = t // ho, t % ho
        for k in range(k_all):
            ci, i, j = k // (kh * kw), k // kw % kh, k % kw
            orow = out[n, k // 4, oh * wo:(oh + 1) * wo]
            shift = 8 * (k % 4)
            pad = np.int32(zp) << shift
            ih = oh * sh + i - ph
            lo_ = min(max(0, (pw - j + sw - 1) // sw), wo)  # the outputs whose tap is inside
            hi_ = max(min(wo, (w - 1 - j + pw) // sw + 1), lo_)
            if ih < 0 or ih >= h:
                lo_ = hi_ = wo
            for ow in range(lo_):
                orow[ow] |= pad
            for ow in range(hi_, wo):
                orow[ow] |= pad
            if hi_ > lo_:
                src = x[n, ci, ih, lo_ * sw + j - pw:]
                seg = orow[lo_:hi_]
                if sw == 1:
                    for u in range(hi_ - lo_):
                        seg[u] |= (np.int32(src[u]) + flip) << shift
                elif sw == 2:
                    for u in range(hi_ - lo_):
                        seg[u] |= (np.int32(src[2 * u]) + flip) << shift
                else:
                    for u in range(hi_ - lo_):
                        seg[u] |= (np.int32(src[sw * u]) + flip) << shift
    return out


@njit(inline="always")
def _quad_row(x, flip, out, t):
    """Task ``t = n * KB + q`` of ``_quads``: out[n, q] from the channel rows 4q .. 4q + 3 of image n."""
    k, p = x.shape[1], x.shape[2]
    kb = out.shape[1]
    n, q = t // kb, t % kb
    orow, tail = out[n, q, :p], out[n, q, p:]
    for j in range(tail.shape[0]):
        tail[j] = 0
    if 4 * q + 4 <= k:  # a whole quad: each word written once, not OR-ed four times
        x0, x1, x2, x3 = x[n, 4 * q], x[n, 4 * q + 1], x[n, 4 * q + 2], x[n, 4 * q + 3]
        for j in range(p):
            orow[j] = ((np.int32(x0[j]) + flip) | (np.int32(x1[j]) + flip) << 8
                       | (np.int32(x2[j]) + flip) << 16 | (np.int32(x3[j]) + flip) << 24)
        return
    for j in range(p):
        orow[j] = 0
    for e in range(k - 4 * q):
        src, shift = x[n, 4 * q + e], 8 * e
        for j in range(p):
            orow[j] |= (np.int32(src[j]) + flip) << shift


@njit(**_JIT)
def _quads(x, flip, out):
    """out[n, q, p] = the four uint8 values x[n, 4q .. 4q + 3, p] (+ flip) packed in one int32.

    x: (N, K, P) int8/uint8; out: (N, KB, P64) int32, every word written: bytes past K and
    words past P are zero. Four channel rows in, one row of words out, a loop LLVM
    vectorises (no zeroed buffer needed: zeroing a fresh one costs a pass of its own). On one
    thread: a small map's pass is shorter than waking the pool's threads for a parallel loop
    (``pool``); ``_quads_parallel`` takes the large ones (``_PARALLEL_QUADS``).
    """
    for t in range(x.shape[0] * out.shape[1]):
        _quad_row(x, flip, out, t)
    return out


@njit(parallel=True, **_JIT)
def _quads_parallel(x, flip, out):
    """``_quads`` with its (image, quad row) tasks over the pool's threads: the same words
    (each task writes its own row)."""
    for t in prange(x.shape[0] * out.shape[1]):
        _quad_row(x, flip, out, t)
    return out


def activation_quads(x3, flip, kb, words):
    """The quads of x3 (``_quads``): (N, KB, ``words``) int32, every word written (zeros past
    x3's pixels and channels); over the pool's threads for a large map.

    Args:
        x3: (N, K, P) int8/uint8, C-contiguous.
        flip: 128 for int8 values (stored as uint8), else 0.
        kb: KB, the quads (K / 4 rounded up).
        words: The words per quad row, P or more.

    Returns:
        The quads.
    """
    b = np.empty((x3.shape[0], kb, words), np.int32)
    (_quads_parallel if b.size >= _PARALLEL_QUADS else _quads)(x3, flip, b)
    return b


def _zero_padded(a, rows, columns):
    """a, C-contiguous, with zero rows and columns added up to (rows, columns): a copy only
    where some are added."""
    if a.shape == (rows, columns):
        return np.ascontiguousarray(a)
    padded = np.zeros((rows, columns), a.dtype)
    padded[:a.shape[0], :a.shape[1]] = a
    return padded


def _base(bias, zp_u, wq2):
    """``bias - zp_u * wq2.sum(1)``, in int32 (wrapping as the reference's
    int32 sums do): what takes the activations' zero point out of the raw uint8 products."""
    wsum = wq2.sum(axis=1, dtype=np.int32)
    return (bias - np.int32(zp_u) * wsum).astype(np.int32)


def _vnni_product(wq2, bias, x_zp, flip, m, y_zp, lo, hi, fill, out):
    """The Linear's GEMM on ``dot_block4x4``: weights (R, K) int8; ``fill(cols)`` writes the
    uint8 activations into cols (N, S4, K32) (zeros); out (N, R, S)."""
    r, k = wq2.shape
    k32 = k + (-k % STEP)
    a = _zero_padded(wq2, r + (-r % 4), k32)
    base = _base(bias, x_zp + flip, wq2)
    n, s = out.shape[0], out.shape[2]
    cols = np.zeros((n, s + (-s % 4), k32), np.uint8)
    fill(cols)
    return _gemm_vnni(a, cols, base, m, np.int32(y_zp), lo, hi, out)


def _padded_rows(a, multiple):
    """a (R, K) with zero rows added up to a multiple of ``multiple``: whole register blocks."""
    extra = -a.shape[-2] % multiple
    if not extra:
        return a
    pad = [(0, 0)] * a.ndim
    pad[-2] = (0, extra)
    return np.pad(a, pad)


@njit(parallel=True, **_JIT)
def _centred_channels_last(x, zp, out):
    """out[n, p, c] = x[n, c, p] - zp (int16): each image transposed, the sum contiguous."""
    n_img, c, p = x.shape
    bands = (p + 63) // 64
    for t in prange(n_img * bands):
        n, p0 = t // bands, t % bands * 64
        p1 = min(p0 + 64, p)
        for ci in range(c):
            for q in range(p0, p1):
                out[n, q, ci] = np.int16(x[n, ci, q]) - zp
    return out


@njit(parallel=True, **_JIT)
def _patches(x, zp, kh, kw, sh, sw, ph, pw, ho, wo, out):
    """im2col, channels last: ``out[n, oh*wo + ow, (c*kh + i)*kw + j] = x - zp``, 0 in the padding."""
    n_img, c, h, w = x.shape
    for t in prange(n_img * ho):
        n, oh = t // ho, t % ho
        for ow in range(wo):
            q = oh * wo + ow
            for ci in range(c):
                for i in range(kh):
                    ih = oh * sh + i - ph
                    for j in range(kw):
                        iw = ow * sw + j - pw
                        v = np.int16(0)
                        if 0 <= ih < h and 0 <= iw < w:
                            v = np.int16(x[n, ci, ih, iw]) - zp
                        out[n, q, (ci * kh + i) * kw + j] = v
    return out


# ----------------------------------------------------------------------- the kernels
def _bounds(y_dtype, y_zp, ys, relu6):
    q_min, q_max = output_range(y_dtype, y_zp, ys, relu6)
    return np.float32(q_min - y_zp), np.float32(q_max - y_zp)


_NO_RESIDUAL = np.zeros((1, 1, 1), np.uint8)
_NO_SUM = (np.float32(0),) * 6


class _PreparedConv:
    """One convolution's weights laid out for its kernel once: ``conv(xq, ho, wo)`` runs it.

    Built from the checked arguments (``qlinear_conv2d_args``' values); what it holds per
    path: the depthwise 3x3's float32 taps (C, 9); the VNNI GEMM's weight quads (R4, KB) and
    ``_base`` (the bias with the zero point taken out); the int16 GEMM's padded weights; or,
    for the shapes that go to the reference, the call itself.
    """

    def __init__(self, checked, groups, relu6, x_dtype, reference, residual=None):
        (_, wq, bias, x_zp, y_zp, m, y_dtype, ys, stride, padding, dilation, _) = checked
        co, cg, kh, kw = wq.shape
        c = cg * groups
        self.c, self.co, self.kernel = c, co, (kh, kw)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.x_dtype, self.y_dtype = np.dtype(x_dtype), y_dtype
        self.m, self.lo_hi, self.y_zp = m, _bounds(y_dtype, y_zp, ys, relu6), np.int32(y_zp)
        self.reference, self.residual = None, residual
        self.y_qparams = (ys, y_dtype.type(y_zp))
        if (dilation == (1, 1) and groups == c == co and cg == 1 and (kh, kw) == (3, 3)
                and stride[0] == stride[1] and stride[1] in (1, 2)):
            self.path = "depthwise"
            self.w9 = np.ascontiguousarray(wq.reshape(co, 9).astype(np.float32))
            self.bias, self.x_zp = bias, np.int32(x_zp)
            self.zsum = zero_point_sums(self.w9, x_zp)  # int8_filter's zero-point term
        elif dilation != (1, 1) or groups != 1:
            self.path, self.reference = "reference", reference
        elif VNNI:
            self.path = "vnni"
            self.pointwise = (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0)
            self.flip = 128 if self.x_dtype == np.int8 else 0  # int8 activations as uint8: + 128
            wq2 = wq.reshape(co, -1)
            self.kb = (wq2.shape[1] + 3) // 4
            self.a = _zero_padded(wq2, co + (-co % 4), 4 * self.kb).view(np.int32)
            self.base = _base(bias, x_zp + self.flip, wq2)
            self.pad_value = x_zp + self.flip
            if residual is not None:  # qlinear_add's float32 constants, as int8_quantize's
                sa, za, sy, zy = residual
                self.sum_args = (np.float32(za), np.float32(sa), np.float32(y_zp), np.float32(ys),
                                 np.float32(np.float32(1.0) / np.float32(sy)), np.float32(zy))
        else:
            self.path = "int16"
            self.pointwise = (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0)
            self.a = _padded_rows(wq.reshape(co, -1).astype(np.int16), 4)
            self.bias, self.x_zp = bias, np.int16(x_zp)

    def __call__(self, xq, ho, wo, aq=None):
        """xq (N, C, H, W) of the checked dtype, (ho, wo) its output's size: (N, Co, Ho, Wo);
        with a residual prepared (``residual``: a_scale, a_zero_point, the sum's scale and zero
        point), QLinearAdd of aq and that output: in the pointwise GEMM's epilogue, else the
        kernel ``qlinear_add`` after it."""
        if self.residual is None and aq is not None:
            raise ValueError("prepare_qlinear_conv2d: an aq (residual) given to a convolution "
                             "prepared without residual=")
        if self.residual is not None:
            if not isinstance(aq, np.ndarray) or aq.dtype != np.uint8:
                raise TypeError(f"prepare_qlinear_conv2d: aq (the residual) must be a uint8 "
                                f"array, got {type(aq).__name__} {getattr(aq, 'dtype', '')}")
            want = (xq.shape[0], self.co, ho, wo)
            if aq.shape != want:
                raise ValueError(f"prepare_qlinear_conv2d: aq (the residual) must be {want}, "
                                 f"got {aq.shape}")
            if self.path != "vnni" or not self.pointwise:
                sa, za, sy, zy = self.residual
                return qlinear_add(aq, sa, za, self._conv(xq, ho, wo), *self.y_qparams, sy, zy)
        return self._conv(xq, ho, wo, aq)

    def _conv(self, xq, ho, wo, aq=None):
        if self.path == "reference":
            return self.reference(xq)
        xq = np.ascontiguousarray(xq)
        n, c, h, w = xq.shape
        co, (kh, kw), stride, padding = self.co, self.kernel, self.stride, self.padding
        lo, hi = self.lo_hi
        out = np.empty((n, co, ho, wo), self.y_dtype)  # see kernels.numba on allocation
        if self.path == "depthwise":
            if VNNI:  # AVX-512: the filter on the bytes, in registers
                return depthwise3x3_rows(xq, self.w9, self.x_zp, stride[0], padding[0],
                                         padding[1], self.bias, self.m, self.zsum, self.y_zp, lo,
                                         hi, out)
            return depthwise3x3(xq, self.w9, self.x_zp, stride[0], padding[0], padding[1],
                                self.bias, self.m, self.y_zp, lo, hi, min(c, 32), out)
        s = ho * wo
        if self.path == "vnni":
            if self.pointwise:
                b = activation_quads(xq.reshape(n, c, h * w), self.flip, self.kb, s + (-s % 64))
            else:  # im2col, written straight into the quad layout (OR-ed into zeros)
                b = np.zeros((n, self.kb, s + (-s % 64)), np.int32)
                _patch_quads(xq, self.flip, self.pad_value, kh, kw, stride[0], stride[1],
                             padding[0], padding[1], ho, wo, b)
            if aq is None:
                _gemm_quads(self.a, b, self.base, self.m, self.y_zp, lo, hi,
                            out.reshape(n, co, s), False, _NO_RESIDUAL, *_NO_SUM)
            else:
                _gemm_quads(self.a, b, self.base, self.m, self.y_zp, lo, hi,
                            out.reshape(n, co, s), True,
                            np.ascontiguousarray(aq).reshape(n, co, s), *self.sum_args)
            return out
        p4 = s + (-s % 4)
        if self.pointwise:
            cols = np.zeros((n, p4, c), np.int16)
            _centred_channels_last(xq.reshape(n, c, h * w), self.x_zp, cols)
        else:
            cols = np.zeros((n, p4, c * kh * kw), np.int16)
            _patches(xq, self.x_zp, kh, kw, stride[0], stride[1], padding[0], padding[1], ho,
                     wo, cols)
        _gemm_requant(self.a, cols, self.bias, self.m, self.y_zp, lo, hi, out.reshape(n, co, s))
        return out


def qlinear_conv2d(xq, x_scale, x_zero_point, wq, w_scale, w_zero_point, bias_q, y_scale,
                   y_zero_point, stride, padding, groups, dilation=(1, 1), relu6=False):
    """ONNX ``QLinearConv``; the contract is ``int8_reference.qlinear_conv2d``'s.

    Pointwise (1x1, stride 1, no padding, groups 1) and dense (groups 1) convolutions run
    as the GEMM, depthwise 3x3 (groups = C = Co, a stride of 1 or 2 along both axes) as
    ``int8_depthwise.depthwise3x3``; any other grouping or stride, or a dilation other than 1,
    goes to the reference. The weights are prepared on every call (``prepare_qlinear_conv2d``
    does it once).

    Args:
        xq: (N, C, H, W) int8 or uint8.
        x_scale: Scalar (float32).
        x_zero_point: Scalar of xq's dtype.
        wq: (Co, C / groups, kh, kw) int8.
        w_scale: (Co,) float32, or a scalar.
        w_zero_point: 0 (symmetric weights).
        bias_q: (Co,) int32, or None.
        y_scale: Scalar (float32).
        y_zero_point: Scalar, int8 or uint8: the output's dtype.
        stride: An int or a pair.
        padding: An int or a pair.
        groups: 1, C, or any divisor of C and Co.
        dilation: An int or a pair.
        relu6: Clamp the output to ReLU6's range.

    Returns:
        (N, Co, Ho, Wo) of y_zero_point's dtype, C-contiguous.
    """
    checked = qlinear_conv2d_args("qlinear_conv2d", xq, x_scale, x_zero_point, wq, w_scale,
                                  w_zero_point, bias_q, y_scale, y_zero_point, stride, padding,
                                  groups, dilation)
    xq = checked[0]

    def reference(x):
        from ..int8_reference import qlinear_conv2d as ref
        return ref(x, x_scale, x_zero_point, wq, w_scale, w_zero_point, bias_q, y_scale,
                   y_zero_point, stride, padding, groups, dilation, relu6)
    return _PreparedConv(checked, groups, relu6, xq.dtype, reference)(xq, *checked[-1])


def prepare_qlinear_conv2d(x_scale, x_zero_point, x_dtype, wq, w_scale, w_zero_point, bias_q,
                           y_scale, y_zero_point, stride, padding, groups, dilation=(1, 1),
                           relu6=False, residual=None):
    """``qlinear_conv2d`` with everything but the input checked and prepared once:
    ``conv(xq)``, or ``conv(xq, aq)`` with a residual sum; the contract is
    ``int8_reference.prepare_qlinear_conv2d``'s. A pointwise convolution's residual sum runs
    in its GEMM's epilogue (``_gemm_quads``), on a CPU with VNNI.

    Each call checks only the input (``int8_reference.prepared_input``: dtype, channels,
    size) and runs the kernel on the prepared weights: the same integers as
    ``qlinear_conv2d`` (the same preparation, the same kernels).

    Args:
        x_scale: Scalar (float32).
        x_zero_point: Scalar of x_dtype.
        x_dtype: int8 or uint8: the inputs' dtype.
        wq: (Co, C / groups, kh, kw) int8.
        w_scale: (Co,) float32, or a scalar.
        w_zero_point: 0 (symmetric weights).
        bias_q: (Co,) int32, or None.
        y_scale: Scalar (float32).
        y_zero_point: Scalar, int8 or uint8: the output's dtype.
        stride: An int or a pair.
        padding: An int or a pair.
        groups: 1, C, or any divisor of C and Co.
        dilation: An int or a pair.
        relu6: Clamp the output to ReLU6's range.
        residual: None, or ``(a_scale, a_zero_point, sum_scale, sum_zero_point)``.

    Returns:
        ``conv(xq)`` (``conv(xq, aq)`` with a residual): xq (N, C, H, W) of x_dtype to
        (N, Co, Ho, Wo), C-contiguous.
    """
    fn = "prepare_qlinear_conv2d"
    checked = prepared_conv_args(fn, x_scale, x_zero_point, x_dtype, wq, w_scale, w_zero_point,
                                 bias_q, y_scale, y_zero_point, stride, padding, groups, dilation)
    add = prepared_residual(fn, residual, checked[6])

    def reference(x):
        from ..int8_reference import qlinear_conv2d as ref
        return ref(x, x_scale, x_zero_point, wq, w_scale, w_zero_point, bias_q, y_scale,
                   y_zero_point, stride, padding, groups, dilation, relu6)
    prepared = _PreparedConv(checked, groups, relu6, x_dtype, reference, add)
    c, kernel = prepared.c, prepared.kernel
    stride, padding, dilation, x_dtype = (prepared.stride, prepared.padding, prepared.dilation,
                                          prepared.x_dtype)

    def conv(xq, aq=None):
        ho, wo = prepared_input(fn, xq, x_dtype, c, kernel, stride, padding, dilation)
        return prepared(xq, ho, wo, aq)
    conv.prepared = prepared  # what ``int8_block.prepare_qlinear_block`` fuses
    return conv


def qgemm(aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, bias_q, y_scale, y_zero_point,
          relu6=False):
    """The Linear in int8 (``com.microsoft.QGemm``, ``transB=1``); the reference's contract.

    Computed as $Y^T = B A^T$ by the GEMM (the weight rows are its register rows, so the
    per-output-channel multiplier is per row), then transposed (M x N, small).

    Args:
        aq: (M, K) int8 or uint8.
        a_scale: Scalar (float32).
        a_zero_point: Scalar of aq's dtype.
        bq: (N, K) int8.
        b_scale: (N,) float32, or a scalar.
        b_zero_point: 0 (symmetric weights).
        bias_q: (N,) int32, or None.
        y_scale: Scalar (float32).
        y_zero_point: Scalar, int8 or uint8: the output's dtype.
        relu6: Clamp the output to ReLU6's range.

    Returns:
        (M, N) of y_zero_point's dtype, C-contiguous.
    """
    aq, bq, bias, a_zp, y_zp, m, y_dtype, ys = qgemm_args(
        "qgemm", aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, bias_q, y_scale,
        y_zero_point)
    lo, hi = _bounds(y_dtype, y_zp, ys, relu6)
    mm, nn = aq.shape[0], bq.shape[0]
    if VNNI:
        flip = 128 if aq.dtype == np.int8 else 0
        out = np.empty((1, nn, mm), y_dtype)

        def fill(cols):
            cols[0, :mm, :aq.shape[1]] = (aq.astype(np.int32) + flip).astype(np.uint8)
        _vnni_product(bq, bias, a_zp, flip, m, y_zp, lo, hi, fill, out)
        return np.ascontiguousarray(out[0].T)
    a = _padded_rows(bq.astype(np.int16), 4)
    cols = _padded_rows((aq.astype(np.int16) - np.int16(a_zp)), 4)[None]
    out = np.empty((1, nn, mm), y_dtype)
    _gemm_requant(a, np.ascontiguousarray(cols), bias, m, np.int32(y_zp), lo, hi, out)
    return np.ascontiguousarray(out[0].T)
