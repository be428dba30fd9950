r"""Dense convolution at stride 1 by regions of outputs that read the same taps: one GEMM chain each.

At stride 1, output row $o_h$ reads, with tap row $i$, input row $o_h + i d_h - p_h$, inside
the image for a run of $o_h$ (``dilated.tap_run``). The ends of those runs cut
$[0, H_o)$ into at most $2 k_h + 1$ intervals, on each of which the same taps
$[i_{lo}, i_{hi})$ read inside the image; the same for the columns. A *region* is one row
interval by one column interval, taken in all N images: its P outputs (P, Co) are

    Y_R = sum over its taps t = (i, j)   X_{R,t} (P, Ci) @ W_t (Ci, Co)

with $X_{R,t}$ the input pixels that tap t reads for the region's outputs, gathered
(im2col restricted to the region). The padding's zeros are never multiplied, and no
output is visited twice: every output belongs to exactly one region, so it is written
once, not scatter-added per tap. At ASPP's rates on a small map (6, 12, 18 on 16 x 16) most
taps reach outside; rate 18 there leaves one region with the centre tap alone. At
dilation 1 the regions are the border rows and columns and the interior.

**Channels-last.** The kernels work on (N, H, W, C) memory, the layout the numba set keeps
its small planes in (``.layout``): a pixel's channels are one contiguous run, so gathering
a region's pixels copies runs of C values, and so does writing its outputs back. An NCHW
input is transposed first; the output is channels-last on a small plane, else NCHW.

**The three passes**, each a parallel loop of products after a short preparation:

* forward: pack W as ``(kh*kw, Ci, Co)``; then per task (at most ``COLUMNS`` pixels of a
  region) gather each tap's (pixels, Ci) and add it ``@ W_t`` into the task's
  (pixels, Co) block with ``.tile``'s register blocks, then copy the block into y;
* input gradient: at stride 1 the transposed convolution is a convolution of gy with the
  kernel flipped and transposed, ``W'[t'] = W[:, :, kh-1-i, kw-1-j]`` (Co, Ci), padding
  $d (k - 1) - p$ (negative when p is larger: some inputs then read no output, zero);
  the same code as the forward;
* weight gradient: gy's pixels copied region by region into one ``(N*Ho*Wo, Co)`` matrix;
  then per task (a tap, a run of ``CHANNELS`` input channels) the sum over the regions
  that read the tap, in region order, of ``gy_R.T (Co, P) @ X_{R,t} (P, channels)``;
  ``(kh*kw, Co, Ci)`` is transposed into (Co, Ci, kh, kw) at the end.

**Scheduling and determinism.** The tasks, with their costs (taps x pixels), go to the
threads largest first, each to the least loaded. Each output value is computed whole by
one task, its sum in an order fixed by the shapes (taps in order, then ``.tile``'s order
along the channels; for the weight gradient the regions in order): which thread runs a
task, and how many threads there are, change no bit.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .cache import CACHE
from .dilated import tap_run
from .layout import as_nchw, channels_last_plane, empty_channels_last, nhwc
from .tile import product
from .transpose import transpose_into
from ..checks import conv_geometry, dilation_pair, grad_out_shape, pair, same_float_dtype
from . import pointwise
from . import pool  # noqa: F401  (pins Numba's BLAS to one thread, starts the pool passive)

_JIT = dict(cache=CACHE, fastmath=False, boundscheck=False)
COLUMNS = 64
"""Output pixels of a region per task of the forward: its gathered (pixels, Ci) and its
(pixels, Co) block stay in L1/L2 while W_t's strips pass."""
CHANNELS = 64
"""Input channels per task of the weight gradient: one wide strip of ``.tile``'s block."""


# ----------------------------------------------------------------------- the regions
@njit(**_JIT)
def intervals(k, d, p, size, out_size):
    """Cut [0, out_size) where the taps reading inside [0, size) change (stride 1).

    Args:
        k: Taps along the axis.
        d: The dilation.
        p: The padding (may be negative).
        size: The input size.
        out_size: The output size.

    Returns:
        (m, 4) int64 rows ``(start, end, first tap, tap after the last)``, the intervals
        in order; a tap range is empty (0, 0) where no tap reads inside.
    """
    cuts = np.empty(2 * k + 2, np.int64)
    cuts[0], cuts[1] = 0, out_size
    for t in range(k):
        lo, hi = tap_run(t * d - p, 1, size, out_size)
        cuts[2 + 2 * t], cuts[3 + 2 * t] = lo, hi
    cuts = np.unique(cuts)
    out = np.zeros((len(cuts) - 1, 4), np.int64)
    for s in range(len(cuts) - 1):
        a = cuts[s]
        lo, hi = k, 0
        for t in range(k):
            if 0 <= a + t * d - p < size:  # the whole interval reads inside, or none of it
                lo, hi = min(lo, t), t + 1
        out[s, 0], out[s, 1] = a, cuts[s + 1]
        if hi > lo:
            out[s, 2], out[s, 3] = lo, hi
    return out


