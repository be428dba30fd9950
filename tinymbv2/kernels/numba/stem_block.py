"""The stem and the first inverted residual block in one pass, band by band: inference.

MobileNetV2's stem (a dense 3x3 conv, stride 2, BatchNorm, ReLU6) writes the largest map of
the network, 32 channels at 112x112 for a 224 px image (1.6 MB an image, 12.8 MB at batch
8), and the first block (no expansion: a depthwise 3x3 and a projection to 16 channels)
reads it once and is done with it. Run as two steps, that map goes out to memory and comes
back. Here each task takes a band of the block's output rows of one image and makes the
stem's rows that band reads in the band's own scratch, as ``.block_channels_last`` makes a
block's expanded rows, then filters and projects them:

    S = ReLU6(BN(conv3x3(image)))    the band's rows and a halo row on each side, from
                                     padded rows of the image (``dense.direct``)
    D = ReLU6(BN(dw3x3(S)))          (rows * Wo, 32)
    Y = BN(D @ Wp.T)                 written into y

The stem's rows are ``dense.direct``'s sums and the filter and projection
``block_channels_last``'s, so the output has the bits of the two steps one after the other
(tested): only the halo rows are computed twice. Bands are cut as ``block_channels_last``
cuts them (``block.band_rows`` within ``block_channels_last.BAND_BYTES``, evened for the
threads), one image a task: a function of the shapes alone, the same bits for any number
of threads.

``PreparedStemBlock`` takes it where both steps would run those kernels (the stem's output
plane written channels-last by ``dense.direct``, the block's plane in
``block_channels_last``'s range; a block without expansion or residual), and otherwise runs
the two steps.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import block_channels_last, dense
from .batchnorm import epilogue_args, epilogue_table
from . import pool  # noqa: F401  (the one-pool set-up)
from .block import EVEN_TASKS_BELOW, band_rows, even_tasks
from .block_prepared import PreparedBlock
from .dense import direct
from .depthwise.rows3x3_bn import depthwise_rows_bn
from .layout import channels_last_plane, empty_channels_last, rows as rows_of
from .tile import gathered_product, packed_product

_JIT = dict(cache=CACHE, fastmath=False)


@njit(**_JIT)
def _band(x, b, wt, table_s, relu6_s, kh, kw, sh, sw, ph, pw, hs, ws, s, taps, bn_d, relu6_d,
          wpT, bn_p, relu6_p, y2, ho, wo, r0, r1, img, offsets, rows_in, wp, eb, db):
    """Block output rows [r0, r1) of image b (see the module)."""
    ch, co = taps.shape[1], bn_p.shape[1]
    rows = r1 - r0
    top = r0 * s - 1                              # the first stem row the band reads
    a, z = max(top, 0), min((r1 - 1) * s + 2, hs)  # the real stem rows among them
    per_e = ((rows - 1) * s + 3) * ws
    e = eb[:per_e * ch].reshape(per_e, ch)
    zero = eb.dtype.type(0)
    e[:(a - top) * ws] = zero
    e[(z - top) * ws:] = zero
    direct.fill_band(img, x[b], a * sh - ph, rows_in, wp, pw)
    for r in range(a, z):
        at = (r - top) * ws
        gathered_product(img, (r - a) * sh * wp, sw, offsets, wt, e[at:at + ws], table_s, relu6_s)
    dm = db[:rows * wo * ch].reshape(rows * wo, ch)
    depthwise_rows_bn(e, ws, s, taps, bn_d, relu6_d, dm, rows, wo)
    first = b * ho * wo + r0 * wo
    packed_product(dm, wpT, y2[first:first + rows * wo], 0, rows * wo, 0, co, bn_p, relu6_p)


@njit(parallel=True, **_JIT)
def _stem_blocks(x, wt, table_s, relu6_s, kh, kw, sh, sw, ph, pw, hs, ws, s, taps, bn_d, relu6_d,
                 wpT, bn_p, relu6_p, y2, ho, wo, threads, budget, even_below):
    n, ci = x.shape[0], x.shape[1]
    ch = taps.shape[1]
    rows = even_tasks(ho, band_rows(ch, ws, wo, s, ho, x.itemsize, budget), n, even_below)
    bands = (ho + rows - 1) // rows
    ntask = n * bands
    workers = min(threads, ntask)
    stem_rows = (rows - 1) * s + 3                # stem rows a band reads, halo included
    rows_in, wp = (stem_rows - 1) * sh + kh, (ws - 1) * sw + kw
    offsets = direct.band_offsets(ci, kh, kw, rows_in, wp)
    imgs = np.empty((workers, ci * rows_in * wp), x.dtype)
    ebs = np.empty((workers, stem_rows * ws * ch), x.dtype)
    dbs = np.empty((workers, rows * wo * ch), x.dtype)
    for k in prange(workers):
        for t in range(k, ntask, workers):
            b, r0 = t // bands, t % bands * rows
            _band(x, b, wt, table_s, relu6_s, kh, kw, sh, sw, ph, pw, hs, ws, s, taps, bn_d,
                  relu6_d, wpT, bn_p, relu6_p, y2, ho, wo, r0, min(ho, r0 + rows), imgs[k],
                  offsets, rows_in, wp, ebs[k], dbs[k])
    return y2


class PreparedStemBlock:
    """``block(stem(x))`` for a frozen model (``tinymbv2.freeze``): the stem, a dense
    conv-BN-ReLU6, and a first block without expansion or residual, in one pass where the
    kernels allow (see the module), with the two steps' bits.

    Args:
        stem: The stem as a function of x, ``conv2d_bn_eval`` with its weights bound (run
            where the fused pass does not apply).
        w: The stem's weight (Cs, Ci, kh, kw).
        stride: The stem's (sh, sw).
        padding: The stem's (ph, pw).
        bn: The stem's BatchNorm, ``(mean, var, weight, bias, eps, relu6)``.
        block: The block, a ``PreparedBlock`` without expansion and residual, on Cs channels.
    """

    def __init__(self, stem, w, stride, padding, bn, block: PreparedBlock):
        w = np.ascontiguousarray(w)
        if block.layers[0] is not None or block.residual or block.ci != w.shape[0]:
            raise ValueError("PreparedStemBlock: expected a block without expansion or residual "
                             f"on the stem's {w.shape[0]} channels")
        self.stem, self.block = stem, block
        self.stride, self.padding = tuple(stride), tuple(padding)
        co = w.shape[0]
        ep = epilogue_args("PreparedStemBlock", bn, co, w.dtype)
        self.wt = np.ascontiguousarray(w.reshape(co, -1).T)
        self.table, self.relu6 = epilogue_table(ep, co, w.dtype), bool(ep[3][1])
        self.kernel = w.shape[2:]

    def _planes(self, x):
        """The stem's and the block's output planes, or None where the pass does not apply."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        if x.ndim != 4 or x.dtype != self.wt.dtype or x.shape[1] * kh * kw != self.wt.shape[0]:
            return None
        hs, ws = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
        if hs < 1 or ws < 1 or channels_last_plane(hs, ws) or hs * ws > dense.EVAL_PIXELS_UP_TO:
            return None  # the stem's output would not come from dense.direct
        probe = np.empty((0, self.block.ci, hs, ws), x.dtype)
        if not block_channels_last.supported(probe, self.block.stride):
            return None
        s = self.block.stride
        return hs, ws, (hs - 1) // s + 1, (ws - 1) // s + 1

    def __call__(self, x):
        """y (N, Co, Ho, Wo) = block(stem(x)), channels-last.

        Args:
            x: The images (N, Ci, H, W), an array of the weights' dtype.

        Returns:
            The block's output, as the two steps give it.
        """
        x = np.asarray(x)
        planes = self._planes(x)
        if planes is None or not x.shape[0]:
            return self.block(self.stem(x))
        hs, ws, ho, wo = planes
        x = np.ascontiguousarray(x)
        taps, bn_d, relu6_d, wpT, bn_p, relu6_p = self.block.channels_last[3:]
        n, co = x.shape[0], bn_p.shape[1]
        y = empty_channels_last((n, co, ho, wo), x.dtype)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        _stem_blocks(x, self.wt, self.table, self.relu6, kh, kw, sh, sw, ph, pw, hs, ws,
                     self.block.stride, taps, bn_d, relu6_d, wpT, bn_p, relu6_p, rows_of(y), ho,
                     wo, numba.get_num_threads(), block_channels_last.BAND_BYTES,
                     EVEN_TASKS_BELOW)
        return y
