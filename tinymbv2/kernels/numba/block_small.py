"""A whole inverted residual block for inference on small channels-last planes, in one call.

Below ``block_channels_last.FROM`` output pixels (the 7x7 blocks at 224 px) a block cut into
bands of rows would expand its halo rows twice (one 7x7 image: bands of 4 and 3 rows,
11 input rows expanded for 7), and one image a task leaves a thread idle at batch 1. So
here the block's three layers stay three whole-batch passes, as layer by layer, over the
channels-last rows of the batch (``.layout``: x2 ``(N*H*W, Ci)``, one row per pixel):

    E = ReLU6(BN(x2 @ We.T))    (N*H*W, Ch)      the rows cut among the threads
    D = ReLU6(BN(dw3x3(E)))     (N*Ho*Wo, Ch)    one task per image and vector of channels
    Y = BN(D @ Wp.T) [+ x2]     (N*Ho*Wo, Co)    the rows cut among the threads

but in one parallel call, three loops in a row, with the BatchNorms (and ReLU6) applied in
the GEMMs' and the filter's registers (``tile.packed_product`` with a table,
``depthwise.rows3x3_bn``) and the GEMMs' right-hand operands We.T and Wp.T packed once in
the strips the register block reads, when the block is prepared
(``block_channels_last.prepare``): each thread reads them whole, with no copy of W.T's
strips per call as the layer's GEMM makes. Every output value is
summed by one register block, in the order the layers sum it, whatever the cut: the
layers' bits, for any number of threads.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (the one-pool set-up)
from .block import output_plane
from .block_channels_last import FROM
from .depthwise.rows3x3_bn import filter_rows_bn
from .layout import as_channels_last, empty_channels_last, rows
from .llvm import lanes
from .tile import packed_product

_JIT = dict(cache=CACHE, fastmath=False)
PARALLEL_MACS = 1 << 21
"""A GEMM of fewer multiply-adds than this runs in one task: waking the second thread
costs more than it saves (a 32 px model's 1x1 planes)."""


@njit(**_JIT)
def _cut(m, tasks, t):
    """Rows [r0, r1) of task t of ``tasks`` over m rows."""
    return t * m // tasks, (t + 1) * m // tasks


@njit(parallel=True, **_JIT)
def _block(x2, n, h, wd, s, residual, weT, bn_e, relu6_e, taps, bn_d, relu6_d, wpT, bn_p,
           relu6_p, y2, ho, wo, threads):
    m, ci = x2.shape
    ch, co = taps.shape[1], bn_p.shape[1]
    mo = y2.shape[0]
    if weT.shape[0] > 0:
        e2 = np.empty((m, ch), x2.dtype)
        tasks = threads if m * ci * ch >= PARALLEL_MACS else 1
        for t in prange(tasks):
            r0, r1 = _cut(m, tasks, t)
            packed_product(x2, weT, e2, r0, r1, 0, ch, bn_e, relu6_e)
    else:  # no expansion: the filter reads x
        e2 = x2
    d2 = np.empty((mo, ch), x2.dtype)
    step = lanes(x2)
    vectors = (ch + step - 1) // step
    for task in prange(n * vectors):
        b, c0 = task // vectors, task % vectors * step
        filter_rows_bn(e2[b * h * wd:(b + 1) * h * wd], c0, -1, h, taps, bn_d, c0, ch,
                       d2[b * ho * wo:(b + 1) * ho * wo], c0, ho, wo, wd, s, relu6_d,
                       min(step, ch - c0))
    tasks = threads if mo * ch * co >= PARALLEL_MACS else 1
    for t in prange(tasks):
        r0, r1 = _cut(mo, tasks, t)
        packed_product(d2, wpT, y2, r0, r1, 0, co, bn_p, relu6_p)
        if residual:
            for q in range(r0, r1):
                yq, xq = y2[q], x2[q]
                for k in range(co):
                    yq[k] += xq[k]
    return y2


def supported(x, stride) -> bool:
    """Does ``run`` take a block on input ``x`` at this stride?

    It does for output planes of fewer than ``block_channels_last.FROM`` pixels.

    Args:
        x: The block's input (N, C, H, W).
        stride: The depthwise stride.

    Returns:
        Whether this kernel runs the block.
    """
    plane = output_plane(x, stride)
    return plane is not None and plane[0] * plane[1] < FROM


def run(x, prepared, stride, residual):
    """The block on ``x`` with weights from ``block_channels_last.prepare``; the caller has
    checked them and x.

    Args:
        x: The block's input (N, Ci, H, W), in either layout (an NCHW one is copied
            channels-last first), output planes ``supported`` takes.
        prepared: ``block_channels_last.prepare``'s tuple.
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
        _block(rows(as_channels_last(x)), n, h, wd, stride, residual, *prepared, rows(y), ho, wo,
               numba.get_num_threads())
    return y