@njit(**_JIT)
def regions(kh, kw, dh, dw, ph, pw, h, wd, ho, wo):
    """Every (row interval, column interval) of a stride-1 convolution, rows outer.

    Args:
        kh: Tap rows.
        kw: Tap columns.
        dh: The dilation along rows.
        dw: The dilation along columns.
        ph: The padding along rows (may be negative).
        pw: The padding along columns (may be negative).
        h: The input height.
        wd: The input width.
        ho: The output height.
        wo: The output width.

    Returns:
        (R, 8) int64 rows ``(r0, r1, c0, c1, i0, i1, j0, j1)``: output rows [r0, r1) and
        columns [c0, c1) read tap rows [i0, i1) and tap columns [j0, j1) inside the input.
    """
    rows, cols = intervals(kh, dh, ph, h, ho), intervals(kw, dw, pw, wd, wo)
    out = np.empty((rows.shape[0] * cols.shape[0], 8), np.int64)
    for a in range(rows.shape[0]):
        for b in range(cols.shape[0]):
            r = out[a * cols.shape[0] + b]
            r[0], r[1], r[4], r[5] = rows[a, 0], rows[a, 1], rows[a, 2], rows[a, 3]
            r[2], r[3], r[6], r[7] = cols[b, 0], cols[b, 1], cols[b, 2], cols[b, 3]
    return out


def _one_tap(regs, dh, dw, ph, pw, h, wd, ho, wo):
    """``(i, j)`` when every output reads tap (i, j) alone and at its own pixel (a dilation
    past the plane: ASPP's rate 18 on a 16 x 16 map): the convolution is then the 1x1
    convolution with that tap, which ``.pointwise`` runs. Else None."""
    if regs.shape[0] != 1 or (ho, wo) != (h, wd):
        return None
    i0, i1, j0, j1 = (int(v) for v in regs[0, 4:])
    if i1 - i0 != 1 or j1 - j0 != 1 or i0 * dh != ph or j0 * dw != pw:
        return None
    return i0, j0


@njit(**_JIT)
def _taps(reg):
    return (reg[5] - reg[4]) * (reg[7] - reg[6])


@njit(**_JIT)
def schedule(costs, bins):
    """Tasks to ``bins`` threads, largest first, each to the least loaded.

    Args:
        costs: (T,) float64, each task's cost.
        bins: The number of threads.

    Returns:
        (order, starts): bin b runs tasks ``order[starts[b]:starts[b + 1]]``.
    """
    n = costs.shape[0]
    owner = np.empty(n, np.int64)
    load = np.zeros(bins, np.float64)
    for t in np.argsort(-costs, kind="mergesort"):
        b = np.argmin(load)
        owner[t] = b
        load[b] += costs[t] + 1.0  # + 1: a task costs something even without taps (zeros)
    starts = np.zeros(bins + 1, np.int64)
    for t in range(n):
        starts[owner[t] + 1] += 1
    starts = np.cumsum(starts)
    fill = starts[:-1].copy()
    order = np.empty(n, np.int64)
    for t in range(n):
        order[fill[owner[t]]] = t
        fill[owner[t]] += 1
    return order, starts


# ----------------------------------------------------- forward (and the input gradient)
@njit(**_JIT)
def _column_tasks(regs, n, columns):
    """(T, 3) int64 ``(region, first column, column after the last)`` and their costs."""
    count = 0
    for r in range(regs.shape[0]):
        p = n * (regs[r, 1] - regs[r, 0]) * (regs[r, 3] - regs[r, 2])
        count += (p + columns - 1) // columns
    tasks = np.empty((count, 3), np.int64)
    costs = np.empty(count, np.float64)
    t = 0
    for r in range(regs.shape[0]):
        p = n * (regs[r, 1] - regs[r, 0]) * (regs[r, 3] - regs[r, 2])
        for q in range(0, p, columns):
            tasks[t, 0], tasks[t, 1], tasks[t, 2] = r, q, min(p, q + columns)
            costs[t] = _taps(regs[r]) * (tasks[t, 2] - q)
            t += 1
    return tasks, costs


