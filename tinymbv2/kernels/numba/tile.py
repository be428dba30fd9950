"""A block of a matrix product held in vector registers: the inner kernel of most GEMMs here.

For ``out (M, N) = a (M, K) @ b (K, N)``, with b's rows and out's rows contiguous, one
block computes up to ``TILE_ROWS`` rows and ``tile_columns`` columns of ``out`` (6 x 64
in float32 on a CPU with AVX-512); ``product`` sweeps the blocks over ``out``:

    acc[r, :] = 0                                    r < 6; 64 values = 4 vectors of 16
    for p in range(K):
        u = b[p, j:j + 64]                           4 vector loads
        for r in range(6):
            acc[r, :] += a[i + r, p] * u             1 broadcast, 4 vector FMAs
    out[i:i + 6, j:j + 64] = acc                     stored once, after the whole sum

The 24 running vectors stay in registers (AVX-512 has 32) for the whole sum: each step
loads 4 vectors of b and broadcasts 6 values of a for 24 fused multiply-adds, so the
loads never keep the two FMA units waiting. Loops written in Numba cannot ask for that:
LLVM keeps an ``out`` it has to reload and store inside the loop, or splits a sum into
lanes it adds up at the end. So the block is written in LLVM's own terms, as a Numba
``intrinsic``: the loop, the vector loads, ``llvm.fma`` and the stores are emitted
directly (with ``.llvm``'s instructions). On an AVX-512 CPU one core runs it on
MobileNetV2's pointwise shapes in cache close to the peak of independent FMAs, and far
faster than the loops it replaced (figures: docs/kernels.md, "Matrix products").

**Edges.** Columns past ``ncols`` are masked off (``llvm.masked.load`` / ``store``:
nothing outside the block is read or written). A strip narrower than half a wide block
runs blocks of 2 vectors by 12 rows (or 1 by 24), the same 24 running vectors with
none masked off: MobileNetV2's channel counts (16, 24, 96, 160, ...) leave such strips.
A block at the bottom edge computes its missing rows on the last real row of ``a`` and
does not store them.

**Strides.** ``a`` is read one value at a time, so it may be any view (W.T, or gy.T of a
channels-last tensor): its element strides are arguments. ``b`` and ``out`` need
contiguous rows; their row strides are arguments.

**Epilogue.** ``product`` given a ``table`` applies a BatchNorm in eval mode, and ReLU6 if
asked, to each vector of sums before it is stored, ``clamp((acc - mean) * scale + bias)``,
the per-column vectors loaded once per block (masked off when there is no table): the bits
of the separate pass ``batchnorm.channels_last.affine_rows_inplace``, without that pass
over out. The inference block on channels-last pixels (``.block_channels_last``) stores
its expanded and projected rows this way.

**Other operands.** ``gathered_product`` reads A's terms at offsets from a table instead of
at a stride (a convolution's column matrix never built: ``dense.direct``); ``pack_strips``
lays a constant b out once in the strips the blocks read, and ``packed_product`` sweeps
them (the prepared inference blocks). Both keep the blocks' sums and bits.

**Order of the sum.** Each value of ``out`` is ``a[i, 0] * b[0, j]``, then each next term
added by one FMA (one rounding), in order of p. With ``accumulate`` the running sums
start from ``out``'s values instead of 0, so a sum split into consecutive chunks of K
gives exactly the bits of the whole sum. Nothing depends on threads or timing.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .cache import CACHE
from .llvm import AVX512, VECTOR_BYTES, Emit, array_data, as_i64, lanes
from .transpose import transpose_into

TILE_ROWS = 6
"""Rows of ``out`` per broadcast block: 6 broadcasts and 6 x TILE_VECTORS running vectors."""
TILE_VECTORS = 4 if AVX512 else 2
"""Vectors per row of the broadcast block: 24 running vectors of AVX-512's 32 registers,
or 12 of AVX2's 16."""


