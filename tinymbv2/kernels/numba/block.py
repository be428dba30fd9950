"""A whole inverted residual block for inference, band by band.

Run layer by layer, a MobileNetV2 block writes its expanded tensor to memory
and reads it back: at 224 px batch 8 the expansion of block 2 alone is
8 x 96 x 112 x 112 float32 = 38.5 MiB, as much as or more than a CPU's whole
last-level cache; the expansion writes it, BatchNorm and the depthwise filter read
it, and the depthwise output is written and read again by the projection. Those
passes, not the arithmetic, held the early high-resolution blocks well below the
GFLOP/s of the 14x14 blocks (figures: docs/kernels.md, "Inference blocks").

``inverted_residual_eval`` computes the block for one *band* of output rows of
one image at a time, so that nothing between the block's input and its output
leaves the cache:

    x rows the band needs       (Ci, rows_in, W)     with a 1-row halo
      -> E = ReLU6(BN(We @ x))  (Ch, rows_in, W)     1x1 expansion: a GEMM, then BN in place
      -> D = ReLU6(BN(dw3x3(E))) (Ch, rows, Wo)      channel by channel
      -> Y = BN(Wp @ D) [+ x]    (Co, rows, Wo)      1x1 projection: a GEMM
    written once into y.

The depthwise filter needs one input row above and below the band: those halo
rows are expanded twice, by both bands that touch them. ``BAND_BYTES`` bounds
E + D per thread.
The numba set gives this kernel the blocks with the largest output planes (above
``block_channels_last.UP_TO`` pixels: at 224 px none, at 448 px block 1); the blocks with
14x14 to 112x112 outputs run in ``.block_channels_last``, the same bands on channels-last
pixels, and the 7x7 ones in whole-batch passes (``.block_small``). On a small plane (the layout off,
as in the tests) a band that is a whole image of under 256 pixels has a few images go
side by side in the GEMMs' columns (``images_per_task``).
Every band (or group of images) is a task of its own, computed the same way whichever
thread takes it, so results are bit-identical from run to run and for any
number of threads. Planes under ``FUSED_FROM`` pixels are never taken here.

The numbers are those of the separate layers up to float rounding (the GEMMs see
a band's columns instead of a whole image's). ``fused_planes`` says which calls this
kernel takes; the others run layer by layer, as ``ReferenceKernels.inverted_residual_eval``
composes the block (in ``kernels/reference.py``, the version to read).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .cache import CACHE
from ..checks import ndim, same_float_dtype
from . import pool  # noqa: F401  (the one-pool set-up)
from .batchnorm import affine_inplace, affine_row, epilogue, epilogue_args
from .depthwise.planes3x3 import correlate_flat, rows3
from .depthwise.planes3x3_s2 import row3x3_s2
from .gemm import columns_nn
from .layout import channels_last_plane

_JIT = dict(cache=CACHE, fastmath=False)
BAND_BYTES = 2 * 1024 * 1024
"""E + D of one band at most, per thread (``band_rows``). Measured at 224 px batch 8 over
blocks 1-13, bands of 1 to 6 MiB were about level, smaller ones slower (bands that fit in
L2 lose more to the halo rows and thinner GEMMs than they gain) and 12 MiB a little
slower; over the whole inference, A/B in one process, 2 and 4 MiB were level and a
little ahead of 1 MiB (figures: docs/kernels.md, "Inference blocks"). At 2 MiB a
one-image forward at 224 px peaks at 4.77 MiB of arrays (4 MiB: 8.02 MiB, layer by layer:
6.54). Read at each call (the tests make it small to get many bands)."""
MIN_COLS = 256
"""GEMM columns that small whole images are grouped up to (``images_per_task``); in an
A/B at 224 px batch 8 grouped (two 14x14 images per task) was a little faster than
ungrouped (figures: docs/kernels.md, "Inference blocks")."""
EVEN_TASKS_BELOW = 8
"""Fewer tasks than this are made even (``even_tasks``), so that two threads share them
equally (figures: docs/kernels.md, "Inference blocks"). Read at each call (0 turns it
off, for an A/B)."""
FUSED_FROM = 64
"""Output planes of fewer pixels are not taken (``fused_planes``; they run in
``.block_small``'s whole-batch passes, channels-last, where a pointwise layer is one GEMM
over the whole batch: at 7x7 layer by layer measured faster than a fused block's one thin
GEMM per image). Nor does this
kernel take channels-last output planes: at 14x14, in an A/B at 224 px batch 8 in one process,
inference was faster layer by layer than in these NCHW bands (and faster still in
``.block_channels_last``; figures: docs/kernels.md, "Inference blocks")."""


@njit(inline="always", **_JIT)
def _channel(ep, c, zero):
    """Channel c of an epilogue (see ``batchnorm.epilogue_args``) as scalars:
    (on, mean, scale, bias, relu6). Scalars, not the shared arrays, go to the inner
    loops: passing arrays costs reference-count updates that the threads contend on."""
    mean, scale, bias, flags = ep
    if flags[0]:
        return True, mean[c], scale[c], bias[c], flags[1]
    return False, zero, zero, zero, False


@njit(**_JIT)
def _depthwise_s1(d, src, top, rows_in, w, bn, xp, run):
    """d (rows, Wo) = ReLU6(BN(3x3 stride-1 correlation of the band)), padding 1.

    src (R, W), the band's real input rows, is copied into a zero-padded flat plane xp
    (row width Wp = W + 2, ``rows_in`` rows, src from row ``top``), where every output
    has all nine taps: one vectorised run ``run[q] = sum_{i,j} w[i,j] xp[q + i Wp + j]``
    over the plane (``depthwise.planes3x3.correlate_flat``), then each row's Wo
    values through ``bn`` = (on, mean, scale, bias, relu6)."""
    rows, wo = d.shape
    wd = src.shape[1]
    wp = wd + 2
    xp[:rows_in * wp + 2] = 0
    for r in range(src.shape[0]):
        dst, s = xp[(r + top) * wp + 1:(r + top) * wp + 1 + wd], src[r]
        for q in range(wd):
            dst[q] = s[q]
    correlate_flat(run, xp, w, wp, rows * wp)
    on, mu, sc, bi, relu6 = bn
    for r in range(rows):
        if on:
            affine_row(run[r * wp:r * wp + wo], d[r], mu, sc, bi, relu6)
        else:
            d[r, :] = run[r * wp:r * wp + wo]


@njit(**_JIT)
def _depthwise_s2(d, src, top, w, bn, zero_row):
    """d (rows, Wo) = BN(3x3 stride-2 correlation of the band), padding 1: src (R, W), the
    band's real input rows (already through the expansion's BN + ReLU6), starts at
    padded row ``top``; rows outside it are the zero padding."""
    rows, wo = d.shape
    on, mu, sc, bi, relu6 = bn
    for r in range(rows):
        r0, r1, r2 = rows3(src, 2 * r - top, zero_row)
        row3x3_s2(d[r], r0, r1, r2, w)
        if on:
            affine_inplace(d[r], mu, sc, bi, relu6)


@njit(**_JIT)
def _band(x, b0, nb, we, ep_e, wdw, ep_d, s, wpj, ep_p, residual, y, r0, r1,
          xb, eb, xp, run, db, ob):
    """Output rows [r0, r1) of images b0 .. b0 + nb - 1: x (N, Ci, H, W) -> y (N, Co, Ho, Wo),
    see the module. Several images (small planes, whole images) go side by side in the
    GEMMs' columns: image i's part of E, D and Y starts at column i times its columns."""
    ci, h, wd = x.shape[1:]
    co, ho, wo = y.shape[1:]
    ch = wdw.shape[0]
    rows = r1 - r0
    top = r0 * s - 1                        # first padded input row the band reads
    a, b = max(top, 0), min((r1 - 1) * s + 2, h)  # the real input rows among them
    rows_in = (rows - 1) * s + 3
    per_in, per_out = (b - a) * wd, rows * wo  # columns of one image in E, and in D and Y
    cols = nb * per_in
    expand = we.shape[0] > 0
    if expand:                              # expansion GEMM: E = We @ x_band
        xm = xb[:ci * cols].reshape(ci, cols)
        for c in range(ci):
            dst = xm[c]
            for i in range(nb):
                for r in range(b - a):
                    sr, o = x[b0 + i, c, a + r], i * per_in + r * wd
                    for q in range(wd):
                        dst[o + q] = sr[q]
        em = eb[:ch * cols].reshape(ch, cols)
        columns_nn(we, xm, em, 0, cols)
    dm = db[:ch * nb * per_out].reshape(ch, nb * per_out)
    zero = wdw.dtype.type(0)
    xp[:wd] = 0  # the zero row of the stride-2 path
    for c in range(ch):  # channel by channel: E's BN + ReLU6 in place, depthwise, BN, ReLU6
        bn_e, bn_d = _channel(ep_e, c, zero), _channel(ep_d, c, zero)
        if bn_e[0]:  # E's BN + ReLU6, in place, as one run
            affine_inplace(eb[c * cols:(c + 1) * cols], bn_e[1], bn_e[2], bn_e[3], bn_e[4])
        for i in range(nb):
            if expand:
                e0 = c * cols + i * per_in
                src = eb[e0:e0 + per_in].reshape(b - a, wd)
            else:
                src = x[b0 + i, c, a:b]
            d = dm[c, i * per_out:(i + 1) * per_out].reshape(rows, wo)
            if s == 1:
                _depthwise_s1(d, src, a - top, rows_in, wdw[c], bn_d, xp, run)
            else:
                _depthwise_s2(d, src, a - top, wdw[c], bn_d, xp[:wd])
    om = ob[:co * nb * per_out].reshape(co, nb * per_out)
    columns_nn(wpj, dm, om, 0, nb * per_out)  # projection: Y = BN(Wp @ D), no activation
    epilogue(om, ep_p)
    for c in range(co):
        for i in range(nb):
            for r in range(rows):
                o = i * per_out + r * wo
                dst, src = y[b0 + i, c, r0 + r], om[c, o:o + wo]
                if residual:
                    res = x[b0 + i, c, r0 + r]
                    for q in range(wo):
                        dst[q] = res[q] + src[q]
                else:
                    for q in range(wo):
                        dst[q] = src[q]


@njit(**_JIT)
def band_rows(ch, wd, wo, s, ho, itemsize, budget):
    """The output rows per band that fit ``budget`` bytes, at least 1.

    A band holds E (Ch x (rows·s + 2) x W) and D (Ch x rows x Wo); the rows are then evened
    out over the image's bands.

    Args:
        ch: Ch, the hidden channels.
        wd: W, the input width.
        wo: Wo, the output width.
        s: The depthwise stride.
        ho: Ho, the output height.
        itemsize: Bytes per value.
        budget: The bytes a band may take (the cache it should stay in).

    Returns:
        The rows per band.
    """
    per_row = ch * (s * wd + wo) * itemsize
    rows = max(1, min(ho, (budget - 2 * ch * wd * itemsize) // per_row))
    nb = (ho + rows - 1) // rows
    return (ho + nb - 1) // nb


@njit(**_JIT)
def even_tasks(ho, rows, groups, below):
    """The rows per band, cut finer where few tasks would leave a thread idle.

    A band is a task, and ``groups`` groups of images times the image's bands are all the
    tasks: one image whose plane fits one band (28x28 at 224 px, batch 1) would be a
    single task, and three bands (block 2 at batch 1) leave one of two threads waiting
    for the third. Under ``below`` tasks, an odd count gets one band more per
    group. A function of the shapes only (determinism); each output's value does not
    depend on where the bands fall.

    Args:
        ho: Ho, the output height.
        rows: The rows per band (``band_rows``).
        groups: The groups of images (tasks per band).
        below: Make task counts under this even (``EVEN_TASKS_BELOW``).

    Returns:
        The rows per band.
    """
    bands = (ho + rows - 1) // rows
    if groups * bands < below and (groups * bands) % 2 and bands < ho:
        bands += 1
        rows = (ho + bands - 1) // bands
    return rows


@njit(**_JIT)
def images_per_task(n, ho, wo, rows, min_cols):
    """Whole images side by side per task, when a band is a whole small image.

    The power of two that gives the GEMMs ``min_cols`` output columns, but at most
    ``ceil(n / 4)`` so that there are still 4 tasks or more. A function of the shapes only
    (determinism).

    Args:
        n: N, the images.
        ho: Ho, the output height.
        wo: Wo, the output width.
        rows: The rows per band.
        min_cols: The output columns a GEMM should have.

    Returns:
        The images per task (1: one band of one image).
    """
    if rows < ho or ho * wo >= min_cols:
        return 1
    g = 1
    while g * ho * wo < min_cols:
        g *= 2
    return max(1, min(g, (n + 3) // 4))


@njit(**_JIT)
def task_plan(n, ch, wd, wo, s, ho, itemsize, threads, budget, min_cols, even_below):
    """How a block's work is cut into tasks: bands of rows (``band_rows``, ``even_tasks``)
    of groups of images (``images_per_task``), dealt out round-robin to the workers.

    Args:
        n: N, the images.
        ch: Ch, the hidden channels.
        wd: W, the input width.
        wo: Wo, the output width.
        s: The depthwise stride.
        ho: Ho, the output height.
        itemsize: Bytes per value.
        threads: The threads there are.
        budget: ``BAND_BYTES``.
        min_cols: ``MIN_COLS``.
        even_below: ``EVEN_TASKS_BELOW``.

    Returns:
        ``(rows, group, bands, tasks, workers)``: output rows per band, images per group,
        bands per image, tasks (groups times bands), workers (one scratch each).
    """
    rows = band_rows(ch, wd, wo, s, ho, itemsize, budget)
    group = images_per_task(n, ho, wo, rows, min_cols)
    groups = (n + group - 1) // group
    rows = even_tasks(ho, rows, groups, even_below)
    bands = (ho + rows - 1) // rows
    ntask = groups * bands
    return rows, group, bands, ntask, min(threads, ntask)


@njit(parallel=True, **_JIT)
def _blocks(x, we, ep_e, wdw, ep_d, s, wpj, ep_p, residual, y, threads, budget, min_cols,
            even_below):
    n, ci, h, wd = x.shape
    co, ho, wo = y.shape[1:]
    ch = wdw.shape[0]
    rows, group, bands, ntask, workers = task_plan(n, ch, wd, wo, s, ho, x.itemsize, threads,
                                                   budget, min_cols, even_below)
    rin = (rows - 1) * s + 3
    xbs = np.empty((workers, group * ci * rin * wd if we.shape[0] > 0 else 0), x.dtype)
    ebs = np.empty((workers, group * ch * rin * wd if we.shape[0] > 0 else 0), x.dtype)
    xps = np.empty((workers, rin * (wd + 3) + 2), x.dtype)  # a padded plane
    runs = np.empty((workers, rows * (wd + 2)), x.dtype)
    dbs = np.empty((workers, group * ch * rows * wo), x.dtype)
    obs = np.empty((workers, group * co * rows * wo), x.dtype)
    for k in prange(workers):
        for t in range(k, ntask, workers):
            g, band = t // bands, t % bands
            b0 = g * group
            r0 = band * rows
            _band(x, b0, min(group, n - b0), we, ep_e, wdw, ep_d, s, wpj, ep_p, residual, y,
                  r0, min(ho, r0 + rows), xbs[k], ebs[k], xps[k], runs[k], dbs[k], obs[k])
    return y


def fused_planes(x, stride) -> bool:
    """Does ``inverted_residual_eval`` take a block on input ``x`` at this stride?

    It does for output planes of at least ``FUSED_FROM`` pixels that are not kept
    channels-last.

    Args:
        x: The block's input (N, C, H, W).
        stride: The depthwise stride.

    Returns:
        Whether the fused kernel runs the block.
    """
    plane = output_plane(x, stride)
    return plane is not None and plane[0] * plane[1] >= FUSED_FROM and not (
        channels_last_plane(*plane))


def output_plane(x, stride):
    """``(Ho, Wo)`` of a block on input ``x`` at this stride (its filter 3x3, padding 1):
    what each block kernel's ``supported`` asks about.

    Args:
        x: The block's input (N, C, H, W).
        stride: The depthwise stride.

    Returns:
        ``(Ho, Wo)``, or None when x is not 4-D or the stride is not 1 or 2.
    """
    if x.ndim != 4 or stride not in (1, 2):
        return None
    return (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1


def inverted_residual_eval(x, expand, depthwise, project, stride, residual):
    """MobileNetV2's inverted residual block in eval mode, one call (see the module).

    Each bn is ``(mean, var, weight, bias, eps, relu6)`` as the ``*_bn_eval`` kernels take
    it (ReLU6 on the first two, not the projection). The contract is ``ReferenceKernels``'
    kernel of the same name.

    Args:
        x: The block's input (N, Ci, H, W).
        expand: None (expansion ratio 1) or ``(w (Ch, Ci, 1, 1), bn)``.
        depthwise: ``(w (Ch, 1, 3, 3), bn)``, padding 1.
        project: ``(w (Co, Ch, 1, 1), bn)``.
        stride: 1 or 2.
        residual: Add x (stride 1, Ci = Co).

    Returns:
        (N, Co, Ho, Wo).

    Raises:
        ValueError: Weights of other shapes, or a stride other than 1 or 2.
        TypeError: Arrays of different dtypes.
    """
    fn = "inverted_residual_eval"
    x, we, wdw, wpj, ep_e, ep_d, ep_p = block_args(fn, np.ascontiguousarray(x), expand, depthwise,
                                                   project, stride, residual)
    n, ci, h, wd = x.shape
    ch, co = wdw.shape[0], wpj.shape[0]
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    if ho * wo < FUSED_FROM or channels_last_plane(ho, wo):
        raise ValueError(f"{fn}: output planes of {ho}x{wo} run layer by layer "
                         "(see fused_planes), not in this kernel")
    prepared = (we.reshape(we.shape[0], ci), ep_e, wdw.reshape(ch, 3, 3), ep_d,
                wpj.reshape(co, ch), ep_p)
    return run(x, prepared, stride, bool(residual))


def run(x, prepared, stride, residual):
    """The block on ``x`` with its checked weights; the caller has checked x against them.

    Args:
        x: The block's input (N, Ci, H, W), C-contiguous, output planes ``fused_planes``
            takes.
        prepared: ``(we (Ch, Ci), ep_e, wdw (Ch, 3, 3), ep_d, wpj (Co, Ch), ep_p)``, the
            weights contiguous, the BatchNorms as ``batchnorm.epilogue_args``.
        stride: 1 or 2.
        residual: Add x.

    Returns:
        (N, Co, Ho, Wo).
    """
    n, _, h, wd = x.shape
    co = prepared[4].shape[0]
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    y = np.empty((n, co, ho, wo), x.dtype)  # NumPy's allocator: see kernels.numba
    if n:
        _blocks(x, *prepared[:4], stride, *prepared[4:], residual, y, numba.get_num_threads(),
                BAND_BYTES, MIN_COLS, EVEN_TASKS_BELOW)
    return y


def block_args(fn, x, expand, depthwise, project, stride, residual):
    """A block's arguments checked and made ready for the jitted kernels.

    Shared by this kernel and ``.block_channels_last``'s.

    Args:
        fn: The kernel's name, for the messages.
        x: The block's input (N, Ci, H, W), left in its layout.
        expand: None or ``(w (Ch, Ci, 1, 1), bn)``.
        depthwise: ``(w (Ch, 1, 3, 3), bn)``.
        project: ``(w (Co, Ch, 1, 1), bn)``.
        stride: 1 or 2.
        residual: Add x.

    Returns:
        ``(x, we, wdw, wpj, ep_e, ep_d, ep_p)``: the weights contiguous (``we`` of shape
        (0, Ci, 1, 1) without expansion), the BatchNorms as ``batchnorm.epilogue_args``.

    Raises:
        ValueError: Weights of other shapes, a stride other than 1 or 2, or a residual
            that cannot be added.
        TypeError: Arrays of different dtypes.
    """
    ndim(fn, "x", x, 4)
    n, ci, h, wd = x.shape
    wdw = np.ascontiguousarray(depthwise[0])
    we = np.empty((0, ci, 1, 1), x.dtype) if expand is None else np.ascontiguousarray(expand[0])
    wpj = np.ascontiguousarray(project[0])
    same_float_dtype(fn, x=x, expand=we, depthwise=wdw, project=wpj)
    ch = wdw.shape[0] if wdw.ndim else 0
    _expect_shape(fn, "depthwise", wdw, (ch, 1, 3, 3))
    if expand is None and ch != ci:
        raise ValueError(f"{fn}: without expansion the depthwise filter needs {ci} "
                         f"channels, got weight {wdw.shape}")
    if expand is not None:
        _expect_shape(fn, "expand", we, (ch, ci, 1, 1))
    co = wpj.shape[0] if wpj.ndim == 4 else -1
    _expect_shape(fn, "project", wpj, (co, ch, 1, 1), "(Co, %d, 1, 1)" % ch)
    if stride not in (1, 2):
        raise ValueError(f"{fn}: stride must be 1 or 2, got {stride!r}")
    if residual and (stride != 1 or co != ci):
        raise ValueError(f"{fn}: the residual needs stride 1 and Co = Ci, got stride "
                         f"{stride}, Ci {ci}, Co {co}")
    ep_e = epilogue_args(fn, None if expand is None else expand[1], ch, x.dtype)
    ep_d = epilogue_args(fn, depthwise[1], ch, x.dtype)
    ep_p = epilogue_args(fn, project[1], co, x.dtype)
    return x, we, wdw, wpj, ep_e, ep_d, ep_p


def _expect_shape(fn, name, w, shape, shown=None):
    if w.shape != shape:
        raise ValueError(f"{fn}: {name} weight must have shape {shown or shape}, got {w.shape}")