@njit(**_JIT)
def _copy(src, src_at, dst, dst_at, count):
    """``dst[dst_at:dst_at + count] = src[src_at:src_at + count]``, both 1-D."""
    for s in range(count):
        dst[dst_at + s] = src[src_at + s]


@njit(**_JIT)
def _pixel_run(q, q1, per_image, width, h, wd, row0, col0, c):
    """Where the region's column q starts in a channels-last (N, H, W, C) array (flat index),
    and how many of its columns from q on (before q1) lie next to it in the same image row.

    Column q is image ``q // per_image``, row r and column w of the region (``width`` wide).
    """
    b = q // per_image
    r = (q - b * per_image) // width
    w = q - b * per_image - r * width
    return ((b * h + row0 + r) * wd + col0 + w) * c, min(width - w, q1 - q)


@njit(**_JIT)
def _gather(buf, x, q0, q1, per_image, width, row0, col0, c0, c1):
    """``buf[q - q0, :] = x[n, row0 + r, col0 + w, c0:c1]`` for the region's columns q in [q0, q1).

    Column q is image ``q // per_image``, row r and column w of the region (``width``
    wide). x is channels-last (N, H, W, C): each pixel's channels are one contiguous run.
    """
    h, wd, c = x.shape[1], x.shape[2], x.shape[3]
    flat = x.reshape(-1)
    q = q0
    while q < q1:
        at, run = _pixel_run(q, q1, per_image, width, h, wd, row0, col0, c)
        for s in range(run):
            _copy(flat, at + s * c + c0, buf[q - q0 + s], 0, c1 - c0)
        q += run


@njit(**_JIT)
def _put(y, buf, q0, q1, per_image, width, row0, col0):
    """The reverse of ``_gather``: ``y[n, row0 + r, col0 + w, :] = buf[q - q0, :]`` (y: N, H, W, C)."""
    h, wd, c = y.shape[1], y.shape[2], y.shape[3]
    flat = y.reshape(-1)
    q = q0
    while q < q1:
        at, run = _pixel_run(q, q1, per_image, width, h, wd, row0, col0, c)
        for s in range(run):
            _copy(buf[q - q0 + s], 0, flat, at + s * c, c)
        q += run


@njit(**_JIT)
def _used_taps(regs, kh, kw):
    """``(kh*kw,)`` bool: the taps some region reads."""
    used = np.zeros(kh * kw, np.bool_)
    for r in range(regs.shape[0]):
        for i in range(regs[r, 4], regs[r, 5]):
            for j in range(regs[r, 6], regs[r, 7]):
                used[i * kw + j] = True
    return used


@njit(parallel=True, **_JIT)
def pack_taps(w, flip, used, wp):
    """``wp[t] = w[:, :, i, j].T`` (Ci, Co), ``t = i*kw + j``; or, flipped, ``w[:, :, kh-1-i, kw-1-j]`` (Co, Ci).

    Only the taps t with ``used[t]`` (the others stay unset: no region reads them). w is
    read in order, a run of output channels per task: its taps, ``(run, Ci, kh*kw)``, go into
    per-tap rows of a scratch block, which is copied (flipped) or transposed in vector
    registers (not flipped) into wp[t].

    Args:
        w: The weight (Co, Ci, kh, kw), C-contiguous.
        flip: Pack the flipped kernel (the input gradient's), ``(kh*kw, Co, Ci)``.
        used: ``(kh*kw,)`` bool, the taps to pack.
        wp: ``(kh*kw, Ci, Co)``, or ``(kh*kw, Co, Ci)`` flipped; written.

    Returns:
        wp.
    """
    co, ci, kh, kw = w.shape
    taps = kh * kw
    run = 16
    blocks = (co + run - 1) // run
    scratch = np.empty((blocks, taps, run, ci), w.dtype)
    for blk in prange(blocks):
        o0 = blk * run
        o1 = min(co, o0 + run)
        tmp = scratch[blk]
        for o in range(o0, o1):
            src = w[o].reshape(ci, taps)
            for t in range(taps):
                if used[taps - 1 - t if flip else t]:
                    dst = tmp[t, o - o0]
                    for c in range(ci):
                        dst[c] = src[c, t]
        for t in range(taps):
            if not used[t]:
                continue
            if flip:
                wp[t][o0:o1] = tmp[taps - 1 - t, :o1 - o0]
            else:
                transpose_into(tmp[t], 0, o1 - o0, 0, ci, wp[t][:, o0:o1])
    return wp


