r"""The int8 depthwise 3x3 filter in vector registers: bytes in, bytes out.

``filter_rows_q`` computes output rows of one channel, 16 pixels per vector, the column
blocks one after the other and, in each, the rows top to bottom:

    for each block of 16 output columns c0 .. c0 + 15:
        load the filter's first rows (masked 32-byte loads; outside the image: z_x)
        for each output row:
            load the row(s) new to the window, widen the bytes to float32
            acc = sum of the nine taps times the window's vectors (fused multiply-adds)
            requantize acc in the registers, store 16 bytes (masked at the row's end)
            slide the window down (one row at stride 1, two at stride 2)

At stride 1 the three taps of a row are one 32-byte load widened and shifted by 0, 1 and 2
lanes. No padded or centred copy of the plane is made (``int8_depthwise`` makes one per
channel), so a plane's bytes are read where they are: a block's expanded band
(``int8_block``) or a layer's input (``depthwise3x3_rows``).

The arithmetic: with $x$ the input bytes (or $z_x$ in the padding) and $w$ the int8 taps,

$$\text{acc} = \sum_{i,j} w_{ij}\, x_{ij} - z_x \sum_{i,j} w_{ij}
  = \sum_{i,j} w_{ij} (x_{ij} - z_x)$$

every product and partial sum an integer below $2^{24}$ in magnitude, so float32 sums it
exactly in any order: the int32 sum of ``int8_reference.qlinear_conv2d``. Then
``int32(acc) + bias``, and ``int8_requant.requant``'s float32 steps in its order
(``float32(acc) * m``, clamped to [lo, hi], rounded half to even, plus the output's zero
point), as ``int8_dot.dot_requant_rows4x64`` does them.

At stride 2, output pixel $c$ reads input columns $2c - p, 2c - p + 1, 2c - p + 2$: one
32-byte load at $2c_0 - p$ gives the first two taps of 16 pixels (its even and odd bytes)
and one at $2c_0 - p + 2$ the third (its even bytes).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .cache import CACHE
from . import pool  # noqa: F401  (starts Numba's pool passive)
from .llvm import array_data, as_i64

_JIT = dict(cache=CACHE, boundscheck=False, fastmath=False)
LANES = 16
"""Output pixels per vector (16 float32 lanes of a 512-bit register)."""

_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_F32 = ir.FloatType()


def _vec(t, n=LANES):
    return ir.VectorType(t, n)


def _codegen(stride):
    """The code generator of ``filter_rows_q`` for one stride (1 or 2)."""

    def codegen(context, builder, signature, args):
        b = builder
        module = b.module
        vin, vf, vi = _vec(_I8, 2 * LANES), _vec(_F32), _vec(_I32)
        masks_in, masks = _vec(ir.IntType(1), 2 * LANES), _vec(ir.IntType(1))
        load = cgutils.get_or_insert_function(
            module, ir.FunctionType(vin, [ir.PointerType(), _I32, masks_in, vin]),
            "llvm.masked.load.v32i8.p0")
        store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [_vec(_I8), ir.PointerType(), _I32, masks]),
            "llvm.masked.store.v16i8.p0")
        fma = cgutils.get_or_insert_function(module, ir.FunctionType(vf, [vf] * 3),
                                             "llvm.fma.v16f32")
        rint = cgutils.get_or_insert_function(module, ir.FunctionType(vf, [vf]),
                                              "llvm.rint.v16f32")
        sig = signature.args
        src_data = array_data(context, b, sig[0], args[0])
        w_data = array_data(context, b, sig[3], args[3])
        dst_data = array_data(context, b, sig[18], args[18])
        (first, height, ch, ph, pw, width, wo, r0, r1, dst_at) = as_i64(
            b, [args[1], args[2], args[4], args[5], args[6], args[7], args[8], args[9], args[10],
                args[19]])
        bias = b.trunc(as_i64(b, [args[11]])[0], _I32)
        zp_in = b.trunc(as_i64(b, [args[14]])[0], _I8)
        zp_out = b.trunc(as_i64(b, [args[15]])[0], _I32)
        m, zsum, lo, hi = (context.cast(b, args[k], sig[k], types.float32)
                           for k in (12, 13, 16, 17))
        signed = sig[0].dtype == types.int8

        def const(v, t=_I64):
            return ir.Constant(t, v)

        def splat(value, vt):
            one = b.insert_element(ir.Constant(vt, ir.Undefined), value, const(0, _I32))
            return b.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                    ir.Constant(_vec(_I32, vt.count), [0] * vt.count))

        taps = [splat(b.load(b.gep(w_data, [b.add(b.mul(ch, const(9)), const(t))])), vf)
                for t in range(9)]
        passthru = splat(zp_in, vin)
        lane_in = ir.Constant(_vec(_I32, 2 * LANES), list(range(2 * LANES)))
        lane = ir.Constant(_vec(_I64), list(range(LANES)))
        zero_in = ir.Constant(_vec(_I32, 2 * LANES), [0] * (2 * LANES))
        width_v = splat(b.trunc(width, _I32), _vec(_I32, 2 * LANES))
        m_v, zsum_v, lo_v, hi_v = (splat(v, vf) for v in (m, zsum, lo, hi))
        bias_v, zp_v = splat(bias, vi), splat(zp_out, vi)
        undef_in = ir.Constant(vin, ir.Undefined)
        even = ir.Constant(_vec(_I32), list(range(0, 2 * LANES, 2)))
        odd = ir.Constant(_vec(_I32), list(range(1, 2 * LANES, 2)))

        def widen(v):  # bytes to float32 lanes
            wide = b.sext(v, _vec(_I32, v.type.count)) if signed else b.zext(
                v, _vec(_I32, v.type.count))
            return b.sitofp(wide, _vec(_F32, v.type.count))

        def inside(start):
            """The lanes whose column start + lane is in the row."""
            cols = b.add(splat(b.trunc(start, _I32), _vec(_I32, 2 * LANES)), lane_in)
            return b.and_(b.icmp_signed(">=", cols, zero_in), b.icmp_signed("<", cols, width_v))

        def row_bytes(r, start, cols):
            """Image row r's 32 bytes from column start (zp outside the image)."""
            ok = b.and_(b.icmp_signed(">=", r, const(0)), b.icmp_signed("<", r, height))
            at = b.add(b.mul(b.sub(r, first), width), start)
            mask = b.and_(cols, splat(ok, masks_in))
            return b.call(load, [b.gep(src_data, [at]), const(1, _I32), mask, passthru])

        def row_taps(r, starts, cols):
            """The three tap vectors of image row r for the block's 16 outputs."""
            v = row_bytes(r, starts[0], cols[0])
            if stride == 1:  # columns c0 - pw .. + 31 as float32: taps j at lanes j .. j + 15
                lo_f = widen(b.shuffle_vector(v, undef_in, ir.Constant(
                    _vec(_I32), list(range(LANES)))))
                hi_f = widen(b.shuffle_vector(v, undef_in, ir.Constant(
                    _vec(_I32), list(range(LANES, 2 * LANES)))))
                return [lo_f] + [b.shuffle_vector(lo_f, hi_f, ir.Constant(
                    _vec(_I32), list(range(j, j + LANES)))) for j in (1, 2)]
            third = row_bytes(r, starts[1], cols[1])
            return [widen(b.shuffle_vector(v, undef_in, even)),
                    widen(b.shuffle_vector(v, undef_in, odd)),
                    widen(b.shuffle_vector(third, undef_in, even))]

        window = [[cgutils.alloca_once(b, vf) for _ in range(3)] for _ in range(2)]
        blocks = b.sdiv(b.add(wo, const(LANES - 1)), const(LANES))
        with cgutils.for_range(b, blocks) as block:
            c0 = b.mul(block.index, const(LANES))
            start = b.sub(b.mul(c0, const(stride)), pw)
            starts = [start, b.add(start, const(2))]
            cols = [inside(st) for st in starts]
            left = b.sub(wo, c0)
            keep = b.icmp_signed("<", lane, splat(left, _vec(_I64)))
            # the window: the filter's rows above the first output row's last one
            top = b.sub(b.mul(r0, const(stride)), ph)
            for k in range(2):
                for j, v in enumerate(row_taps(b.add(top, const(k)), starts, cols)):
                    b.store(v, window[k][j])
            with cgutils.for_range(b, b.sub(r1, r0)) as rows:
                oh = b.add(r0, rows.index)
                r = b.sub(b.mul(oh, const(stride)), ph)  # the filter's top row
                if stride == 1:
                    grid = [[b.load(window[k][j]) for j in range(3)] for k in range(2)]
                    grid.append(row_taps(b.add(r, const(2)), starts, cols))
                else:  # the top row is the last one's bottom row; two new rows
                    grid = [[b.load(window[0][j]) for j in range(3)],
                            row_taps(b.add(r, const(1)), starts, cols),
                            row_taps(b.add(r, const(2)), starts, cols)]
                acc = ir.Constant(vf, [ir.Constant(_F32, 0.0)] * LANES)
                for i in range(3):
                    for j in range(3):
                        acc = b.call(fma, [taps[3 * i + j], grid[i][j], acc])
                q = b.add(b.fptosi(b.fsub(acc, zsum_v), vi), bias_v)  # the int32 sum, exact
                f = b.fmul(b.sitofp(q, vf), m_v)
                f = b.select(b.fcmp_ordered("<", f, lo_v), lo_v, f)
                f = b.select(b.fcmp_ordered(">", f, hi_v), hi_v, f)
                y = b.add(b.fptosi(b.call(rint, [f]), vi), zp_v)
                at = b.add(b.add(dst_at, b.mul(rows.index, wo)), c0)
                b.call(store, [b.trunc(y, _vec(_I8)), b.gep(dst_data, [at]), const(1, _I32),
                               keep])
                slide = grid[1:] if stride == 1 else [grid[2], grid[2]]
                for k in range(2):
                    for j in range(3):
                        b.store(slide[k][j], window[k][j])
        return context.get_dummy_value()

    return codegen


