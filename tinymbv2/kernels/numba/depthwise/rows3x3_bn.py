"""The 3x3 depthwise filter of an inference block, strides 1 and 2, with its BatchNorm and
ReLU6, in vector registers.

``..block_channels_last`` computes a block's expansion for a band of rows into a scratch
of channels-last pixels, ``(R, W, C)``, with the rows above and below the image already
zeros. This filter reads that scratch, one vector of channels (L = 16 float32 with
AVX-512) at a time, as ``.rows3x3`` does: the nine weight vectors stay in registers and a
3 x 3 window of input vectors slides along each output row, so each output vector costs
three loads at stride 1 (six at stride 2), nine fused multiply-adds and one store, and
the BatchNorm and ReLU6 of the block's middle layer are applied before the store:

    for each output row r, for c = 0 .. Wo - 1:
        load the window's new column(s)         x[r*s + i, c*s + 1]      (and c*s at stride 2)
        z = sum_{i,j} w[3i + j] * x[r*s + i, c*s - 1 + j]
        d[r, c] = clamp((z - mean) * scale + bias)      clamp: to [0, 6] with ReLU6

Columns left of 0 and right of W - 1 are the padding, masked loads with no lane set
(zeros); so are rows outside the source's ``height`` (none in a block's scratch, whose zero
rows are real). The sum is ``w[0] * x`` then one fused multiply-add per tap in tap order: a
fixed order, the same bits wherever the band falls.

The same filter is the numba set's channels-last depthwise layer with a BatchNorm-eval
epilogue (``forward_bn``: the 7x7 blocks at 224 px, which run layer by layer), one task
per image and vector of channels, the padding rows masked.
"""
from __future__ import annotations

from numba import njit, prange, types
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from ..cache import CACHE
from .. import pool  # noqa: F401  (the one-pool set-up)
from ..batchnorm import epilogue_table
from ..llvm import Emit, array_data, as_i64, lanes
from .rows3x3 import filter_taps

_JIT = dict(cache=CACHE, boundscheck=False)


