r"""uint8 x int8 products on AVX-512 VNNI's ``vpdpbusd``, as two Numba intrinsics.

``dot_requant_rows4x64`` and ``dot_requant_add_rows4x64`` (the convolutions: the broadcast
form, with the requantization, and the residual sum, in the registers: the int32 sums
never leave them) and ``dot_block4x4`` (the Linear: dot products along K).

``vpdpbusd`` multiplies 32 unsigned bytes by 32 signed bytes and adds each group of four
products to one of eight int32 lanes (256-bit form): 32 multiply-adds per instruction,
twice what a float32 FMA does per vector of the same width. Numba's loops do not reach
it (LLVM makes ``vpmulld`` of int32 lanes from a Numba loop over widened int8 values:
half the float32 FMA's rate, measured; ``int8.py``), so these intrinsics emit it directly
(``llvm.x86.avx512.vpdpbusd.256`` / ``.512``, as ``llvm.py``'s kernels emit ``llvm.fma``).
``dot_block4x4``:

$$C[i_0 + r, j_0 + c] = \sum_{k < K} A[i_0 + r, k]\, B[j_0 + c, k]
\qquad (r, c < 4)$$

with A int8 (the weights), B uint8 (the activations, raw: the zero point is taken out by
the caller as $z \sum_k A[i, k]$), both C-contiguous with K a multiple of 32 (zeros past the
real sum), in sixteen vector accumulators summed across their lanes at the end. The int32
sums wrap as the reference's do (it never comes near: $|C| \le 255 \cdot 128 \cdot K$).

``VNNI``: whether the CPU Numba compiles for has it (``+avx512vnni`` and ``+avx512vl``);
without it ``int8.py`` keeps its Numba loop.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .llvm import array_data, as_i64, target_features

VNNI = {"+avx512vnni", "+avx512vl"} <= set(target_features())
"""Does the CPU Numba compiles for have AVX-512 VNNI (``vpdpbusd``) on 256-bit vectors?"""

STEP = 32
"""Bytes of K per ``vpdpbusd`` (the 256-bit form): K is padded to a multiple of this."""

_V8I32 = ir.VectorType(ir.IntType(32), 8)


@intrinsic
def dot_block4x4(typingctx, a, i0, b, j0, k):
    """The 16 int32 sums ``C[i0 + r, j0 + c]``, r-major, of a (R, K) int8 and b (S, K) uint8.

    K (``k``) a multiple of ``STEP``; rows ``i0 .. i0 + 3`` of a and ``j0 .. j0 + 3`` of b
    must exist.

    Args:
        typingctx: Numba's typing context.
        a: (R, K) int8, C-contiguous.
        i0: The first of the four rows of a.
        b: (S, K) uint8, C-contiguous.
        j0: The first of the four rows of b.
        k: K.

    Returns:
        The signature and the code generator (the call returns the 16 sums, a tuple).
    """
    if a.dtype != types.int8 or b.dtype != types.uint8:
        return None
    sig = types.UniTuple(types.int32, 16)(a, i0, b, j0, k)

    def codegen(context, builder, signature, args):
        module = builder.module
        dp = cgutils.get_or_insert_function(
            module, ir.FunctionType(_V8I32, [_V8I32] * 3), "llvm.x86.avx512.vpdpbusd.256")
        reduce_add = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.IntType(32), [_V8I32]), "llvm.vector.reduce.add.v8i32")
        a_data = array_data(context, builder, signature.args[0], args[0])
        b_data = array_data(context, builder, signature.args[2], args[2])
        i0_, j0_, kk = as_i64(builder, [args[1], args[3], args[4]])
        i64 = ir.IntType(64)
        a_rows = [builder.mul(builder.add(i0_, ir.Constant(i64, r)), kk) for r in range(4)]
        b_rows = [builder.mul(builder.add(j0_, ir.Constant(i64, c)), kk) for c in range(4)]
        zero = ir.Constant(_V8I32, [ir.Constant(ir.IntType(32), 0)] * 8)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(4)] for _ in range(4)]
        steps = builder.udiv(kk, ir.Constant(i64, STEP))

        def load(data, row, at):
            p = builder.gep(data, [builder.add(row, at)])
            return builder.load(builder.bitcast(p, _V8I32.as_pointer()), align=1)

        with cgutils.for_range(builder, steps) as loop:
            at = builder.mul(loop.index, ir.Constant(i64, STEP))
            av = [load(a_data, a_rows[r], at) for r in range(4)]   # signed weights
            bv = [load(b_data, b_rows[c], at) for c in range(4)]   # unsigned activations
            for r in range(4):
                for c in range(4):
                    builder.store(builder.call(dp, [builder.load(acc[r][c]), bv[c], av[r]]),
                                  acc[r][c])
        sums = [builder.call(reduce_add, [builder.load(acc[r][c])]) for r in range(4)
                for c in range(4)]
        return context.make_tuple(builder, signature.return_type, sums)

    return sig, codegen


LANES = 16
"""int32 lanes of a 512-bit vector: the pixels one ``vpdpbusd`` of ``dot_requant_rows4x64``
serves."""

_V16I32 = ir.VectorType(ir.IntType(32), 16)


_V16F32, _V16I8 = ir.VectorType(ir.FloatType(), LANES), ir.VectorType(ir.IntType(8), LANES)


def _requant_codegen(add):
    """The code generator of ``dot_requant_rows4x64`` (``add``: of ``dot_requant_add_rows4x64``)."""

    def codegen(context, builder, signature, args):
        module = builder.module
        i64, i32 = ir.IntType(64), ir.IntType(32)
        dp = cgutils.get_or_insert_function(
            module, ir.FunctionType(_V16I32, [_V16I32] * 3), "llvm.x86.avx512.vpdpbusd.512")
        rint = cgutils.get_or_insert_function(
            module, ir.FunctionType(_V16F32, [_V16F32]), "llvm.rint.v16f32")
        masks = ir.VectorType(ir.IntType(1), LANES)
        store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [_V16I8, ir.PointerType(), i32, masks]),
            "llvm.masked.store.v16i8.p0")
        load = cgutils.get_or_insert_function(
            module, ir.FunctionType(_V16I8, [ir.PointerType(), i32, masks, _V16I8]),
            "llvm.masked.load.v16i8.p0")
        (a_data, b_data, base_data, m_data, out_data) = (
            array_data(context, builder, signature.args[i], args[i]) for i in (0, 2, 5, 6, 10))
        i0_, j0_, kbv, row_, col_, count_, rows_ = as_i64(
            builder, [args[1], args[3], args[4], args[11], args[12], args[13], args[14]])
        zp_ = builder.trunc(as_i64(builder, [args[7]])[0], i32)
        lo_, hi_ = (context.cast(builder, args[k], signature.args[k], types.float32)
                    for k in (8, 9))

        def stride(k):
            shape = context.make_array(signature.args[k])(context, builder, args[k]).shape
            return as_i64(builder, [builder.extract_value(shape, 1)])[0]

        a_stride, b_stride, out_stride = stride(0), stride(2), stride(10)

        def splat(value, vt):
            one = builder.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                          ir.Constant(_V16I32, [ir.Constant(i32, 0)] * LANES))

        zero = ir.Constant(_V16I32, [ir.Constant(i32, 0)] * LANES)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(4)] for _ in range(4)]
        a_rows = [builder.mul(builder.add(i0_, ir.Constant(i64, r)), a_stride) for r in range(4)]
        with cgutils.for_range(builder, kbv) as loop:
            b_row = builder.add(builder.mul(loop.index, b_stride), j0_)
            bv = [builder.load(builder.bitcast(
                builder.gep(b_data, [builder.add(b_row, ir.Constant(i64, LANES * v))]),
                _V16I32.as_pointer()), align=4) for v in range(4)]
            for r in range(4):
                word = builder.load(builder.gep(a_data, [builder.add(a_rows[r], loop.index)]))
                w = splat(word, _V16I32)
                for v in range(4):
                    builder.store(builder.call(dp, [builder.load(acc[r][v]), bv[v], w]),
                                  acc[r][v])
        lo_v, hi_v, zp_v = splat(lo_, _V16F32), splat(hi_, _V16F32), splat(zp_, _V16I32)
        if add:  # QLinearAdd's float32 constants (int8_quantize.qlinear_add's order)
            res_data = array_data(context, builder, signature.args[15], args[15])
            za, sa, zb, sb, inv, z = (splat(builder.extract_value(args[16], k), _V16F32)
                                      for k in range(6))
            f_zero = ir.Constant(_V16F32, [ir.Constant(ir.FloatType(), 0.0)] * LANES)
            f_255 = ir.Constant(_V16F32, [ir.Constant(ir.FloatType(), 255.0)] * LANES)
            b_zero = ir.Constant(_V16I8, [ir.Constant(ir.IntType(8), 0)] * LANES)
        lane = ir.Constant(ir.VectorType(i64, LANES), list(range(LANES)))
        for r in range(4):
            with cgutils.if_likely(builder, builder.icmp_signed("<", ir.Constant(i64, r), rows_)):
                i = builder.add(i0_, ir.Constant(i64, r))
                base_v = splat(builder.load(builder.gep(base_data, [i])), _V16I32)
                m_v = splat(builder.load(builder.gep(m_data, [i])), _V16F32)
                out_row = builder.add(builder.mul(builder.add(row_, ir.Constant(i64, r)),
                                                  out_stride), col_)
                for v in range(4):
                    s = builder.add(builder.load(acc[r][v]), base_v)
                    f = builder.fmul(builder.sitofp(s, _V16F32), m_v)
                    f = builder.select(builder.fcmp_ordered("<", f, lo_v), lo_v, f)
                    f = builder.select(builder.fcmp_ordered(">", f, hi_v), hi_v, f)
                    q = builder.add(builder.fptosi(builder.call(rint, [f]), _V16I32), zp_v)
                    left = builder.sub(count_, ir.Constant(i64, LANES * v))
                    mask = builder.icmp_signed("<", lane, splat(left, ir.VectorType(i64, LANES)))
                    at = builder.add(out_row, ir.Constant(i64, LANES * v))
                    if add:  # (float32(res) - za) sa + (float32(q) - zb) sb, quantized
                        rv = builder.call(load, [builder.gep(res_data, [at]), ir.Constant(i32, 1),
                                                 mask, b_zero])
                        rf = builder.uitofp(rv, _V16F32)
                        total = builder.fadd(builder.fmul(builder.fsub(rf, za), sa),
                                             builder.fmul(builder.fsub(builder.sitofp(
                                                 q, _V16F32), zb), sb))
                        t = builder.fadd(builder.call(rint, [builder.fmul(total, inv)]), z)
                        t = builder.select(builder.fcmp_ordered("<", t, f_zero), f_zero, t)
                        t = builder.select(builder.fcmp_ordered(">", t, f_255), f_255, t)
                        q = builder.fptosi(t, _V16I32)
                    builder.call(store, [builder.trunc(q, _V16I8), builder.gep(out_data, [at]),
                                         ir.Constant(i32, 1), mask])
        return context.get_dummy_value()

    return codegen


def _requant_types_ok(a, b, base, m, out):
    return (a.dtype == types.int32 and b.dtype == types.int32 and base.dtype == types.int32
            and m.dtype == types.float32 and out.dtype in (types.uint8, types.int8))


@intrinsic
def dot_requant_rows4x64(typingctx, a, i0, b, j0, kb, base, m, zp, lo, hi, out, row, col, count,
                         rows):
    r"""Four rows of 64 pixels' sums of quad products, requantized in registers and stored as bytes.

    The broadcast form, for sums too short to amortise ``dot_block4x4``'s reductions: a is
    (R, KB) int32, each value four int8 weights $w_{4q..4q+3}$; b is (KB, P) int32, each
    value the four uint8 activations of one pixel at channels $4q..4q+3$ (the
    quad-interleaved layout ``int8._quads`` builds); ``vpdpbusd`` (512-bit) adds the four
    products into the pixel's lane. Four rows by four vectors of 16 pixels held in sixteen
    registers:

    $$S_{r,c} = \sum_{q < kb} \sum_{e < 4} a[i_0 + r, q]_e \, b[q, j_0 + c]_e$$

    and for r < ``rows`` and c < min(64, ``count``):

    $$\text{out}[\text{row} + r, \text{col} + c] = \text{requant}(S_{r,c} + \text{base}[i_0 + r])$$

    with requant ``int8_requant.requant``'s float32 steps
    in its order: ``float32(acc) * m[i0 + r]``, clamped to [lo, hi] (``acc * m < lo ? lo``,
    then ``> hi ? hi``: Numba's ``min(max(f, lo), hi)`` on every number), rounded half to
    even (``llvm.rint``), converted to int32, plus zp, and stored as its low byte (the value is
    in the output dtype's range). Sixteen bytes per masked store (the lanes past ``count``
    write nothing): no int32 scratch between the sums and the output.

    Args:
        typingctx: Numba's typing context.
        a: (R4, KB) int32 weight quads, C-contiguous.
        i0: The first of the four rows of a.
        b: (KB, P) int32 activation quads, C-contiguous, P at least j0 + 64.
        j0: The first of the 64 pixels.
        kb: The number of quads summed.
        base: (R,) int32: the bias with the zero point taken out (``int8._base``).
        m: (R,) float32 multipliers.
        zp: The output's zero point (int32).
        lo: The float32 lower bound of ``acc * m``.
        hi: The float32 upper bound.
        out: (rows, columns) uint8 or int8, C-contiguous.
        row: out's row for a's row i0.
        col: out's column for pixel j0.
        count: The pixels to store (the rest of the 64 are dropped).
        rows: The rows of the four to store.

    Returns:
        The signature and the code generator.
    """
    if not _requant_types_ok(a, b, base, m, out):
        return None
    sig = types.void(a, i0, b, j0, kb, base, m, zp, lo, hi, out, row, col, count, rows)
    return sig, _requant_codegen(False)


@intrinsic
def dot_requant_add_rows4x64(typingctx, a, i0, b, j0, kb, base, m, zp, lo, hi, out, row, col,
                             count, rows, res, sums):
    r"""``dot_requant_rows4x64`` with ``QLinearAdd`` of res in the epilogue: out[row + r, col + c]
    = quantize((float32(res[row + r, col + c]) - za) sa + (float32(y) - zb) sb) with y the
    requantized output (``int8_quantize``'s operations in their order: times ``inv``, rounded
    half to even, plus z, clamped to [0, 255]).

    Args:
        typingctx: Numba's typing context.
        a: As ``dot_requant_rows4x64``.
        i0: As ``dot_requant_rows4x64``.
        b: As ``dot_requant_rows4x64``.
        j0: As ``dot_requant_rows4x64``.
        kb: As ``dot_requant_rows4x64``.
        base: As ``dot_requant_rows4x64``.
        m: As ``dot_requant_rows4x64``.
        zp: As ``dot_requant_rows4x64``.
        lo: As ``dot_requant_rows4x64``.
        hi: As ``dot_requant_rows4x64``.
        out: (rows, columns) uint8 (or int8: the same bytes), C-contiguous.
        row: As ``dot_requant_rows4x64``.
        col: As ``dot_requant_rows4x64``.
        count: As ``dot_requant_rows4x64``.
        rows: As ``dot_requant_rows4x64``.
        res: The residual, uint8, out's shape, C-contiguous.
        sums: ``(za, sa, zb, sb, inv, z)``, float32: the residual's zero point and scale, the
            output's, the sum's ``1 / scale`` and zero point.

    Returns:
        The signature and the code generator.
    """
    if (not _requant_types_ok(a, b, base, m, out) or res.dtype != types.uint8
            or sums != types.UniTuple(types.float32, 6)):
        return None
    sig = types.void(a, i0, b, j0, kb, base, m, zp, lo, hi, out, row, col, count, rows, res, sums)
    return sig, _requant_codegen(True)