def _make_tile(vectors: int, most_rows: int):
    """The intrinsic for blocks of ``vectors`` vectors by up to ``most_rows`` rows."""

    @intrinsic
    def tile_block(typingctx, a, a_at, a_row, a_col, b, b_at, b_row, out, out_at, out_row,
                   k, rows, ncols, accumulate, ahead, stream, table, col, epilogue, relu6):
        dtype = a.dtype
        if dtype not in (types.float32, types.float64) or b.dtype != dtype or out.dtype != dtype \
                or table.dtype != dtype or table.ndim != 2:
            return None
        gathered = isinstance(a_col, types.Array)  # a's terms at offsets a_col[p], not p * a_col
        if gathered and (a_col.dtype != types.int64 or a_col.ndim != 1):
            return None
        sig = types.void(a, a_at, a_row, a_col, b, b_at, b_row, out, out_at, out_row, k,
                         rows, ncols, accumulate, ahead, stream, table, col, epilogue, relu6)

        def codegen(context, builder, signature, args):
            e = Emit(context, builder, dtype)
            a_data, b_data, out_data, table_data = (
                array_data(context, builder, signature.args[i], args[i]) for i in (0, 4, 7, 16))
            a_at, a_row, b_at, b_row, out_at, out_row, k, rows, ncols, ahead, stream = as_i64(
                builder, [args[i] for i in (1, 2, 5, 6, 8, 9, 10, 11, 12, 14, 15)])
            if gathered:
                offsets = array_data(context, builder, signature.args[3], args[3])
            else:
                a_col = as_i64(builder, [args[3]])[0]
            n = e.lanes
            masks = [e.mask(builder.sub(ncols, e.const(n * v))) for v in range(vectors)]
            real = [builder.icmp_signed("<", e.const(r), rows) for r in range(most_rows)]
            # a row past ``rows`` repeats the last real one: computed, never stored
            a_rows = [e.at(a_at, e.times(builder.select(real[r], e.const(r), builder.sub(rows, e.const(1))),
                                         a_row)) for r in range(most_rows)]
            out_rows = [e.at(out_at, e.times(r, out_row)) for r in range(most_rows)]
            acc = [[cgutils.alloca_once_value(builder, e.zero) for _ in range(vectors)]
                   for _ in range(most_rows)]
            with builder.if_then(builder.icmp_signed("!=", args[13], ir.Constant(args[13].type, 0))):
                for r in range(most_rows):
                    with builder.if_then(real[r]):
                        for v in range(vectors):
                            builder.store(e.load(out_data, e.at(out_rows[r], n * v), masks[v]), acc[r][v])

            def sum_loop(fetch_ahead):
                with cgutils.for_range(builder, k) as loop:
                    b_at_p = e.at(b_at, e.times(loop.index, b_row))
                    if fetch_ahead:  # this row of b's lines of the next strip, into the caches
                        for v in range(vectors):
                            e.prefetch(b_data, e.at(b_at_p, ahead, n * v))
                    u = [e.load(b_data, e.at(b_at_p, n * v), masks[v]) for v in range(vectors)]
                    if gathered:
                        a_col_p = builder.load(builder.gep(offsets, [loop.index]))
                    else:
                        a_col_p = e.times(loop.index, a_col)
                    for r in range(most_rows):
                        s = e.splat(builder.load(builder.gep(a_data, [e.at(a_rows[r], a_col_p)])))
                        for v in range(vectors):
                            builder.store(e.fma(s, u[v], builder.load(acc[r][v])), acc[r][v])
                    body = builder.basic_block
                # unrolled by two, LLVM hoists the second step's loads and spills running
                # vectors to the stack, unaligned there: the loop then ran at two speeds, by
                # where the process's stack happened to fall
                body.terminator.set_metadata("llvm.loop", e.no_unroll())

            with builder.if_else(builder.icmp_signed("!=", ahead, e.const(0))) as (fetch, plain):
                with fetch:
                    sum_loop(True)
                with plain:
                    sum_loop(False)
            with builder.if_else(builder.icmp_signed("!=", stream, e.const(0))) as (streamed, cached):
                with streamed:  # whole aligned vectors, past the caches (see ``product``)
                    for r in range(most_rows):
                        with builder.if_then(real[r]):
                            for v in range(vectors):
                                e.store_streaming(builder.load(acc[r][v]), out_data,
                                                  e.at(out_rows[r], n * v))
                with cached:  # with the epilogue, if any: (acc - mean) * scale + bias, ReLU6
                    col = as_i64(builder, [args[17]])[0]
                    on = builder.icmp_signed("!=", args[18], ir.Constant(args[18].type, 0))
                    clamp = builder.icmp_signed("!=", args[19], ir.Constant(args[19].type, 0))
                    table_shape = cgutils.unpack_tuple(builder, context.make_array(
                        signature.args[16])(context, builder, args[16]).shape, 2)
                    cols_all = table_shape[1]  # the table's row: all of out's columns
                    params = []  # mean, scale, bias over the block's columns; none loaded when off
                    for v in range(vectors):
                        m = builder.select(on, masks[v], e.mask(e.const(0)))
                        params.append([e.load(table_data, e.at(e.times(t, cols_all), col, n * v), m)
                                       for t in range(3)])
                    for r in range(most_rows):
                        with builder.if_then(real[r]):
                            for v in range(vectors):
                                y = builder.load(acc[r][v])
                                mean, scale, bias = params[v]
                                z = e.clamp6(builder.fadd(builder.fmul(builder.fsub(y, mean), scale),
                                                          bias), clamp)
                                e.store(builder.select(on, z, y), out_data, e.at(out_rows[r], n * v),
                                        masks[v])
            return context.get_dummy_value()

        return sig, codegen

    return tile_block