@njit(parallel=True, **_JIT)
def _products(x, wp, kw, dh, dw, ph, pw, regs, tasks, order, starts, y):
    """y (N, Ho, Wo, M) = per region, the sum over its taps of x's gathered pixels (P, C) @ wp[t] (C, M).

    x (N, H, W, C) and y channels-last.
    """
    c = x.shape[3]
    m = wp.shape[2]
    bins = starts.shape[0] - 1
    xbuf = np.empty((bins, COLUMNS, c), x.dtype)
    ybuf = np.empty((bins, COLUMNS, m), x.dtype)
    for b in prange(bins):
        for k in range(starts[b], starts[b + 1]):
            reg, q0, q1 = tasks[order[k], 0], tasks[order[k], 1], tasks[order[k], 2]
            r0, r1, c0, c1, i0, i1, j0, j1 = regs[reg]
            width = c1 - c0
            per_image, cols = (r1 - r0) * width, q1 - q0
            xb, yb = xbuf[b, :cols], ybuf[b, :cols]
            if i1 == i0 or j1 == j0:
                yb[:] = 0
            for i in range(i0, i1):
                for j in range(j0, j1):
                    _gather(xb, x, q0, q1, per_image, width, r0 + i * dh - ph, c0 + j * dw - pw,
                            0, c)
                    product(xb, wp[i * kw + j], yb, 0, cols, 0, m, i > i0 or j > j0)
            _put(y, yb, q0, q1, per_image, width, r0, c0)
    return y


def _conv(x, w, flip, dh, dw, ph, pw, out_shape):
    """The convolution of x (N, C, H, W) with w's taps packed by ``pack_taps``, stride 1.

    Returns:
        The output (N, M, Ho, Wo), channels-last on a plane the numba set keeps so
        (``.layout``), else NCHW.
    """
    n, _, h, wd = x.shape
    kh, kw = w.shape[2], w.shape[3]
    ho, wo = out_shape[2], out_shape[3]
    regs = regions(kh, kw, dh, dw, ph, pw, h, wd, ho, wo)
    tap = _one_tap(regs, dh, dw, ph, pw, h, wd, ho, wo)
    if tap is not None:  # flipped, the one tap stays where it is (p = d (k - 1) / 2)
        one = w[:, :, tap[0]:tap[0] + 1, tap[1]:tap[1] + 1]
        if flip:
            return pointwise.pointwise_conv2d_backward_input(x, one)
        return pointwise.pointwise_conv2d_forward(x, one)
    rows, cols = (w.shape[0], w.shape[1]) if flip else (w.shape[1], w.shape[0])
    wp = pack_taps(w, flip, _used_taps(regs, kh, kw), np.empty((kh * kw, rows, cols), w.dtype))
    y = empty_channels_last(out_shape, x.dtype)
    tasks, costs = _column_tasks(regs, n, COLUMNS)
    order, starts = schedule(costs, numba.get_num_threads())
    _products(nhwc(x), wp, kw, dh, dw, ph, pw, regs, tasks, order, starts, nhwc(y))
    return y if channels_last_plane(ho, wo) else as_nchw(y)


# ---------------------------------------------------------------- the weight gradient
@njit(parallel=True, **_JIT)
def _prepare_weight(gy, regs, offsets, gyr):
    """gyr ``(N*Ho*Wo, Co)``: gy's pixels (gy: N, Ho, Wo, Co) region by region, region r from row ``offsets[r]``."""
    n = gy.shape[0]
    for t in prange(regs.shape[0]):
        r0, r1, c0, c1 = regs[t, 0], regs[t, 1], regs[t, 2], regs[t, 3]
        per_image = (r1 - r0) * (c1 - c0)
        _gather(gyr[offsets[t]:offsets[t] + n * per_image], gy, 0, n * per_image, per_image,
                c1 - c0, r0, c0, 0, gy.shape[3])


