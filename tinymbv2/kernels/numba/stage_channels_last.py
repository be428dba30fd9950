"""The depthwise stage in training on channels-last planes, one block of channels at a time.

``.stage`` runs the middle of an inverted residual block,

    a = ReLU6(BN1(e)),   d = depthwise3x3(a),   h = ReLU6(BN2(d)),

as one kernel per direction on the NCHW planes. On the small planes this set keeps
channels-last (``..layout``: 16 x 16 pixels and less) the same three steps ran as five
kernel calls forward and as many backward, each a pass over whole tensors of up to
4 MB: inside a training step, where the tensors come from memory and not from cache,
they took two to three times as long as on their own (figures: docs/kernels.md, the
depthwise stage under "How the numba kernels are fast").

Here the work is cut into blocks of ``CHANNELS`` contiguous channels of every pixel of every
image (32 float32 channels: 128 bytes a pixel, two cache lines), and every step runs over a
block while it stays in the core's cache; each thread takes a contiguous share of the blocks
(``prange`` over the shares):

* **forward**: BN1's statistics over e's block (the one read from memory); a =
  ReLU6(BN1(e)) into a scratch block; the depthwise filter of a into another; BN2's
  statistics over that block (in cache), then d (written: the backward needs it) and h;
* **backward**, from dL/dh: BN2's backward into a scratch block (dL/dd); a recomputed
  from e into another; the depthwise weight gradient against a; dL/da into a third; BN1's
  backward of it into dL/de's block.

The scratch blocks are compact, (N, H, W, ``CHANNELS``), and each share has its own set,
which it reuses for every block it runs, so they stay in its cache: only e, d and h (and
dL/dh, dL/de) travel to and from memory. With whole-size scratch tensors (a and dL/dd each
as large as e, one block's columns of them touched at a time) the segmentation step's
16 x 16 stages took longer (figures: docs/kernels.md).

The filter may be dilated, with padding equal to the dilation (DeepLab's atrous blocks),
at stride 1. Each step is the routine the separate kernels run, on the same values in the
same order -- the statistics in ``batchnorm.channels_last``'s runs of rows, the filter
through ``depthwise.rows3x3``'s register loops, a sub-grid at a time when dilated -- so
the results are the same bits as ``batch_norm_forward_train``, ``depthwise_conv2d_*`` and
``batch_norm_backward_train`` of this set, and the same for any number of threads.

A block's rows are ``C`` values apart (2304 bytes at 576 channels), a stride the hardware
prefetchers do not follow across pages: each pass that first reads a tensor from memory asks
for the lines ``AHEAD`` rows ahead itself (``_prefetch_row``). Without that the kernel was no
faster than the separate ones in the step; with it, faster. The forward's passes that write
d and h ask the same way for the rows they are about to write (``_prefetch_row`` with
``write``): lines not in cache must otherwise be read in before each store, a row at a time;
in the backward, asking so for dL/de's rows was no faster (figures: docs/kernels.md).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (the one-pool set-up, see there)
from .batchnorm.channels_last import grad_terms, mean_invstd, run_bounds
from .batchnorm.flat import passed
from .depthwise.rows3x3 import correlate_plane, filter_taps, weight_sums_planes
from .layout import (aligned_empty, channels_last_plane, empty_channels_last, is_channels_last,
                     nhwc)
from .llvm import lanes
from .prefetch import LINE_BYTES, prefetch_line, prefetch_line_for_write

_JIT = dict(cache=CACHE, fastmath=False)

CHANNELS = 32
"""Channels per task (a multiple of the float32 vector's 16 lanes)."""

AHEAD = 8
"""Rows ahead that a first pass over a tensor asks for (``_prefetch_row``)."""

MIN_CHANNELS = 256
MIN_PIXELS = 64
"""The kernel takes stages of at least this many channels on planes of at least this many
pixels. It wins where the step brings its tensors from memory (a segmentation step's
16 x 16 stages of 384 to 960 channels); on data in cache, and on the small planes and few
channels of a 32 px step (8 x 8 and less, or 144 channels in 5 blocks for 2 threads), the
separate kernels' whole rows ran faster (figures: docs/kernels.md)."""

SERIAL_MAX = 1 << 16
"""Tensors of up to this many values run in the calling thread (as ``batchnorm``'s
``ROWS_SERIAL_MAX``): waking the pool would cost more than it saves."""


@njit(inline="always", **_JIT)
def _prefetch_row(x2, r, c0, c1, write=False):
    """Ask for the lines of row ``r + AHEAD`` of x2 (M, C), columns [c0, c1), if it exists;
    to write them, with ``write``."""
    ahead = r + AHEAD
    if ahead < x2.shape[0]:
        for q in range(c0, c1, LINE_BYTES // x2.itemsize):
            if write:
                prefetch_line_for_write(x2, ahead * x2.shape[1] + q)
            else:
                prefetch_line(x2, ahead * x2.shape[1] + q)


def supported(e, w_dw, stride, dilation) -> bool:
    """Does this kernel run the stage?

    It does for e a float32 or float64 channels-last array of at least ``MIN_CHANNELS``
    channels on a plane this set keeps channels-last and of at least ``MIN_PIXELS`` pixels,
    a (C, 1, 3, 3) filter of e's dtype, stride 1 and any dilation (with padding equal to
    it).

    Args:
        e: The stage's input (N, C, H, W).
        w_dw: The depthwise weight.
        stride: The depthwise stride.
        dilation: The depthwise dilation, an int.

    Returns:
        Whether it does.
    """
    return (isinstance(e, np.ndarray) and e.ndim == 4 and e.dtype in (np.float32, np.float64)
            and channels_last_plane(e.shape[2], e.shape[3]) and e.shape[0] > 0
            and e.shape[1] >= MIN_CHANNELS and e.shape[2] * e.shape[3] >= MIN_PIXELS
            and is_channels_last(e) and isinstance(w_dw, np.ndarray) and w_dw.dtype == e.dtype
            and w_dw.shape == (e.shape[1], 1, 3, 3) and stride == 1 and dilation >= 1)


# -------------------------------------------------- BatchNorm on one block of channels
# The arithmetic of batchnorm.channels_last (forward_train_rows, backward_train_rows),
# restricted to channels [c0, c1): the same runs of rows, the same float64 sums, the same
# roundings, so each channel gets the same bits.
@njit(inline="always", **_JIT)
def _add_run(t1, t2, s1, s2, first):
    """The run's partial sums s1, s2 into the totals t1, t2, in run order (the first run's
    are the totals' start), as ``batchnorm.channels_last`` adds its runs' partials."""
    if first:
        t1[:] = s1
        t2[:] = s2
    else:
        for k in range(t1.shape[0]):
            t1[k] += s1[k]
            t2[k] += s2[k]


@njit(**_JIT)
def _block_stats(x2, xo, c0, c1, bounds, weight, eps, mean, invstd, scale):
    """mean, invstd, scale[c0:c1] of channels c0..c1, which are columns [xo, xo + c1 - c0)
    of the rows x2 (M, S), as ``forward_train_rows``."""
    m = x2.shape[0]
    cb = c1 - c0
    shift = np.empty(cb)
    for k in range(cb):
        shift[k] = x2[0, xo + k]
    t1, t2 = np.zeros(cb), np.zeros(cb)
    s1, s2 = np.empty(cb), np.empty(cb)
    for run in range(bounds.shape[0] - 1):
        s1[:] = 0
        s2[:] = 0
        for r in range(bounds[run], bounds[run + 1]):
            _prefetch_row(x2, r, xo, xo + cb)
            xr = x2[r, xo:xo + cb]
            for k in range(cb):
                d = xr[k] - shift[k]
                s1[k] += d
                s2[k] += d * d
        _add_run(t1, t2, s1, s2, run == 0)
    for k in range(cb):
        ch = c0 + k
        mean[ch], invstd[ch] = mean_invstd(t1[k], t2[k], shift[k], m, eps)
        scale[ch] = weight[ch] * invstd[ch]


@njit(**_JIT)
def _block_relu6(x2, xo, y2, yo, c0, c1, mean, scale, bias):
    """``y2[:, yo:] = ReLU6((x2[:, xo:] - mean) * scale + bias)`` over every row, channels
    [c0, c1) (the parameters' indices) in columns from xo of x2 and from yo of y2; the rows
    ``AHEAD`` asked for, x2's to read and y2's to write."""
    zero, six = y2.dtype.type(0), y2.dtype.type(6)
    cb = c1 - c0
    mu, sc, bi = mean[c0:c1], scale[c0:c1], bias[c0:c1]
    for r in range(x2.shape[0]):
        _prefetch_row(x2, r, xo, xo + cb)
        _prefetch_row(y2, r, yo, yo + cb, True)
        xr, yr = x2[r, xo:xo + cb], y2[r, yo:yo + cb]
        for k in range(cb):
            yr[k] = min(max((xr[k] - mu[k]) * sc[k] + bi[k], zero), six)


@njit(**_JIT)
def _copy_block(x2, cb, y2, yo):
    """``y2[:, yo:yo + cb] = x2[:, :cb]`` over every row (y2's rows ``AHEAD`` asked for, to
    write)."""
    for r in range(x2.shape[0]):
        _prefetch_row(y2, r, yo, yo + cb, True)
        xr, yr = x2[r, :cb], y2[r, yo:yo + cb]
        for k in range(cb):
            yr[k] = xr[k]


@njit(**_JIT)
def _block_grad_coefs(g2, go, x2, xo, c0, c1, bounds, mean, invstd, weight, bias, scale, coef,
                      gweight, gbias):
    """BatchNorm + ReLU6's gradient sums over the block, as ``backward_train_rows``: fills
    scale[c0:c1], coef[:, c0:c1] = (a, b, c) of ``gx = a (g - b - (x - mean) c)`` and
    gweight, gbias[c0:c1]; g's channels are columns from go of g2, x's from xo of x2."""
    m = x2.shape[0]
    cb = c1 - c0
    zero, six = x2.dtype.type(0), x2.dtype.type(6)
    mu64 = np.empty(cb)
    for k in range(cb):
        scale[c0 + k] = weight[c0 + k] * invstd[c0 + k]
        mu64[k] = mean[c0 + k]
    mu, sc, bi = mean[c0:c1], scale[c0:c1], bias[c0:c1]
    t1, t2 = np.zeros(cb), np.zeros(cb)
    sg, sgx = np.empty(cb), np.empty(cb)
    for run in range(bounds.shape[0] - 1):
        sg[:] = 0
        sgx[:] = 0
        for r in range(bounds[run], bounds[run + 1]):
            _prefetch_row(x2, r, xo, xo + cb)
            _prefetch_row(g2, r, go, go + cb)
            xr, gr = x2[r, xo:xo + cb], g2[r, go:go + cb]
            for k in range(cb):
                g = np.float64(passed(gr[k], xr[k], mu[k], sc[k], bi[k], True, zero, six))
                sg[k] += g
                sgx[k] += g * (xr[k] - mu64[k])
        _add_run(t1, t2, sg, sgx, run == 0)
    for k in range(cb):
        ch = c0 + k
        gweight[ch], coef[0, ch], coef[1, ch], coef[2, ch] = grad_terms(t1[k], t2[k], weight[ch],
                                                                        invstd[ch], m)
        gbias[ch] = t1[k]


@njit(**_JIT)
def _block_grad(g2, go, x2, xo, gx2, gxo, c0, c1, mean, scale, bias, coef):
    """``gx = a (passed(g) - b - (x - mean) c)`` for channels [c0, c1), which are columns
    from go of g2, from xo of x2 and from gxo of gx2."""
    zero, six = x2.dtype.type(0), x2.dtype.type(6)
    cb = c1 - c0
    mu, sc, bi = mean[c0:c1], scale[c0:c1], bias[c0:c1]
    a, bt, cc = coef[0, c0:c1], coef[1, c0:c1], coef[2, c0:c1]
    for r in range(x2.shape[0]):
        xr, gr, out = x2[r, xo:xo + cb], g2[r, go:go + cb], gx2[r, gxo:gxo + cb]
        for k in range(cb):
            g = passed(gr[k], xr[k], mu[k], sc[k], bi[k], True, zero, six)
            out[k] = a[k] * (g - bt[k] - (xr[k] - mu[k]) * cc[k])


# ---------------------------------------------- the depthwise filter on the block
@njit(**_JIT)
def _filter_block(src4, dst4, taps, t0, dil, cb):
    """``dst4[..., :cb]``: the 3x3 correlation of the block src4 (N, H, W, S) with taps
    (9, C) columns [t0, t0 + cb), taps ``dil`` apart and padding ``dil``, sub-grid by sub-grid
    and image by image in the order of ``rows3x3._correlate_grids``, a vector of channels per
    call."""
    n, h, wd, s = src4.shape
    step = lanes(src4)
    for b in range(n):
        for a in range(min(dil, h)):
            for col in range(min(dil, wd)):
                for v0 in range(0, cb, step):
                    at = ((b * h + a) * wd + col) * s + v0
                    correlate_plane(src4, at, taps, t0 + v0, dst4, at, (h - a + dil - 1) // dil,
                                     (wd - col + dil - 1) // dil, dil * s, dil * wd * s,
                                     taps.shape[1], min(step, cb - v0))


@njit(**_JIT)
def _weight_block(g4, x4, dil, t0, cb, table):
    """table (9, C)[:, t0:t0 + cb]: the filter's weight gradient from the blocks g4 and x4
    (N, H, W, S), as ``rows3x3._weight_grad_grids`` sums it (the sub-grids in order, each
    over every image in order)."""
    n, h, wd, s = x4.shape
    step = lanes(x4)
    for v0 in range(0, cb, step):
        for a in range(min(dil, h)):
            for col in range(min(dil, wd)):
                at = (a * wd + col) * s + v0
                weight_sums_planes(g4, at, x4, at, table, t0 + v0, n, h * wd * s,
                                    (h - a + dil - 1) // dil, (wd - col + dil - 1) // dil,
                                    dil * s, dil * wd * s, table.shape[1], a > 0 or col > 0,
                                    min(step, cb - v0))


# ------------------------------------------------------------------ one task each way
@njit(**_JIT)
def _forward_block(e2, w1, b1, eps1, taps, dil, w2, b2, eps2, c0, c1, bounds, stats, ab, db,
                   d2, h2):
    """Channels [c0, c1) of the rows e2, d2, h2 (M, C); a and d of the block in the
    task's scratch ab, db (N, H, W, CHANNELS)."""
    m, cb = e2.shape[0], c1 - c0
    ab2, db2 = ab.reshape(m, ab.shape[3]), db.reshape(m, db.shape[3])
    _block_stats(e2, c0, c0, c1, bounds, w1, eps1, stats[0], stats[1], stats[2])
    _block_relu6(e2, c0, ab2, 0, c0, c1, stats[0], stats[2], b1)
    _filter_block(ab, db, taps, c0, dil, cb)
    _block_stats(db2, 0, c0, c1, bounds, w2, eps2, stats[3], stats[4], stats[5])
    _copy_block(db2, cb, d2, c0)
    _block_relu6(db2, 0, h2, c0, c0, c1, stats[3], stats[5], b2)


@njit(**_JIT)
def _forward_share(e4, w1, b1, eps1, taps, dil, w2, b2, eps2, bounds, stats, scratch, d4, h4, t):
    """Share t of ``scratch.shape[0]``: a contiguous run of the blocks, in scratch[t]."""
    n, h, wd, c = e4.shape
    m, blocks, tasks = n * h * wd, (c + CHANNELS - 1) // CHANNELS, scratch.shape[0]
    for blk in range(t * blocks // tasks, (t + 1) * blocks // tasks):
        c0 = blk * CHANNELS
        _forward_block(e4.reshape(m, c), w1, b1, eps1, taps, dil, w2, b2, eps2, c0,
                       min(c, c0 + CHANNELS), bounds, stats, scratch[t, 0], scratch[t, 1],
                       d4.reshape(m, c), h4.reshape(m, c))


@njit(parallel=True, **_JIT)
def _forward_parallel(e4, w1, b1, eps1, taps, dil, w2, b2, eps2, bounds, stats, scratch, d4, h4):
    for t in prange(scratch.shape[0]):
        _forward_share(e4, w1, b1, eps1, taps, dil, w2, b2, eps2, bounds, stats, scratch, d4,
                       h4, t)


@njit(**_JIT)
def _backward_block(gh2, e2, d2, mean1, invstd1, w1, b1, flipped, dil, mean2, invstd2, w2, b2,
                    c0, c1, bounds, scales, coefs, grads, table, ab, gdb, gab, ge2):
    """Channels [c0, c1) of the rows gh2, e2, d2, ge2 (M, C); a, dL/dd and dL/da of the
    block in the task's scratch ab, gdb, gab (N, H, W, CHANNELS)."""
    m, cb, s = e2.shape[0], c1 - c0, ab.shape[3]
    ab2, gdb2, gab2 = ab.reshape(m, s), gdb.reshape(m, s), gab.reshape(m, s)
    # dL/dd: BN2 + ReLU6 backward
    _block_grad_coefs(gh2, c0, d2, c0, c0, c1, bounds, mean2, invstd2, w2, b2, scales[1],
                      coefs[1], grads[2], grads[3])
    _block_grad(gh2, c0, d2, c0, gdb2, 0, c0, c1, mean2, scales[1], b2, coefs[1])
    # a, recomputed (the forward's scale: w1 * invstd1 in e's dtype)
    for k in range(c0, c1):
        scales[0, k] = w1[k] * invstd1[k]
    _block_relu6(e2, c0, ab2, 0, c0, c1, mean1, scales[0], b1)
    # the filter's gradients: dL/dw against a, dL/da
    _weight_block(gdb, ab, dil, c0, cb, table)
    _filter_block(gdb, gab, flipped, c0, dil, cb)
    # dL/de: BN1 + ReLU6 backward of dL/da
    _block_grad_coefs(gab2, 0, e2, c0, c0, c1, bounds, mean1, invstd1, w1, b1, scales[0],
                      coefs[0], grads[0], grads[1])
    _block_grad(gab2, 0, e2, c0, ge2, c0, c0, c1, mean1, scales[0], b1, coefs[0])


@njit(**_JIT)
def _backward_share(gh4, e4, d4, mean1, invstd1, w1, b1, flipped, dil, mean2, invstd2, w2, b2,
                    bounds, scales, coefs, grads, table, scratch, ge4, t):
    """Share t of ``scratch.shape[0]``: a contiguous run of the blocks, in scratch[t]."""
    n, h, wd, c = e4.shape
    m, blocks, tasks = n * h * wd, (c + CHANNELS - 1) // CHANNELS, scratch.shape[0]
    for blk in range(t * blocks // tasks, (t + 1) * blocks // tasks):
        c0 = blk * CHANNELS
        _backward_block(gh4.reshape(m, c), e4.reshape(m, c), d4.reshape(m, c), mean1, invstd1,
                        w1, b1, flipped, dil, mean2, invstd2, w2, b2, c0, min(c, c0 + CHANNELS),
                        bounds, scales, coefs, grads, table, scratch[t, 0], scratch[t, 1],
                        scratch[t, 2], ge4.reshape(m, c))


@njit(parallel=True, **_JIT)
def _backward_parallel(gh4, e4, d4, mean1, invstd1, w1, b1, flipped, dil, mean2, invstd2, w2, b2,
                       bounds, scales, coefs, grads, table, scratch, ge4):
    for t in prange(scratch.shape[0]):
        _backward_share(gh4, e4, d4, mean1, invstd1, w1, b1, flipped, dil, mean2, invstd2, w2,
                        b2, bounds, scales, coefs, grads, table, scratch, ge4, t)


def _scratch(parallel, e, count):
    """``count`` blocks (N, H, W, CHANNELS) of scratch per share of the blocks: one share per
    thread (at most one per block) when parallel, else one; each share reuses its scratch
    for every block it runs, so the scratch stays in the core's cache."""
    n, c, h, w = e.shape
    blocks = (c + CHANNELS - 1) // CHANNELS
    tasks = min(numba.get_num_threads(), blocks) if parallel else 1
    return aligned_empty((tasks, count, n, h, w, CHANNELS), e.dtype)


@njit(**_JIT)
def _table_to_filter(table):
    """(9, C) -> (C, 1, 3, 3)."""
    c = table.shape[1]
    gw = np.empty((c, 1, 3, 3), table.dtype)
    for ch in range(c):
        for t in range(9):
            gw[ch, 0, t // 3, t % 3] = table[t, ch]
    return gw


def _c(a):
    return np.ascontiguousarray(a)


def stage_forward_train(e, bn1, w_dw, dilation, bn2):
    """The forward above, at stride 1.

    The contract is ``ReferenceKernels.depthwise_stage_forward_train``'s, without ``a``
    (the backward recomputes it).

    Args:
        e: The input (N, C, H, W), channels-last (``supported``).
        bn1: ``(weight, bias, eps)`` of the first BatchNorm ((C,) arrays of e's dtype).
        w_dw: The depthwise weight (C, 1, 3, 3).
        dilation: The filter's dilation, an int; the padding is the same.
        bn2: ``(weight, bias, eps)`` of the second BatchNorm.

    Returns:
        ``(h, d, mean1, invstd1, mean2, invstd2)``: h = ReLU6(BN2(d)) and d (N, C, H, W),
        channels-last, and the batch statistics of e and of d as
        ``batch_norm_forward_train`` returns them.
    """
    (w1, b1, eps1), (w2, b2, eps2) = bn1, bn2
    n, c, hi, wi = e.shape
    d, h = (empty_channels_last(e.shape, e.dtype) for _ in range(2))
    stats = np.empty((6, c), e.dtype)  # mean, invstd, scale of BN1, then of BN2
    parallel = e.size > SERIAL_MAX
    args = (nhwc(e), _c(w1), _c(b1), float(eps1), filter_taps(_c(w_dw), False), int(dilation),
            _c(w2), _c(b2), float(eps2), run_bounds(n * hi * wi), stats,
            _scratch(parallel, e, 2), nhwc(d), nhwc(h))
    if parallel:
        _forward_parallel(*args)
    else:  # one share, in the calling thread
        _forward_share(*args, 0)
    return h, d, stats[0], stats[1], stats[3], stats[4]


def stage_backward_train(gh, e, d, bn1, w_dw, dilation, bn2):
    r"""The backward above.

    Args:
        gh: $\partial L / \partial h$ (N, C, H, W), in either layout (an NCHW one is copied
            channels-last).
        e: The forward's input, channels-last.
        d: The depthwise output the forward returned.
        bn1: ``(weight, bias, mean, invstd)`` of the first BatchNorm.
        w_dw: The depthwise weight (C, 1, 3, 3).
        dilation: The filter's dilation, an int.
        bn2: ``(weight, bias, mean, invstd)`` of the second BatchNorm.

    Returns:
        ``(dL/de, dL/dgamma1, dL/dbeta1, dL/dw_dw, dL/dgamma2, dL/dbeta2)``, dL/de
        channels-last.
    """
    (w1, b1, mean1, invstd1), (w2, b2, mean2, invstd2) = bn1, bn2
    n, c, hi, wi = e.shape
    w_dw = _c(w_dw)
    ge = empty_channels_last(e.shape, e.dtype)
    scales = np.empty((2, c), e.dtype)
    coefs = np.empty((2, 3, c), e.dtype)
    grads = np.empty((4, c), e.dtype)  # dL/dgamma1, dL/dbeta1, dL/dgamma2, dL/dbeta2
    table = np.empty((9, c), e.dtype)
    parallel = e.size > SERIAL_MAX
    args = (nhwc(gh), nhwc(e), nhwc(d), _c(mean1), _c(invstd1), _c(w1), _c(b1),
            filter_taps(w_dw, True), int(dilation), _c(mean2), _c(invstd2), _c(w2), _c(b2),
            run_bounds(n * hi * wi), scales, coefs, grads, table, _scratch(parallel, e, 3),
            nhwc(ge))
    if parallel:
        _backward_parallel(*args)
    else:  # one share, in the calling thread
        _backward_share(*args, 0)
    return ge, grads[0], grads[1], _table_to_filter(table), grads[2], grads[3]