@intrinsic
def filter_rows_bn(typingctx, src, src_at, top, height, taps, bn, c0, c, dst, dst_at, rows, wo,
                   wd, stride, relu6, valid):
    """``dst[r, c] = clamp(BN(sum_{i,j} taps[3i + j] * src[r*s + top + i, c*s - 1 + j]))`` for
    one vector of channels (the first ``valid`` lanes) of ``rows`` output rows of Wo pixels;
    rows of src outside [0, height) are padding (zeros).

    Args:
        typingctx: Numba's typing context.
        src: The scratch, channels-last: pixels ``c`` elements apart, rows ``wd * c`` apart.
        src_at: The element of src where row 0's first pixel's vector starts.
        top: The row of src that output row 0's window starts at (-1: the padding above).
        height: The rows of src.
        taps: The filter, a (9, C) table (tap t's vector at ``t * c + c0``).
        bn: The BatchNorm, a (3, C) table: mean, scale, bias.
        c0: The vector's first channel.
        c: C, the channels.
        dst: The output, channels-last, ``(rows * Wo, C)``, written.
        dst_at: The element of dst where row 0's first pixel's vector starts.
        rows: Output rows.
        wo: Wo, output pixels per row.
        wd: W, input pixels per row.
        stride: 1 or 2.
        relu6: Clamp to [0, 6].
        valid: The lanes that are channels (the last vector's may be fewer).

    Returns:
        The signature and the code generator (the call returns nothing).
    """
    dtype = src.dtype
    if dtype not in (types.float32, types.float64) or taps.dtype != dtype or dst.dtype != dtype \
            or bn.dtype != dtype:
        return None
    sig = types.void(src, src_at, top, height, taps, bn, c0, c, dst, dst_at, rows, wo, wd, stride,
                     relu6, valid)

    def codegen(context, builder, signature, args):
        e = Emit(context, builder, dtype)
        src_data, taps_data, bn_data, dst_data = (
            array_data(context, builder, signature.args[i], args[i]) for i in (0, 4, 5, 8))
        src_at, top, height, c0, c, dst_at, rows, wo, wd, stride, valid = as_i64(
            builder, [args[i] for i in (1, 2, 3, 6, 7, 9, 10, 11, 12, 13, 15)])
        relu6 = builder.icmp_signed("!=", args[14], ir.Constant(args[14].type, 0))
        mask, none = e.mask(valid), e.mask(e.const(0))
        w = [e.load(taps_data, e.at(c0, e.times(t, c)), mask) for t in range(9)]
        mean, scale, bias = (e.load(bn_data, e.at(c0, e.times(k, c)), mask) for k in range(3))
        line = e.times(wd, c)
        cols = [[cgutils.alloca_once_value(builder, e.zero) for _ in range(3)] for _ in range(3)]

        def load_column(starts, masks, col, slot):  # input column ``col`` (an i64), 3 rows
            inside = builder.icmp_signed("<", col, wd)
            at = e.times(builder.select(inside, col, e.const(0)), c)
            for i in range(3):
                m = builder.select(inside, masks[i], none)
                builder.store(e.load(src_data, e.at(starts[i], at), m), cols[i][slot])

        def row_loop(s):
            with cgutils.for_range(builder, rows) as rows_loop:
                r = rows_loop.index
                starts, masks = [], []
                for i in range(3):  # input row r*s + top + i: no lane set when outside
                    ir_ = builder.add(builder.add(e.times(s, r), top), e.const(i))
                    inside = builder.and_(builder.icmp_signed(">=", ir_, e.const(0)),
                                          builder.icmp_signed("<", ir_, height))
                    masks.append(builder.select(inside, mask, none))
                    starts.append(e.at(src_at, e.times(builder.select(inside, ir_, e.const(0)),
                                                       line)))
                out_row = e.at(dst_at, e.times(e.times(r, wo), c))
                for i in range(3):  # column -1 is padding
                    builder.store(e.zero, cols[i][0])
                if s == 1:  # column 0 starts the window's middle
                    load_column(starts, masks, e.const(0), 1)
                with cgutils.for_range(builder, wo) as cols_loop:
                    ow = cols_loop.index
                    if s == 1:
                        load_column(starts, masks, builder.add(ow, e.const(1)), 2)
                    else:
                        load_column(starts, masks, e.times(2, ow), 1)
                        load_column(starts, masks, builder.add(e.times(2, ow), e.const(1)), 2)
                    window = [[builder.load(cols[i][j]) for j in range(3)] for i in range(3)]
                    acc = builder.fmul(w[0], window[0][0])
                    for t in range(1, 9):
                        acc = e.fma(w[t], window[t // 3][t % 3], acc)
                    z = builder.fadd(builder.fmul(builder.fsub(acc, mean), scale), bias)
                    e.store(e.clamp6(z, relu6), dst_data,
                            e.at(out_row, e.times(ow, c)), mask)
                    for i in range(3):  # slide: the right column becomes the left
                        if s == 1:
                            builder.store(window[i][1], cols[i][0])
                            builder.store(window[i][2], cols[i][1])
                        else:
                            builder.store(window[i][2], cols[i][0])

        with builder.if_else(builder.icmp_signed("==", stride, e.const(1))) as (one, two):
            with one:
                row_loop(1)
            with two:
                row_loop(2)
        return context.get_dummy_value()

    return sig, codegen


@njit(**_JIT)
def depthwise_rows_bn(e, wd, s, taps, bn, relu6, d, rows, wo):
    """The filter on a band's scratch, every vector of channels (see the module).

    Args:
        e: The scratch ``(R*W, C)``, contiguous: ``R = (rows - 1)*s + 3`` rows of W pixels.
        wd: W.
        s: The stride, 1 or 2.
        taps: The filter (9, C), one row per tap.
        bn: The BatchNorm (3, C): mean, scale = weight / sqrt(var + eps), bias.
        relu6: Clamp to [0, 6].
        d: The output ``(rows*Wo, C)``, contiguous, written.
        rows: Output rows.
        wo: Wo.
    """
    c = e.shape[1]
    step = lanes(e)
    for c0 in range(0, c, step):
        filter_rows_bn(e, c0, 0, e.shape[0] // wd, taps, bn, c0, c, d, c0, rows, wo, wd, s, relu6,
                       min(step, c - c0))


@njit(parallel=True, **_JIT)
def _images(x3, h, wd, taps, bn, relu6, s, y3, ho, wo):
    """One task per (image, vector of channels): the whole plane, padding 1 on every side."""
    n, c = x3.shape[0], x3.shape[2]
    step = lanes(x3)
    vectors = (c + step - 1) // step
    for task in prange(n * vectors):
        b, c0 = task // vectors, task % vectors * step
        filter_rows_bn(x3[b], c0, -1, h, taps, bn, c0, c, y3[b], c0, ho, wo, wd, s, relu6,
                       min(step, c - c0))
    return y3


def takes(w_shape, stride, padding) -> bool:
    """Does ``forward_bn`` compute this layer: a 3x3 filter, padding 1, stride 1 or 2 (the
    same along both axes)?

    Args:
        w_shape: The filter's shape (C, 1, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw).

    Returns:
        Whether it does.
    """
    geometry = (tuple(w_shape[2:]), tuple(padding))
    return geometry == ((3, 3), (1, 1)) and tuple(stride) in ((1, 1), (2, 2))


def forward_bn(x3, h, wd, w, s, ep, y3):
    """A depthwise 3x3 layer (padding 1, stride s) and its BatchNorm-eval epilogue on a
    channels-last batch, one (image, vector of channels) per task.

    Args:
        x3: The input ``(N, H*W, C)``, C-contiguous.
        h: H.
        wd: W.
        w: The filter (C, 1, 3, 3).
        s: The stride, 1 or 2.
        ep: ``batchnorm.epilogue_args``' (mean, scale, bias, flags).
        y3: The output ``(N, Ho*Wo, C)``, C-contiguous, written.

    Returns:
        y3.
    """
    c = x3.shape[2]
    ho, wo = (h - 1) // s + 1, (wd - 1) // s + 1
    return _images(x3, h, wd, filter_taps(w, False), epilogue_table(ep, c, x3.dtype),
                   bool(ep[3][1]), s, y3, ho, wo)