def _make(stride):
    def filter_rows(typingctx, src, first, height, w9, ch, ph, pw, width, wo, r0, r1, bias, m,
                    zsum, zp_in, zp_out, lo, hi, dst, dst_at):
        if (src.dtype not in (types.uint8, types.int8) or w9.dtype != types.float32
                or dst.dtype not in (types.uint8, types.int8)):
            return None
        sig = types.void(src, first, height, w9, ch, ph, pw, width, wo, r0, r1, bias, m, zsum,
                         zp_in, zp_out, lo, hi, dst, dst_at)
        return sig, _codegen(stride)
    return filter_rows


_rows_s1 = intrinsic(_make(1))
_rows_s2 = intrinsic(_make(2))


@njit(inline="always")
def filter_rows_q(src, first, height, w9, ch, s, ph, pw, width, wo, r0, r1, bias, m, zsum, zp_in,
                  zp_out, lo, hi, dst, dst_at):
    """Output rows r0 .. r1 - 1 of channel ch's 3x3 depthwise filter (module) into dst.

    Output row oh reads image rows ``oh * s - ph`` .. ``+ 2`` (those outside [0, height):
    the padding) and columns ``c * s - pw`` .. ``+ 2``; its Wo bytes go to
    ``dst[dst_at + (oh - r0) * wo:]``. The rows are kept in registers from one output row
    to the next (a sliding window), 16 output pixels at a time.

    Args:
        src: The input bytes, uint8 or int8, 1-D: image rows of ``width``, row ``first`` at 0.
        first: The image row at src's start.
        height: The image's rows.
        w9: (C, 9) float32: the int8 taps, row by row.
        ch: The channel (w9's row).
        s: The stride, 1 or 2.
        ph: The padding above row 0.
        pw: The padding left of column 0.
        width: The image's width.
        wo: The output's width.
        r0: The first output row.
        r1: The output row after the last.
        bias: The int32 bias.
        m: The float32 multiplier.
        zsum: float32 ``z_x * sum(w9[ch])`` (exact; ``zero_point_sums``).
        zp_in: The input's zero point.
        zp_out: The output's zero point (int32).
        lo: The float32 lower bound of ``acc * m``.
        hi: The float32 upper bound.
        dst: The output bytes, 1-D.
        dst_at: Where output row r0 starts in dst.
    """
    if s == 1:
        _rows_s1(src, first, height, w9, ch, ph, pw, width, wo, r0, r1, bias, m, zsum, zp_in,
                 zp_out, lo, hi, dst, dst_at)
    else:
        _rows_s2(src, first, height, w9, ch, ph, pw, width, wo, r0, r1, bias, m, zsum, zp_in,
                 zp_out, lo, hi, dst, dst_at)


