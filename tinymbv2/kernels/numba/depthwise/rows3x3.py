"""The channels-last 3x3 depthwise convolution at stride 1, padding 1, in vector registers.

On a channels-last plane (``..layout``) a pixel's channels are contiguous, so one
vector register holds L channels (16 float32 with AVX-512) of one pixel. For one vector of
channels of one image, the forward keeps the filter's nine weight vectors in registers and
slides a 3 x 3 window of input vectors along each row of output pixels:

    for each output row oh, for ow = 0 .. W - 1:
        load the window's new right column x[oh - 1 .. oh + 1, ow + 1]    3 loads
        y[oh, ow] = sum_{i,j} w[i, j] * x[oh - 1 + i, ow - 1 + j]          9 fused multiply-adds
        store it; the window's middle and right columns become its left and middle

three loads and one store for nine multiply-adds, against two loads per multiply-add (and
a read-modify-write of the output per tap) for the tap-by-tap loops of
``.channels_last``, which serve the other strides and kernel sizes. Taps in the
padding load nothing (masked loads with no lane set give zeros).

* The input gradient is the same correlation of dL/dy with the filter turned by 180 degrees.
* The weight gradient keeps nine running sums in registers,
  ``gw[i, j] += dL/dy[oh, ow] * x[oh - 1 + i, ow - 1 + j]``, with the same sliding window,
  over every image in order: one task per vector of channels.

The loops are written in LLVM's terms through Numba ``@intrinsic`` s (with ``..llvm``'s
instructions, as the register blocks of ``..tile``), one call per (image, vector of
channels) for the forward and the input gradient.
Every value is summed in a fixed order, so results are the same bits for any thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from ..cache import CACHE
from .. import pool  # noqa: F401  (the one-pool set-up)
from ..llvm import Emit, array_data, as_i64, lanes

_JIT = dict(cache=CACHE, boundscheck=False)


def supported(kh, kw, sh, sw, ph, pw) -> bool:
    """Is this the geometry computed here: a 3x3 filter, stride 1, padding 1?

    Args:
        kh: The filter's height.
        kw: The filter's width.
        sh: The stride along H.
        sw: The stride along W.
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.

    Returns:
        Whether it is.
    """
    return (kh, kw, sh, sw, ph, pw) == (3, 3, 1, 1, 1, 1)


def _window_loop(e, builder, height, width, pixel, row, src_data, src_at, mask, body):
    """Slide the 3 x 3 window of ``src`` vectors (rows oh - 1 .. oh + 1, columns ow - 1 ..
    ow + 1, zeros outside the plane) over every (oh, ow) of a height x width plane whose
    vector of channels starts at ``src_at`` (element strides ``pixel`` and ``row``), calling
    ``body(oh, ow, window)`` with window[i][j] the vector at (oh - 1 + i, ow - 1 + j)."""
    none = e.mask(e.const(0))
    cols = [[cgutils.alloca_once_value(builder, e.zero) for _ in range(3)] for _ in range(3)]
    with cgutils.for_range(builder, height) as rows_loop:
        oh = rows_loop.index
        masks, starts = [], []
        for i in range(3):  # input row oh - 1 + i: a mask with no lane set when outside
            ih = builder.add(oh, e.const(i - 1))
            inside = builder.and_(builder.icmp_signed(">=", ih, e.const(0)),
                                  builder.icmp_signed("<", ih, height))
            masks.append(builder.select(inside, mask, none))
            starts.append(e.at(src_at, e.times(builder.select(inside, ih, e.const(0)), row)))
        for i in range(3):  # the window before column 0: padding, then column 0
            builder.store(e.zero, cols[i][0])
            builder.store(e.load(src_data, starts[i], masks[i]), cols[i][1])
        with cgutils.for_range(builder, width) as cols_loop:
            ow = cols_loop.index
            right = builder.add(ow, e.const(1))
            inside = builder.icmp_signed("<", right, width)
            at = e.times(builder.select(inside, right, e.const(0)), pixel)
            for i in range(3):
                m = builder.select(inside, masks[i], none)
                builder.store(e.load(src_data, e.at(starts[i], at), m), cols[i][2])
            window = [[builder.load(cols[i][j]) for j in range(3)] for i in range(3)]
            body(oh, ow, window)
            for i in range(3):
                builder.store(window[i][1], cols[i][0])
                builder.store(window[i][2], cols[i][1])


@intrinsic
def correlate_plane(typingctx, src, src_at, w, w_at, dst, dst_at, height, width, pixel, row,
                     tap, valid):
    """``dst[oh, ow] = sum_{i,j} w[3i + j] * src[oh - 1 + i, ow - 1 + j]`` for one vector of
    channels (the first ``valid`` lanes) of one height x width channels-last plane: src and
    dst start at src_at and dst_at, pixels ``pixel`` elements apart and rows ``row`` apart
    (``width * pixel`` for a whole plane; more for a sub-grid read in place); w's tap t at
    ``w_at + t * tap`` (a (9, C) table: ``tap = C``).

    Args:
        typingctx: Numba's typing context.
        src: The input values, an array (read through its data pointer).
        src_at: The element of src where the plane's first vector starts.
        w: The taps, a (9, C) table (``filter_taps``).
        w_at: The element of w where tap 0's vector starts.
        dst: The output values, written.
        dst_at: The element of dst where the plane's first vector starts.
        height: The plane's rows.
        width: The plane's columns.
        pixel: Elements between two pixels of a row.
        row: Elements between two rows.
        tap: Elements between two taps' vectors in w.
        valid: The lanes that are channels (the last vector's may be fewer).

    Returns:
        The signature and the code generator (the call returns nothing).
    """
    dtype = src.dtype
    if dtype not in (types.float32, types.float64) or w.dtype != dtype or dst.dtype != dtype:
        return None
    sig = types.void(src, src_at, w, w_at, dst, dst_at, height, width, pixel, row, tap, valid)

    def codegen(context, builder, signature, args):
        e = Emit(context, builder, dtype)
        src_data, w_data, dst_data = (array_data(context, builder, signature.args[i], args[i])
                                      for i in (0, 2, 4))
        src_at, w_at, dst_at, height, width, pixel, row, tap, valid = as_i64(
            builder, [args[i] for i in (1, 3, 5, 6, 7, 8, 9, 10, 11)])
        mask = e.mask(valid)
        taps = [e.load(w_data, e.at(w_at, e.times(t, tap)), mask) for t in range(9)]

        def body(oh, ow, window):
            acc = builder.fmul(taps[0], window[0][0])
            for t in range(1, 9):
                acc = e.fma(taps[t], window[t // 3][t % 3], acc)
            e.store(acc, dst_data, e.at(dst_at, e.times(oh, row), e.times(ow, pixel)), mask)

        _window_loop(e, builder, height, width, pixel, row, src_data, src_at, mask, body)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def weight_sums_planes(typingctx, g, g_at, x, x_at, out, out_at, images, image, height, width,
                        pixel, row, tap, accumulate, valid):
    """out[3i + j] = sum over ``images`` planes (``image`` elements apart) and their (oh, ow)
    of ``g[oh, ow] * x[oh - 1 + i, ow - 1 + j]``, for one vector of channels (strides as
    ``correlate_plane``; out's tap t at ``out_at + t * tap``): nine running sums, kept in
    registers across all the images, in image order; started from out's values with
    ``accumulate`` (the next sub-grid's terms after the last one's), else from zero.

    Args:
        typingctx: Numba's typing context.
        g: The output gradient values, an array.
        g_at: The element of g where the first plane's first vector starts.
        x: The input values.
        x_at: The element of x where the first plane's first vector starts.
        out: The (9, C) table of sums, written (read first with ``accumulate``).
        out_at: The element of out where tap 0's vector starts.
        images: The number of planes summed.
        image: Elements between two planes.
        height: A plane's rows.
        width: A plane's columns.
        pixel: Elements between two pixels of a row.
        row: Elements between two rows.
        tap: Elements between two taps' vectors in out.
        accumulate: Start from out's values (else from zero).
        valid: The lanes that are channels.

    Returns:
        The signature and the code generator (the call returns nothing).
    """
    dtype = g.dtype
    if dtype not in (types.float32, types.float64) or x.dtype != dtype or out.dtype != dtype:
        return None
    sig = types.void(g, g_at, x, x_at, out, out_at, images, image, height, width, pixel, row, tap,
                     accumulate, valid)

    def codegen(context, builder, signature, args):
        e = Emit(context, builder, dtype)
        g_data, x_data, out_data = (array_data(context, builder, signature.args[i], args[i])
                                    for i in (0, 2, 4))
        g_at, x_at, out_at, images, image, height, width, pixel, row, tap, valid = as_i64(
            builder, [args[i] for i in (1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 14)])
        mask = e.mask(valid)
        sums = [cgutils.alloca_once_value(builder, e.zero) for _ in range(9)]
        go_on = builder.icmp_signed("!=", args[13], ir.Constant(args[13].type, 0))
        with builder.if_then(go_on):
            for t in range(9):
                builder.store(e.load(out_data, e.at(out_at, e.times(t, tap)), mask), sums[t])
        with cgutils.for_range(builder, images) as image_loop:
            skip = e.times(image_loop.index, image)
            g_plane = e.at(g_at, skip)

            def body(oh, ow, window):
                gv = e.load(g_data, e.at(g_plane, e.times(oh, row), e.times(ow, pixel)), mask)
                for t in range(9):
                    builder.store(e.fma(gv, window[t // 3][t % 3], builder.load(sums[t])),
                                  sums[t])

            _window_loop(e, builder, height, width, pixel, row, x_data, e.at(x_at, skip), mask,
                         body)
        for t in range(9):
            e.store(builder.load(sums[t]), out_data, e.at(out_at, e.times(t, tap)), mask)
        return context.get_dummy_value()

    return sig, codegen


@njit(**_JIT)
def filter_taps(w, flip):
    """(9, C): w (C, 1, 3, 3)'s taps channels-last, tap t = 3i + j; turned by 180 degrees
    (tap t reads w[..., 2 - i, 2 - j]) with ``flip``.

    Args:
        w: The depthwise filter (C, 1, 3, 3).
        flip: Turn it by 180 degrees (the input gradient's filter).

    Returns:
        The (9, C) table.
    """
    c = w.shape[0]
    out = np.empty((9, c), w.dtype)
    for ch in range(c):
        for t in range(9):
            s = 8 - t if flip else t
            out[t, ch] = w[ch, 0, s // 3, s % 3]
    return out


@njit(parallel=True, **_JIT)
def _correlate_images(src3, h, wd, taps, dst3):
    """``dst3 (N, H*W, C)``: the 3x3 stride-1 padding-1 correlation of ``src3`` with ``taps``."""
    n, c = src3.shape[0], src3.shape[2]
    step = lanes(src3)
    vectors = (c + step - 1) // step
    for task in prange(n * vectors):
        b, c0 = task // vectors, task % vectors * step
        correlate_plane(src3, b * h * wd * c + c0, taps, c0, dst3, b * h * wd * c + c0, h, wd,
                         c, wd * c, c, min(step, c - c0))
    return dst3


@njit(parallel=True, **_JIT)
def _weight_grad(g3, x3, h, wd):
    """gw (C, 1, 3, 3): one task per vector of channels, summing over every image in order."""
    n, c = x3.shape[0], x3.shape[2]
    step = lanes(x3)
    vectors = (c + step - 1) // step
    table = np.empty((9, c), x3.dtype)
    for v in prange(vectors):
        c0 = v * step
        weight_sums_planes(g3, c0, x3, c0, table, c0, n, h * wd * c, h, wd, c, wd * c, c, False,
                            min(step, c - c0))
    gw = np.empty((c, 1, 3, 3), x3.dtype)
    for ch in range(c):
        for t in range(9):
            gw[ch, 0, t // 3, t % 3] = table[t, ch]
    return gw


def forward(x3, h, wd, w, y3):
    """The depthwise 3x3 stride-1 padding-1 correlation of a channels-last batch.

    All C-contiguous, one float dtype.

    Args:
        x3: The input, channels-last, ``(N, H*W, C)``.
        h: H.
        wd: W.
        w: The filter (C, 1, 3, 3).
        y3: The output ``(N, H*W, C)``, written.

    Returns:
        y3.
    """
    return _correlate_images(x3, h, wd, filter_taps(w, False), y3)


def backward_input(gy3, h, wd, w, gx3):
    r"""The input gradient of ``forward``.

    Args:
        gy3: $\partial L / \partial y$, channels-last, ``(N, H*W, C)``.
        h: H.
        wd: W.
        w: The filter (C, 1, 3, 3).
        gx3: The input gradient ``(N, H*W, C)``, written.

    Returns:
        gx3.
    """
    return _correlate_images(gy3, h, wd, filter_taps(w, True), gx3)


def backward_weight(gy3, x3, h, wd):
    r"""The weight gradient of ``forward``.

    Args:
        gy3: $\partial L / \partial y$, channels-last, ``(N, H*W, C)``.
        x3: The input, channels-last, ``(N, H*W, C)``.
        h: H.
        wd: W.

    Returns:
        gw (C, 1, 3, 3).
    """
    return _weight_grad(gy3, x3, h, wd)


# ------------------------------------------------ dilated: the sub-grids read in place
@njit(parallel=True, **_JIT)
def _correlate_grids(src4, dh, dw, taps, dst4):
    """``dst4``: the 3x3 correlation with taps ``dh`` rows and ``dw`` columns apart, padding
    (dh, dw), of ``src4``; both (N, H, W, C), C-contiguous.

    Such a convolution never mixes the interleaved sub-grids (rows a, a + dh, ..., columns b,
    b + dw, ...; ``..subgrids``), and on each it is the undilated 3x3 at padding 1. Each
    sub-grid is read where it lies, its pixels ``dw * C`` values apart and its rows
    ``dh * W * C``: one task per (image, sub-grid, vector of channels), no copies.
    """
    n, h, wd, c = src4.shape
    step = lanes(src4)
    vectors = (c + step - 1) // step
    grids = dh * dw
    for task in prange(n * grids * vectors):
        b, rest = task // (grids * vectors), task % (grids * vectors)
        a, col, c0 = rest // vectors // dw, rest // vectors % dw, rest % vectors * step
        if a < h and col < wd:
            at = ((b * h + a) * wd + col) * c + c0
            correlate_plane(src4, at, taps, c0, dst4, at, (h - a + dh - 1) // dh,
                             (wd - col + dw - 1) // dw, dw * c, dh * wd * c, c,
                             min(step, c - c0))
    return dst4


@njit(parallel=True, **_JIT)
def _weight_grad_grids(g4, x4, dh, dw):
    """gw (C, 1, 3, 3) of ``_correlate_grids``: one task per vector of channels, summing the
    sub-grids in order (rows, then columns), each over every image in order."""
    n, h, wd, c = x4.shape
    step = lanes(x4)
    vectors = (c + step - 1) // step
    table = np.zeros((9, c), x4.dtype)
    for v in prange(vectors):
        c0 = v * step
        for a in range(min(dh, h)):
            for col in range(min(dw, wd)):
                at = (a * wd + col) * c + c0
                weight_sums_planes(g4, at, x4, at, table, c0, n, h * wd * c,
                                    (h - a + dh - 1) // dh, (wd - col + dw - 1) // dw, dw * c,
                                    dh * wd * c, c, a > 0 or col > 0, min(step, c - c0))
    gw = np.empty((c, 1, 3, 3), x4.dtype)
    for ch in range(c):
        for t in range(9):
            gw[ch, 0, t // 3, t % 3] = table[t, ch]
    return gw


def forward_dilated(x4, dh, dw, w, y4):
    """The depthwise 3x3 correlation at stride 1 with dilation and padding (dh, dw).

    Args:
        x4: The input, channels-last, (N, H, W, C), C-contiguous.
        dh: The dilation (and padding) along H.
        dw: The dilation (and padding) along W.
        w: The filter (C, 1, 3, 3).
        y4: The output (N, H, W, C), written.

    Returns:
        y4.
    """
    return _correlate_grids(x4, dh, dw, filter_taps(w, False), y4)


def backward_input_dilated(gy4, dh, dw, w, gx4):
    r"""The input gradient of ``forward_dilated``: the same with the filter turned by 180 degrees.

    Args:
        gy4: $\partial L / \partial y$, channels-last, (N, H, W, C).
        dh: The dilation along H.
        dw: The dilation along W.
        w: The filter (C, 1, 3, 3).
        gx4: The input gradient (N, H, W, C), written.

    Returns:
        gx4.
    """
    return _correlate_grids(gy4, dh, dw, filter_taps(w, True), gx4)


def backward_weight_dilated(gy4, x4, dh, dw):
    r"""The weight gradient of ``forward_dilated``.

    Args:
        gy4: $\partial L / \partial y$, channels-last, (N, H, W, C).
        x4: The input, channels-last, (N, H, W, C).
        dh: The dilation along H.
        dw: The dilation along W.

    Returns:
        gw (C, 1, 3, 3).
    """
    return _weight_grad_grids(gy4, x4, dh, dw)