@njit(**_JIT)
def _weight_tasks(regs, n, kh, kw, ci, channels):
    """(T, 3) int64 ``(tap, first channel, channel after the last)`` and their costs (pixels x channels)."""
    pixels = np.zeros(kh * kw, np.float64)
    for r in range(regs.shape[0]):
        p = n * (regs[r, 1] - regs[r, 0]) * (regs[r, 3] - regs[r, 2])
        for i in range(regs[r, 4], regs[r, 5]):
            for j in range(regs[r, 6], regs[r, 7]):
                pixels[i * kw + j] += p
    per_tap = (ci + channels - 1) // channels
    tasks = np.empty((kh * kw * per_tap, 3), np.int64)
    costs = np.empty(kh * kw * per_tap, np.float64)
    for t in range(kh * kw):
        for s in range(per_tap):
            k = t * per_tap + s
            tasks[k, 0], tasks[k, 1], tasks[k, 2] = t, s * channels, min(ci, (s + 1) * channels)
            costs[k] = pixels[t] * (tasks[k, 2] - tasks[k, 1])
    return tasks, costs


@njit(parallel=True, **_JIT)
def _weight_products(gyr, xcl, kw, dh, dw, ph, pw, regs, offsets, n, tasks, order, starts,
                     gwp):
    """gwp ``(kh*kw, Co, Ci)``: per tap, the sum over regions of gy_R.T @ x_{R,t}, regions in order.

    gyr ``(N*Ho*Wo, Co)`` from ``_prepare_weight``; xcl (N, H, W, Ci) channels-last.
    """
    co = gyr.shape[1]
    bins = starts.shape[0] - 1
    most = 0
    for r in range(regs.shape[0]):
        most = max(most, n * (regs[r, 1] - regs[r, 0]) * (regs[r, 3] - regs[r, 2]))
    xbuf = np.empty((bins, most, CHANNELS), gyr.dtype)
    for b in prange(bins):
        for k in range(starts[b], starts[b + 1]):
            tap, ch0, ch1 = tasks[order[k], 0], tasks[order[k], 1], tasks[order[k], 2]
            out = gwp[tap, :, ch0:ch1]
            first = True
            for r in range(regs.shape[0]):
                r0, r1, c0, c1, i0, i1, j0, j1 = regs[r]
                i, j = tap // kw, tap % kw
                if not (i0 <= i < i1 and j0 <= j < j1):
                    continue
                per_image = (r1 - r0) * (c1 - c0)
                cols = n * per_image
                xb = xbuf[b, :cols, :ch1 - ch0]
                _gather(xb, xcl, 0, cols, per_image, c1 - c0, r0 + i * dh - ph, c0 + j * dw - pw,
                        ch0, ch1)
                product(gyr[offsets[r]:offsets[r] + cols].T, xb, out, 0, co, 0, ch1 - ch0,
                        not first)
                first = False
            if first:
                out[:] = 0
    return gwp


