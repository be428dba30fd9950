"""A whole inverted residual block for inference on channels-last pixels, band by band.

On a channels-last plane (``.layout``) an image is the matrix x[b] ``(H*W, C)``, one row per
pixel, and the block's three layers are three passes over such matrices:

    E = ReLU6(BN(x[b] @ We.T))      (H*W, Ch)     1x1 expansion: a GEMM
    D = ReLU6(BN(dw3x3(E)))         (Ho*Wo, Ch)   along the channels of each pixel
    Y = BN(D @ Wp.T) [+ x[b]]       (Ho*Wo, Co)   1x1 projection: a GEMM, written into y

Run layer by layer (``ReferenceKernels.inverted_residual_eval``'s composition, the version
to read), each layer is a call of its own over the whole batch: E (t times the input) is
written to memory and read back, and each call wakes the thread pool. Here one task
computes all three for a band of output rows of one image, or for a group of whole small
images, with E and D in a scratch of its own that stays in the core's L2 cache (an image of
14x14 x 384 channels is 301 KB), and a block is one parallel call.

* The expansion writes E between a zero row of pixels above and below (the filter's
  padding, after the activation, so zeros; a band's other rows are its halo, expanded by
  both bands that touch them), its BatchNorm and ReLU6 applied in the GEMM's registers
  before the store (``tile.packed_product`` with a table).
* The filter (``depthwise.rows3x3_bn``) runs along the contiguous channels of a pixel, a
  vector of channels at a time, its weights and a 3 x 3 window of input vectors in
  registers, its BatchNorm and ReLU6 applied before the store.
* The projection's BatchNorm, too, is applied in its GEMM's registers; the residual is
  added after it, as the reference adds it.
* The GEMMs' right-hand operands are W.T packed in strips of the register block
  (``tile.pack_strips``), once per call, or once for a prepared block.

Tasks are cut as ``.block`` cuts its bands (``block.task_plan``: functions of the shapes
alone), and every output is summed the same way in whatever task it falls, so results are
bit-identical for any number of threads. The input may come in either layout (after an
NCHW block, x[b]'s columns are read with strides); the output is channels-last. At 224 px
this kernel takes the blocks with outputs from 112x112 down to 14x14 (``FROM``, ``UP_TO``),
and the stem writes channels-last pixels, so MobileNetV2's inference is channels-last from
the stem's output on (the 7x7 blocks: ``.block_small``).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (the one-pool set-up)
from .block import EVEN_TASKS_BELOW, MIN_COLS, block_args, output_plane, task_plan
from .batchnorm import epilogue_table
from .depthwise.rows3x3 import filter_taps
from .depthwise.rows3x3_bn import depthwise_rows_bn, filter_rows_bn
from .layout import empty_channels_last, is_channels_last
from .llvm import lanes
from .tile import pack_strips, packed_product

_JIT = dict(cache=CACHE, fastmath=False)
FROM = 64
"""Output planes of fewer pixels run in whole-batch passes (``.block_small``; 7x7 at 224
px), where a pointwise layer is one GEMM over the whole batch: in an A/B of the whole 224 px inference in one
process, the 7x7 blocks here made batch 8 33.5 -> 34.1 ms and batch 1 8.4 -> 9.5 ms (one
image is cut into bands of 4 and 3 rows, whose halo rows are expanded twice; uncut, one
thread takes it: 9.6 ms). Read at each call."""
DIRECT = True
"""A block without expansion on a channels-last input (block 1 at 224 px, after the stem's
channels-last output) filters x's rows in place instead of copying them into the band's
scratch first. A switch for the A/B and the tests."""
UP_TO = 12544
"""... and planes of more pixels than this (112x112) band by band in NCHW (``.block``).
A/B of the whole 224 px inference (Intel Xeon host): up to 28x28 38.1 ms at batch 8 and
8.45 ms at batch 1; up to 56x56 35.4 and 8.24; up to 112x112 (block 1 too, reading the
stem's NCHW output by strides) 35.6 and 8.08, within the noise of 56x56. Since the stem
writes its output channels-last (``dense.EVAL_PIXELS_UP_TO``), block 1 reads it along
memory here: block 1 at batch 8 1.75 against 2.40 ms in NCHW bands, the stem 2.35 against
2.73 (AMD EPYC host; figures: docs/kernels.md, "Inference blocks"). Read at each call."""


def core_l2_bytes(default: int = 1 << 20) -> int:
    """The L2 cache of one core: CPU 0's, as Linux describes it in sysfs, else ``default``.

    Args:
        default: The size where sysfs says nothing (another OS, a container without it).

    Returns:
        Bytes.
    """
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            text = f.read().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        return default


BAND_BYTES = core_l2_bytes()
"""E + D of one band at most, per thread (``block.band_rows``): the core's L2 cache. In
an A/B of the whole 224 px inference in one process (AMD EPYC host, 1 MiB of L2 a core),
bands of 1 MiB against the 2 MiB of ``block.BAND_BYTES``: batch 1 4.73 against 4.87 ms
(4.85 against 5.01 in a second run), batch 8 30.0 against 29.8 (34.6 against 34.4). The
same bits at any size. Read at each call."""


@njit(**_JIT)
def _band(x3, b0, nb, h, wd, weT, bn_e, relu6_e, wt, bn_d, relu6_d, s, wpT, bn_p, relu6_p,
          residual, y2, ho, wo, r0, r1, eb, db, direct):
    """Output rows [r0, r1) of images b0 .. b0 + nb - 1 (several only when whole images):
    ``x3 (N, H*W, Ci)``, any strides, to ``y2 (N*Ho*Wo, Co)``, see the module. ``direct``:
    no expansion and x3 channels-last, contiguous: the filter reads x3's rows in place."""
    ch, co = wt.shape[1], bn_p.shape[1]
    rows = r1 - r0
    top = r0 * s - 1                           # the first input row the band reads (-1: padding)
    a, b = max(top, 0), min((r1 - 1) * s + 2, h)  # the real input rows among them
    per_e = ((rows - 1) * s + 3) * wd          # E's pixels per image, zero rows included
    lo, hi = (a - top) * wd, (b - top) * wd    # the real rows' pixels in it
    zero = eb.dtype.type(0)
    dm = db[:nb * rows * wo * ch].reshape(nb * rows * wo, ch)
    for i in range(nb):
        if direct:  # the filter's window on x itself, its padding rows masked
            xi, di = x3[b0 + i], dm[i * rows * wo:(i + 1) * rows * wo]
            step = lanes(xi)
            for c0 in range(0, ch, step):
                filter_rows_bn(xi, c0, top, h, wt, bn_d, c0, ch, di, c0, rows, wo, wd, s,
                               relu6_d, min(step, ch - c0))
            continue
        e = eb[i * per_e * ch:(i + 1) * per_e * ch].reshape(per_e, ch)
        e[:lo] = zero
        e[hi:] = zero
        xr = x3[b0 + i, a * wd:b * wd]
        if weT.shape[0] > 0:  # BN + ReLU6 in registers before the store
            packed_product(xr, weT, e[lo:hi], 0, hi - lo, 0, ch, bn_e, relu6_e)
        else:  # no expansion: the filter reads x's rows
            e[lo:hi] = xr
        depthwise_rows_bn(e, wd, s, wt, bn_d, relu6_d, dm[i * rows * wo:(i + 1) * rows * wo], rows,
                          wo)
    # the projection: one GEMM over the group's rows of y when they are whole images (one
    # run of rows), else one per image
    per_d = rows * wo
    runs, run = (1, nb * per_d) if rows == ho else (nb, per_d)
    for i in range(runs):
        first = (b0 + i) * ho * wo + r0 * wo
        packed_product(dm[i * run:(i + 1) * run], wpT, y2[first:first + run], 0, run, 0, co, bn_p,
                       relu6_p)
    if residual:
        for i in range(nb):
            xi, yi = x3[b0 + i], y2[(b0 + i) * ho * wo:(b0 + i + 1) * ho * wo]
            for q in range(r0 * wo, r1 * wo):
                yq, xq = yi[q], xi[q]
                for k in range(co):
                    yq[k] += xq[k]


@njit(parallel=True, **_JIT)
def _blocks(x3, h, wd, s, residual, weT, bn_e, relu6_e, wt, bn_d, relu6_d, wpT, bn_p, relu6_p, y2,
            ho, wo, threads, budget, min_cols, even_below, direct):
    n = x3.shape[0]
    ch = wt.shape[1]
    rows, group, bands, ntask, workers = task_plan(n, ch, wd, wo, s, ho, x3.itemsize, threads,
                                                   budget, min_cols, even_below)
    ebs = np.empty((workers, group * ((rows - 1) * s + 3) * wd * ch), x3.dtype)
    dbs = np.empty((workers, group * rows * wo * ch), x3.dtype)
    for k in prange(workers):
        for t in range(k, ntask, workers):
            g, band = t // bands, t % bands
            b0, r0 = g * group, band * rows
            _band(x3, b0, min(group, n - b0), h, wd, weT, bn_e, relu6_e, wt, bn_d, relu6_d, s, wpT,
                  bn_p, relu6_p, residual, y2, ho, wo, r0, min(ho, r0 + rows), ebs[k], dbs[k],
                  direct)
    return y2


def supported(x, stride) -> bool:
    """Does ``inverted_residual_eval`` take a block on input ``x`` at this stride?

    It does for output planes of ``FROM`` to ``UP_TO`` pixels.

    Args:
        x: The block's input (N, C, H, W).
        stride: The depthwise stride.

    Returns:
        Whether this kernel runs the block.
    """
    plane = output_plane(x, stride)
    return plane is not None and FROM <= plane[0] * plane[1] <= UP_TO


def inverted_residual_eval(x, expand, depthwise, project, stride, residual):
    """MobileNetV2's inverted residual block in eval mode, on channels-last pixels (see the module).

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The block's input (N, Ci, H, W), in either layout.
        expand: None (expansion ratio 1) or ``(w (Ch, Ci, 1, 1), bn)``.
        depthwise: ``(w (Ch, 1, 3, 3), bn)``, padding 1.
        project: ``(w (Co, Ch, 1, 1), bn)``.
        stride: 1 or 2.
        residual: Add x (stride 1, Ci = Co).

    Returns:
        (N, Co, Ho, Wo), stored channels-last.

    Raises:
        ValueError: Weights of other shapes, a stride other than 1 or 2, or an output plane
            outside ``FROM`` .. ``UP_TO`` pixels.
        TypeError: Arrays of different dtypes.
    """
    fn = "inverted_residual_eval"
    x, we, wdw, wpj, ep_e, ep_d, ep_p = block_args(fn, x, expand, depthwise, project, stride,
                                                   residual)
    ho, wo = (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1
    if not FROM <= ho * wo <= UP_TO:
        raise ValueError(f"{fn}: output planes of {ho}x{wo} are not computed by this kernel "
                         "(see supported)")
    return run(x, prepare(we, wdw, wpj, ep_e, ep_d, ep_p, x.dtype), stride, bool(residual))


def prepare(we, wdw, wpj, ep_e, ep_d, ep_p, dtype) -> tuple:
    """A block's weights as ``run`` takes them: what depends on the weights alone, made once.

    The GEMMs' right-hand operands We.T (Ci, Ch) and Wp.T (Ch, Co) packed in strips of the
    register block (``tile.pack_strips``; no expansion: an empty one), the filter's taps
    (``filter_taps``) and each BatchNorm's table of per-channel scale and shift
    (``batchnorm.epilogue_table``).

    Args:
        we: The expansion's weight (Ch, Ci, 1, 1), contiguous; (0, Ci, 1, 1) without one.
        wdw: The depthwise weight (Ch, 1, 3, 3), contiguous.
        wpj: The projection's weight (Co, Ch, 1, 1), contiguous.
        ep_e: The expansion's BatchNorm as ``batchnorm.epilogue_args`` (off without one).
        ep_d: The depthwise filter's.
        ep_p: The projection's.
        dtype: The input's dtype.

    Returns:
        ``(weT, table_e, relu6_e, taps, table_d, relu6_d, wpT, table_p, relu6_p)``.
    """
    ch, co = wdw.shape[0], wpj.shape[0]
    out = []
    for w, ep, c in ((we.reshape(we.shape[0], we.shape[1]), ep_e, ch), (wdw, ep_d, ch),
                     (wpj.reshape(co, ch), ep_p, co)):
        weights = filter_taps(w, False) if w.ndim == 4 else pack_strips(w.T)
        out += [weights, epilogue_table(ep, c, dtype), bool(ep[3][1])]
    return tuple(out)


def run(x, prepared, stride, residual):
    """The block on ``x`` with weights from ``prepare``; the caller has checked them and x.

    Args:
        x: The block's input (N, Ci, H, W), in either layout, output planes of ``FROM`` to
            ``UP_TO`` pixels.
        prepared: ``prepare``'s tuple.
        stride: 1 or 2.
        residual: Add x.

    Returns:
        (N, Co, Ho, Wo), stored channels-last.
    """
    n, ci, h, wd = x.shape
    co = prepared[7].shape[1]
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    y = empty_channels_last((n, co, ho, wo), x.dtype)
    if n:
        x3 = x.reshape(n, ci, h * wd).transpose(0, 2, 1)  # (N, H*W, Ci): a view in either layout
        y2 = y.transpose(0, 2, 3, 1).reshape(n * ho * wo, co)
        direct = DIRECT and prepared[0].shape[0] == 0 and is_channels_last(x)
        _blocks(x3, h, wd, stride, residual, *prepared, y2, ho, wo, numba.get_num_threads(),
                BAND_BYTES, MIN_COLS, EVEN_TASKS_BELOW, direct)
    return y