@intrinsic
def _store_fence(typingctx):
    """A full memory fence: streamed stores are done before whatever follows reads them."""
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen


_wide = _make_tile(TILE_VECTORS, TILE_ROWS)
_half = _make_tile(TILE_VECTORS // 2, 2 * TILE_ROWS)
_one = _make_tile(1, 4 * TILE_ROWS)
# ``gathered_product``'s blocks hold 16 running vectors, not 24: chosen while the sum loop
# was still unrolled, when the 24-vector blocks spilled broadcasts to the stack and the
# stem took 0.29 ms against 0.21 with these (one thread); not measured again since
GATHER_ROWS = 16 // TILE_VECTORS
"""Rows of ``gathered_product``'s wide block (4 on AVX-512: 16 running vectors)."""
_gather_wide = _make_tile(TILE_VECTORS, GATHER_ROWS)
_gather_half = _make_tile(TILE_VECTORS // 2, 2 * GATHER_ROWS)
_gather_one = _make_tile(1, 16)

_JIT = dict(cache=CACHE, boundscheck=False)
STREAM_BYTES = 4 << 20
"""The callers stream outputs of at least this many bytes that have no epilogue to run
(``product``'s ``stream``): too large to stay in the caches for the next layer, they
would otherwise be read in, line by line, only to be overwritten. Measured against 2 MB:
no better."""
SUM_CHUNK = 256
"""Terms of K per pass over out: a strip's 256 rows of b (64 KB in float32) stay in L1/L2
while the blocks of rows pass over them."""
AHEAD = 1
"""Strips ahead that the first block of each strip prefetches b's rows for (0: none)."""


@njit(inline="always", **_JIT)
def tile_columns(x):
    """Columns of ``out`` per wide block for ``x``'s dtype (AVX-512: 64 float32, 32 float64)."""
    return lanes(x) * TILE_VECTORS


def strip_width(dtype) -> int:
    """``tile_columns`` from Python, for a ``dtype``."""
    return VECTOR_BYTES * TILE_VECTORS // np.dtype(dtype).itemsize


@njit(inline="always", **_JIT)
def product(a, b, out, i0, i1, j0, j1, accumulate, stream=False, table=None, t0=0, relu6=False):
    """``out[i0:i1, j0:j1] (+)= a[i0:i1] @ b[:, j0:j1]`` in register blocks, with a BatchNorm
    epilogue if ``table`` is given.

    K runs in chunks of ``SUM_CHUNK`` terms, each adding onto the sums of the one before
    (the same bits as one pass); in each, strips of ``tile_columns`` columns, swept by
    blocks of rows while the strip's rows of b stay in L1 (the first block prefetches the
    next strip). A strip of at most half that width takes blocks of half the vectors and
    twice the rows, at most a quarter one vector and four times the rows: the same 24
    running vectors. With ``table``, the last chunk stores
    ``clamp((sum - mean) * scale + bias)`` instead of the sum (see the module).

    Args:
        a: (M, K), any strides.
        b: (K, N), contiguous rows.
        out: (M, N), contiguous rows.
        i0: The first row.
        i1: The row after the last.
        j0: The first column.
        j1: The column after the last.
        accumulate: Add to ``out`` (else overwrite it; with ``table``, False).
        stream: The last chunk writes its whole, aligned blocks with non-temporal stores,
            which skip reading each line of ``out`` into the caches before writing it: for a
            large output that no one reads soon, half the memory traffic of its writes
            (without ``table``).
        table: None, or (3, C): the mean, scale and bias of each channel, for the epilogue.
        t0: The channel of out's column 0 (out may be a strip of a wider output).
        relu6: The epilogue clamps to [0, 6].
    """
    # Inlined into the caller, so that the compiled sweep has one version per layout of
    # its arrays: a caller's literal 0 or False would otherwise get a version of its own
    # (11 of them compiled in a MobileNetV2 step instead of 4, each about a second cold).
    if table is None:
        _sweep(a, b, out, np.int64(i0), np.int64(i1), np.int64(j0), np.int64(j1),
               bool(accumulate), bool(stream), out[:0], np.int64(0), False, False)
    else:
        _sweep(a, b, out, np.int64(i0), np.int64(i1), np.int64(j0), np.int64(j1),
               bool(accumulate), False, table, np.int64(t0), True, bool(relu6))


@njit(**_JIT)
def _sweep(a, b, out, i0, i1, j0, j1, accumulate, stream, table, t0, epilogue, relu6):
    """``product``'s loops, for int64 bounds and bool flags; with ``epilogue``, the last chunk
    of the sum applies ``table``'s BatchNorm (out's column c is the table's t0 + c)."""
    k = a.shape[1]
    if k != b.shape[0]:
        raise ValueError("product: a and b do not share K")
    size = a.itemsize
    if (b.size > b.shape[0] and b.strides[1] != size) or (out.size > out.shape[0] and out.strides[1] != size):
        raise ValueError("product: b and out need contiguous rows")
    a_row, a_col = a.strides[0] // size, a.strides[1] // size
    b_row, out_row = b.strides[0] // size, out.strides[0] // size
    width, n = tile_columns(out), lanes(out)
    start = out.ctypes.data
    rows_aligned = (out_row * size) % VECTOR_BYTES == 0
    streamed = False
    for k0 in range(0, max(k, 1), SUM_CHUNK):
        kc, onto = min(SUM_CHUNK, k - k0), accumulate or k0 > 0
        last = k0 + SUM_CHUNK >= k
        bn = epilogue and last  # the epilogue on the whole sum only
        a0, b0 = k0 * a_col, k0 * b_row
        for j in range(j0, j1, width):
            cols, ahead = min(width, j1 - j), AHEAD * width
            whole = stream and last and rows_aligned and cols == width
            if cols > width // 2:
                for i in range(i0, i1, TILE_ROWS):
                    at = i * out_row + j
                    fast = whole and (start + at * size) % VECTOR_BYTES == 0
                    streamed |= fast
                    _wide(a, a0 + i * a_row, a_row, a_col, b, b0 + j, b_row, out, at, out_row, kc,
                          min(TILE_ROWS, i1 - i), cols, onto, ahead if i == i0 else 0, fast,
                          table, t0 + j, bn, relu6)
            elif cols > n:
                for i in range(i0, i1, 2 * TILE_ROWS):
                    _half(a, a0 + i * a_row, a_row, a_col, b, b0 + j, b_row, out, i * out_row + j,
                          out_row, kc, min(2 * TILE_ROWS, i1 - i), cols, onto, ahead if i == i0 else 0,
                          False, table, t0 + j, bn, relu6)
            else:
                for i in range(i0, i1, 4 * TILE_ROWS):
                    _one(a, a0 + i * a_row, a_row, a_col, b, b0 + j, b_row, out, i * out_row + j,
                         out_row, kc, min(4 * TILE_ROWS, i1 - i), cols, onto, ahead if i == i0 else 0,
                         False, table, t0 + j, bn, relu6)
    if streamed:
        _store_fence()


@njit(**_JIT)
def gathered_product(a, a_at, a_row, offsets, b, out, table, relu6):
    """``out (M, N) = clamp((A @ b - mean) * scale + bias)`` where A's terms are gathered from a
    flat ``a``: ``A[i, p] = a[a_at + i * a_row + offsets[p]]``.

    A convolution's column matrix without building it: row i is output pixel i of a row of
    pixels, term p one tap of one input channel at a fixed offset from the pixel's first
    (``dense.direct``). The order of the sum and the epilogue are ``product``'s (its bits for
    the same A), the BatchNorm always on; the blocks hold 16 running vectors (``GATHER_ROWS``).

    Args:
        a: The values, 1-D.
        a_at: Where row 0's terms start.
        a_row: The step from one row's start to the next.
        offsets: (K,) int64, term p's offset from its row's start.
        b: (K, N), contiguous rows.
        out: (M, N), contiguous rows.
        table: (3, N): the mean, scale and bias of each channel.
        relu6: Clamp to [0, 6].
    """
    k, m, ncols = offsets.shape[0], out.shape[0], out.shape[1]
    b_row, out_row = b.strides[0] // b.itemsize, out.strides[0] // out.itemsize
    width, n = tile_columns(out), lanes(out)
    for j in range(0, ncols, width):
        cols = min(width, ncols - j)
        if cols > width // 2:
            for i in range(0, m, GATHER_ROWS):
                _gather_wide(a, a_at + i * a_row, a_row, offsets, b, j, b_row, out, i * out_row + j,
                             out_row, k, min(GATHER_ROWS, m - i), cols, False, 0, False, table, j,
                             True, relu6)
        elif cols > n:
            for i in range(0, m, 2 * GATHER_ROWS):
                _gather_half(a, a_at + i * a_row, a_row, offsets, b, j, b_row, out, i * out_row + j,
                             out_row, k, min(2 * GATHER_ROWS, m - i), cols, False, 0, False, table, j,
                             True, relu6)
        else:
            for i in range(0, m, 16):
                _gather_one(a, a_at + i * a_row, a_row, offsets, b, j, b_row, out, i * out_row + j,
                            out_row, k, min(16, m - i), cols, False, 0, False, table, j, True, relu6)


def pack_strips(b: np.ndarray) -> np.ndarray:
    """A right-hand operand laid out as the register blocks read it, once, for a weight that
    does not change (a prepared or frozen model): b's strips of ``strip_width`` columns one
    after the other, each strip's K rows of ``width`` values contiguous, so that a block's
    pass over K reads one run of memory and the strip after it is the next run (what
    onnxruntime's MLAS does to a GEMM's constant B when it loads a model). The last strip
    is padded with zeros (never stored: ``packed_product`` masks those columns).

    Args:
        b: (K, N), any strides (W.T, a view of the weight W (N, K), is read along W's rows).

    Returns:
        ``(S * K, width)``, contiguous, ``S = ceil(N / width)``: rows ``s*K .. s*K + K`` are
        ``b[:, s*width:(s + 1)*width]``.
    """
    k, n = b.shape
    width = strip_width(b.dtype)
    packed = np.empty((-(-n // width) * k, width), b.dtype)  # see kernels.numba on allocation
    if k and b.T.flags.c_contiguous:  # W.T, a view of a weight W (N, K): transposed in registers
        return _pack_transposed(b.T, packed)
    return _pack(np.ascontiguousarray(b), packed)


@njit(**_JIT)
def _pack(b, packed):
    """``pack_strips``' copy from b (K, N) with contiguous rows: each strip row by row."""
    k, n = b.shape
    width = packed.shape[1]
    for s in range(packed.shape[0] // max(k, 1)):
        c0, c1 = s * width, min(n, (s + 1) * width)
        strip = packed[s * k:(s + 1) * k]
        for p in range(k):
            strip[p, :c1 - c0] = b[p, c0:c1]
            strip[p, c1 - c0:] = 0
    return packed


@njit(**_JIT)
def _pack_transposed(w, packed):
    """``pack_strips(w.T)`` from w (N, K) with contiguous rows: each strip the transpose of
    ``width`` rows of w (``transpose.transpose_into``, blocks in registers)."""
    n, k = w.shape
    width = packed.shape[1]
    for s in range(packed.shape[0] // k):
        c0, c1 = s * width, min(n, (s + 1) * width)
        strip = packed[s * k:(s + 1) * k]
        transpose_into(w, c0, c1, 0, k, strip)  # strip[p, q] = w[c0 + q, p]
        strip[:, c1 - c0:] = 0
    return packed


@njit(inline="always", **_JIT)
def packed_product(a, packed, out, i0, i1, j0, j1, table, relu6):
    """``out[i0:i1, j0:j1] = clamp((a @ b - mean) * scale + bias)`` for b given as
    ``pack_strips(b)``: ``product`` with a table (its blocks, sums and bits), b read strip
    by strip from contiguous memory, the next strip prefetched as ``product`` does.

    Args:
        a: (M, K), any strides.
        packed: ``pack_strips(b)``, ``(S * K, width)``.
        out: (M, N), contiguous rows.
        i0: The first row.
        i1: The row after the last.
        j0: The first column, a multiple of width.
        j1: The column after the last.
        table: (3, N): the BatchNorm epilogue (``batchnorm.epilogue_table``).
        relu6: Clamp to [0, 6].
    """
    _packed_sweep(a, packed, out, np.int64(i0), np.int64(i1), np.int64(j0), np.int64(j1), table,
                  bool(relu6))


@njit(**_JIT)
def _packed_sweep(a, packed, out, i0, i1, j0, j1, table, relu6):
    """``packed_product``'s loops: ``_sweep``'s, the strips' rows at ``s*K*width``."""
    k, width = a.shape[1], packed.shape[1]
    if packed.shape[0] != -(-out.shape[1] // width) * k:
        raise ValueError("packed_product: the packed strips do not hold (K, N)")
    size = a.itemsize
    a_row, a_col, out_row = a.strides[0] // size, a.strides[1] // size, out.strides[0] // size
    n = lanes(out)
    for k0 in range(0, max(k, 1), SUM_CHUNK):
        kc, onto = min(SUM_CHUNK, k - k0), k0 > 0
        last = k0 + SUM_CHUNK >= k
        a0 = k0 * a_col
        for j in range(j0, j1, width):
            cols = min(width, j1 - j)
            b_at = (j // width * k + k0) * width
            ahead = AHEAD * k * width if j + width < j1 else 0  # that row of the next strip
            if cols > width // 2:
                for i in range(i0, i1, TILE_ROWS):
                    _wide(a, a0 + i * a_row, a_row, a_col, packed, b_at, width, out, i * out_row + j,
                          out_row, kc, min(TILE_ROWS, i1 - i), cols, onto, ahead if i == i0 else 0,
                          False, table, j, last, relu6)
            elif cols > n:
                for i in range(i0, i1, 2 * TILE_ROWS):
                    _half(a, a0 + i * a_row, a_row, a_col, packed, b_at, width, out, i * out_row + j,
                          out_row, kc, min(2 * TILE_ROWS, i1 - i), cols, onto,
                          ahead if i == i0 else 0, False, table, j, last, relu6)
            else:
                for i in range(i0, i1, 4 * TILE_ROWS):
                    _one(a, a0 + i * a_row, a_row, a_col, packed, b_at, width, out, i * out_row + j,
                         out_row, kc, min(4 * TILE_ROWS, i1 - i), cols, onto,
                         ahead if i == i0 else 0, False, table, j, last, relu6)