@njit(parallel=True, **_JIT)
def unpack_taps(gwp, gw):
    """``gw[o, c, i, j] = gwp[i*kw + j, o, c]``: ``(taps, Co*Ci)`` transposed, a run of ``Co*Ci`` per task.

    Args:
        gwp: The weight gradient by tap, ``(kh*kw, Co, Ci)``.
        gw: The weight gradient (Co, Ci, kh, kw), written.

    Returns:
        gw.
    """
    co, ci, kh, kw = gw.shape
    taps, m = kh * kw, co * ci
    src, dst = gwp.reshape(taps, m), gw.reshape(m, taps)
    run = 1024
    for blk in prange((m + run - 1) // run):
        m0, m1 = blk * run, min(m, (blk + 1) * run)
        for t in range(taps):
            line = src[t]
            for k in range(m0, m1):
                dst[k, t] = line[k]
    return gw


# ------------------------------------------------------------------ the entry points
def fits(stride, w_shape, dilation) -> bool:
    """Whether the numba set sends a dense convolution here.

    At stride 1 when dilated. At dilation 1 ``.dense``'s im2col products keep the
    convolution: DeepLabHead's 3x3 (256 channels) runs as fast either way, and the
    small-input stem (1 or 3 input channels at stride 1) many times faster there, its
    products too thin for register blocks.

    Args:
        stride: An int or (sh, sw).
        w_shape: The weight's shape (Co, Ci, kh, kw).
        dilation: An int or (dh, dw).

    Returns:
        Whether it does (arguments that are not ints or pairs, or a weight that is not 4-D,
        give False, for the other kernels to refuse with their messages).
    """
    try:
        stride, dilation = pair(stride, "stride", "fits"), pair(dilation, "dilation", "fits")
    except TypeError:
        return False
    if stride != (1, 1) or len(w_shape) != 4 or min(dilation) < 1:
        return False
    return dilation != (1, 1)


def _geometry(fn, x_shape, w_shape, padding, dilation):
    (sh, sw), (ph, pw), out_hw = conv_geometry(fn, x_shape, w_shape, (1, 1), padding,
                                               dilation=dilation)
    return (ph, pw), dilation_pair(fn, dilation), out_hw


def conv2d_forward(x, w, padding, dilation):
    """Dense convolution at stride 1, any dilation; ``ReferenceKernels.conv2d_forward``'s contract.

    Args:
        x: The input (N, Ci, H, W), NCHW or channels-last.
        w: The weight (Co, Ci, kh, kw).
        padding: (ph, pw), zeros on each side.
        dilation: (dh, dw), or an int.

    Returns:
        The output y (N, Co, Ho, Wo), channels-last on the planes the numba set keeps so,
        else NCHW.
    """
    fn = "conv2d_forward"
    x, w = np.asarray(x), np.ascontiguousarray(w)
    same_float_dtype(fn, x=x, w=w)
    (ph, pw), (dh, dw), (ho, wo) = _geometry(fn, x.shape, w.shape, padding, dilation)
    return _conv(x, w, False, dh, dw, ph, pw, (x.shape[0], w.shape[0], ho, wo))


def conv2d_backward_input(gy, w, x_shape, padding, dilation):
    r"""Input gradient at stride 1: gy convolved with the flipped, transposed kernel.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo), NCHW or channels-last.
        w: The weight (Co, Ci, kh, kw).
        x_shape: The input's shape (N, Ci, H, W).
        padding: (ph, pw).
        dilation: (dh, dw), or an int.

    Returns:
        gx, of ``x_shape``: channels-last on the planes the numba set keeps so, else NCHW.
    """
    fn = "conv2d_backward_input"
    gy, w = np.asarray(gy), np.ascontiguousarray(w)
    same_float_dtype(fn, gy=gy, w=w)
    x_shape = tuple(int(s) for s in x_shape)
    (ph, pw), (dh, dw), (ho, wo) = _geometry(fn, x_shape, w.shape, padding, dilation)
    grad_out_shape(fn, gy.shape, (x_shape[0], w.shape[0], ho, wo))
    kh, kw = w.shape[2], w.shape[3]
    return _conv(gy, w, True, dh, dw, dh * (kh - 1) - ph, dw * (kw - 1) - pw, x_shape)


def conv2d_backward_weight(gy, x, w_shape, padding, dilation):
    r"""Weight gradient at stride 1, any dilation; the reference kernel's contract.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo), NCHW or channels-last.
        x: The input (N, Ci, H, W), NCHW or channels-last.
        w_shape: The weight's shape (Co, Ci, kh, kw).
        padding: (ph, pw).
        dilation: (dh, dw), or an int.

    Returns:
        gw, of ``w_shape``.
    """
    fn = "conv2d_backward_weight"
    gy, x = np.asarray(gy), np.asarray(x)
    dtype = same_float_dtype(fn, gy=gy, x=x)
    w_shape = tuple(int(s) for s in w_shape)
    (ph, pw), (dh, dw), (ho, wo) = _geometry(fn, x.shape, w_shape, padding, dilation)
    n, ci, h, wd = x.shape
    co, _, kh, kw = w_shape
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    regs = regions(kh, kw, dh, dw, ph, pw, h, wd, ho, wo)
    tap = _one_tap(regs, dh, dw, ph, pw, h, wd, ho, wo)
    if tap is not None:  # the other taps read only padding: their gradients are 0
        gw = np.zeros(w_shape, dtype)
        gw[:, :, tap[0], tap[1]] = pointwise.pointwise_conv2d_backward_weight(gy, x)[:, :, 0, 0]
        return gw
    sizes = n * (regs[:, 1] - regs[:, 0]) * (regs[:, 3] - regs[:, 2])
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    gyr = np.empty((n * ho * wo, co), dtype)
    _prepare_weight(nhwc(gy), regs, offsets, gyr)
    tasks, costs = _weight_tasks(regs, n, kh, kw, ci, CHANNELS)
    order, starts = schedule(costs, numba.get_num_threads())
    gwp = np.empty((kh * kw, co, ci), dtype)
    _weight_products(gyr, nhwc(x), kw, dh, dw, ph, pw, regs, offsets, n, tasks, order, starts,
                     gwp)
    return unpack_taps(gwp, np.empty(w_shape, dtype))