def zero_point_sums(w9, zp):
    """float32 ``zp * sum(w9[c])`` per channel c: exact (integers below $2^{24}$).

    Args:
        w9: (C, 9) float32: the int8 taps.
        zp: The input's zero point.

    Returns:
        (C,) float32.
    """
    return (np.int64(zp) * w9.astype(np.int64).sum(axis=1)).astype(np.float32)


@njit(parallel=True, **_JIT)
def depthwise3x3_rows(x, w9, zp, s, ph, pw, bias, m, zsum, yzp, lo, hi, out):
    """out[n, c] = the requantized 3x3 depthwise filter of x[n, c] (module), row by row.

    Args:
        x: (N, C, H, W) uint8 or int8, C-contiguous.
        w9: (C, 9) float32 taps.
        zp: The input's zero point.
        s: The stride, 1 or 2, along both axes.
        ph: The padding above row 0.
        pw: The padding left of column 0.
        bias: (C,) int32.
        m: (C,) float32 multipliers.
        zsum: (C,) float32 (``zero_point_sums``).
        yzp: The output's zero point (int32).
        lo: The float32 lower bound of ``acc * m``.
        hi: The float32 upper bound.
        out: (N, C, Ho, Wo) uint8 or int8, C-contiguous, written.

    Returns:
        out.
    """
    n, c, h, wd = x.shape
    ho, wo = out.shape[2], out.shape[3]
    xf = x.reshape(n, c, h * wd)
    of = out.reshape(n, c, ho * wo)
    for t in prange(n * c):
        img, ch = t // c, t % c
        filter_rows_q(xf[img, ch], 0, h, w9, ch, s, ph, pw, wd, wo, 0, ho, bias[ch], m[ch],
                      zsum[ch], zp, yzp, lo, hi, of[img, ch], 0)
    return out
