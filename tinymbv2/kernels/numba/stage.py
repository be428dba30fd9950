"""The middle of an inverted residual block in training, as one kernel per direction.

In a MobileNetV2 block the expanded tensor e (t times the block's input; for block 1,
which has no expansion, the stem's conv output) goes through

    a = ReLU6(BN1(e))        BatchNorm of the expansion, training mode, then ReLU6
    d = depthwise3x3(a)      stride 1 or 2, padding 1
    h = ReLU6(BN2(d))        BatchNorm of the depthwise output, then ReLU6

As three ops each one reads and writes whole tensors: BN1 reads e twice (its
statistics, then a), the depthwise conv reads a, BN2 reads d twice, and the backward
reads and writes as much again, about sixteen passes over memory for tensors of up to
40 MB. This kernel works one channel at a time instead (``prange`` over channels):
a channel's N planes are a few hundred KB, so once read they stay in the core's L2
while every step runs over them:

* **forward**, channel c: BN1's statistics over e[:, c] (the one read from memory),
  then per image a = ReLU6(BN1(e)) into a scratch plane and the depthwise conv of it
  into d (written: BN2 needs it in the backward); then BN2's statistics over d[:, c]
  (in cache) and h = ReLU6(BN2(d)) (written). ``a`` is never written to memory: the
  backward recomputes it from e, which it reads anyway.
* **backward**, channel c, from dL/dh: BN2's backward into a scratch of the channel's N
  planes (dL/dd), then per image the depthwise backward -- the weight gradient
  against the recomputed a, and dL/da written into dL/de's planes -- and BN1's backward
  in place over those planes (which are still in cache).

Memory passes: read e, write d and h forward; read dL/dh, d and e, write dL/de backward.
A thread that reads a plane from memory waits for it and computes nothing meanwhile, so
the filter routines' row loops prefetch the planes that come next from memory
(``.prefetch``): forward, e's plane of the next channel (and at stride 1 the planes of d and h
it is about to write); backward, the next planes of e and of dL/de (figures:
docs/kernels.md).

Every step is the very routine the separate ops run (``.batchnorm``,
``.depthwise.planes3x3``, ``.depthwise.planes3x3_s2``), on the same values in the
same order, so the results are bit-identical to the three ops of this kernel set (where
those work on NCHW planes), deterministic, and the same for any number of threads.

It covers what MobileNetV2's blocks need on planes larger than the channels-last ones
(``.layout``): a 3x3 depthwise filter, stride 1 or 2, padding 1, ReLU6 after
both BatchNorms. ``stage_supported`` says whether a call qualifies; for the others,
``NumbaKernels`` runs the composition it inherits from
``ReferenceKernels.depthwise_stage_forward_train`` (the three separate kernels).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cache import CACHE
from . import pool  # noqa: F401  (the one-pool set-up, see there)
from .batchnorm import (affine_channel, affine_row, channel_stats, grad_coefs, grad_row_inplace,
                        grad_sums, mask_relu6, mask_relu6_inplace)
from .chunks import chunk_bounds
from .depthwise.planes3x3 import correlate3x3_padded, padded_size, weight3x3_padded
from .depthwise.planes3x3 import weight_scratch_size as s1_weight_scratch_size
from .depthwise.planes3x3_s2 import (correlate_phases, phase_size, phase_width, scatter3x3_s2,
                                     split_phases, weight3x3_s2)
from .depthwise.planes3x3_s2 import scratch_size as s2_scratch_size
from .depthwise.planes3x3_s2 import weight_scratch_size as s2_weight_scratch_size
from .layout import as_nchw, channels_last_plane

_JIT = dict(cache=CACHE, fastmath=False)


def stage_supported(e, w_dw, stride) -> bool:
    """Does this kernel run the stage?

    It does for e a float NCHW array on planes the set keeps NCHW, a (C, 1, 3, 3) filter of
    e's dtype and C channels, and stride 1 or 2.

    Args:
        e: The stage's input.
        w_dw: The depthwise weight.
        stride: The depthwise stride.

    Returns:
        Whether it does.
    """
    return (isinstance(e, np.ndarray) and e.ndim == 4 and e.dtype in (np.float32, np.float64)
            and not channels_last_plane(e.shape[2], e.shape[3]) and e.shape[0] > 0
            and isinstance(w_dw, np.ndarray) and w_dw.dtype == e.dtype
            and w_dw.shape == (e.shape[1], 1, 3, 3) and stride in (1, 2))


@njit(parallel=True, **_JIT)
def _forward(e, w1, b1, eps1, w_dw, stride, w2, b2, eps2, d, h):
    n, c, hi, wi = e.shape
    ho, wo = d.shape[2], d.shape[3]
    e3 = e.reshape(n, c, hi * wi)
    d3 = d.reshape(n, c, ho * wo)
    h3 = h.reshape(n, c, ho * wo)
    stats = np.empty((6, c), e.dtype)  # mean, invstd, scale of BN1, then of BN2
    mean1, invstd1, scale1, mean2, invstd2, scale2 = (stats[0], stats[1], stats[2], stats[3],
                                                      stats[4], stats[5])
    bounds = chunk_bounds(c)
    tasks = bounds.shape[0] - 1
    s1 = stride == 1
    planes = np.empty((tasks, hi if s1 else 0, wi), e.dtype)  # a, at stride 1
    pads = np.empty((tasks, padded_size(hi, wi, 1, 1) if s1 else 0), e.dtype)
    outs = np.empty((tasks, ho * (wi + 2) if s1 else 0), e.dtype)
    size = phase_size(hi, wi)
    phases = np.empty((tasks, 0 if s1 else s2_scratch_size(hi, wi)), e.dtype)  # a's phases
    for task in prange(tasks):
        for ch in range(bounds[task], bounds[task + 1]):
            channel_stats(e3, ch, w1, eps1, mean1, invstd1, scale1)
            # while plane b is filtered, e's plane b of the next channel is prefetched for
            # its statistics (a thread's tasks are contiguous: ch + 1 is most likely its
            # next channel); at stride 1 also the planes of d and h about to be written, in
            # the same call, so for reading (for writing was no faster there; at stride 2,
            # planes a quarter of the size, asking for them at all was not: docs/kernels.md)
            ahead = min(ch + 1, c - 1)
            for b in range(n):  # a = ReLU6(BN1(e)), then the depthwise filter
                if s1:
                    affine_row(e3[b, ch], planes[task].reshape(hi * wi), mean1[ch], scale1[ch],
                               b1[ch], True)
                    correlate3x3_padded(d[b, ch], planes[task], w_dw[ch, 0], 1, 1, pads[task],
                                        outs[task], (e3[b, ahead], d3[b, ch], h3[b, ch]))
                else:  # a goes straight into the phases of the stride-2 routine
                    ph = phases[task, :4 * size].reshape(4, size)
                    split_phases(e[b, ch], ph, mean1[ch], scale1[ch], b1[ch], True,
                                 (e3[b, ahead],))
                    correlate_phases(d[b, ch], ph, w_dw[ch, 0], phase_width(wi),
                                     phases[task, 4 * size:])
            channel_stats(d3, ch, w2, eps2, mean2, invstd2, scale2)
            affine_channel(d3, h3, ch, mean2[ch], scale2[ch], b2[ch], True)
    return h, d, mean1.copy(), invstd1.copy(), mean2.copy(), invstd2.copy()


@njit(**_JIT)
def _bn_relu6_backward_channel(g3, x3, ch, gx3, mean, invstd, weight, bias, scale, coef,
                               gweight, gbias):
    """BatchNorm + ReLU6 backward of channel ch, as ``batchnorm._backward_train`` runs it:
    gx3[:, 0] (its own (N, 1, HW) scratch) from dL/dy g3[:, ch] and the input x3[:, ch]."""
    n = x3.shape[0]
    mu = mean[ch]
    scale[ch] = weight[ch] * invstd[ch]
    sg = 0.0
    sgx = 0.0
    for b in range(n):
        mask_relu6(g3[b, ch], x3[b, ch], mu, scale[ch], bias[ch], gx3[b, 0])
        a1, a2 = grad_sums(gx3[b, 0], x3[b, ch], np.float64(mu))
        sg += a1
        sgx += a2
    grad_coefs(sg, sgx, ch, invstd, weight, n * x3.shape[2], coef, gweight, gbias)
    for b in range(n):
        grad_row_inplace(gx3[b, 0], x3[b, ch], mu, coef[ch, 0], coef[ch, 1], coef[ch, 2])


@njit(parallel=True, **_JIT)
def _backward(gh, e, d, mean1, invstd1, w1, b1, w_dw, stride, mean2, invstd2, w2, b2, ge):
    n, c, hi, wi = e.shape
    ho, wo = d.shape[2], d.shape[3]
    e3 = e.reshape(n, c, hi * wi)
    d3 = d.reshape(n, c, ho * wo)
    gh3 = gh.reshape(n, c, ho * wo)
    ge3 = ge.reshape(n, c, hi * wi)
    grads = np.empty((4, c), e.dtype)  # dL/dgamma1, dL/dbeta1, dL/dgamma2, dL/dbeta2
    gw1, gb1, gw2, gb2 = grads[0], grads[1], grads[2], grads[3]
    scales = np.empty((2, c), e.dtype)
    coefs = np.empty((2, c, 3), e.dtype)
    gw_dw = np.zeros((c, 1, 3, 3), e.dtype)
    flipped = np.ascontiguousarray(w_dw[:, :, ::-1, ::-1])
    bounds = chunk_bounds(c)
    tasks = bounds.shape[0] - 1
    gds = np.empty((tasks, n, 1, ho * wo), e.dtype)  # dL/dd of the task's channel
    planes = np.empty((tasks, hi, wi), e.dtype)  # a, recomputed
    s1 = stride == 1
    pads = np.empty((tasks, padded_size(hi, wi, 1, 1) if s1 else 0), e.dtype)
    gpads = np.empty((tasks, padded_size(ho, wo, 1, 1) if s1 else 0), e.dtype)
    outs = np.empty((tasks, hi * (wo + 2) if s1 else 0), e.dtype)
    size = s1_weight_scratch_size(ho, wi, 1) if s1 else s2_weight_scratch_size(ho, wi)
    scratch = np.empty((tasks, size), e.dtype)
    for task in prange(tasks):
        gd3, a = gds[task], planes[task]
        a_flat = a.reshape(hi * wi)
        for ch in range(bounds[task], bounds[task + 1]):
            _bn_relu6_backward_channel(gh3, d3, ch, gd3, mean2, invstd2, w2, b2, scales[1],
                                       coefs[1], gw2, gb2)
            scales[0, ch] = w1[ch] * invstd1[ch]
            mu, sc = mean1[ch], scales[0, ch]
            sg = 0.0
            sgx = 0.0
            ahead = min(ch + 1, c - 1)
            for b in range(n):
                affine_row(e3[b, ch], a_flat, mu, sc, b1[ch], True)
                gd = gd3[b, 0].reshape(ho, wo)
                # prefetched meanwhile: the next planes of e (to read) and dL/de (to write),
                # image b + 1's or the next channel's first
                b_next, ch_next = (b + 1, ch) if b + 1 < n else (0, ahead)
                if s1:
                    weight3x3_padded(gw_dw[ch, 0], gd, a, 1, 1, pads[task], scratch[task],
                                     (e3[b_next, ch_next],))
                    correlate3x3_padded(ge[b, ch], gd, flipped[ch, 0], 1, 1, gpads[task],
                                        outs[task], (ge3[b_next, ch_next],), True)
                else:
                    weight3x3_s2(gw_dw[ch, 0], gd, a, scratch[task], (e3[b_next, ch_next],))
                    scatter3x3_s2(ge[b, ch], gd, w_dw[ch, 0], (ge3[b_next, ch_next],), True)
                g = ge3[b, ch]  # dL/da until BN1's backward turns it into dL/de below
                mask_relu6_inplace(g, e3[b, ch], mu, sc, b1[ch])
                a1, a2 = grad_sums(g, e3[b, ch], np.float64(mu))
                sg += a1
                sgx += a2
            grad_coefs(sg, sgx, ch, invstd1, w1, n * hi * wi, coefs[0], gw1, gb1)
            for b in range(n):
                grad_row_inplace(ge3[b, ch], e3[b, ch], mu, coefs[0, ch, 0], coefs[0, ch, 1],
                                 coefs[0, ch, 2])
    return ge, gw1.copy(), gb1.copy(), gw_dw, gw2.copy(), gb2.copy()


def _c(a):
    return np.ascontiguousarray(a)


def stage_forward_train(e, bn1, w_dw, stride, bn2):
    """The forward above.

    The contract is ``ReferenceKernels.depthwise_stage_forward_train``'s, without ``a`` (the
    backward recomputes it).

    Args:
        e: The input (N, C, H, W).
        bn1: ``(weight, bias, eps)`` of the first BatchNorm ((C,) arrays of e's dtype).
        w_dw: The depthwise weight (C, 1, 3, 3).
        stride: 1 or 2.
        bn2: ``(weight, bias, eps)`` of the second BatchNorm.

    Returns:
        ``(h, d, mean1, invstd1, mean2, invstd2)``: h = ReLU6(BN2(d)) and d (N, C, Ho, Wo),
        and the batch statistics of e and of d as ``batch_norm_forward_train`` returns them.
    """
    e = _c(e)
    (w1, b1, eps1), (w2, b2, eps2) = bn1, bn2
    n, c, hi, wi = e.shape
    ho, wo = (hi - 1) // stride + 1, (wi - 1) // stride + 1
    d = np.empty((n, c, ho, wo), e.dtype)  # see kernels.numba on allocation
    h = np.empty_like(d)
    return _forward(e, _c(w1), _c(b1), float(eps1), _c(w_dw), int(stride), _c(w2), _c(b2),
                    float(eps2), d, h)


def stage_backward_train(gh, e, d, bn1, w_dw, stride, bn2):
    r"""The backward above.

    Args:
        gh: $\partial L / \partial h$ (N, C, Ho, Wo), in either layout (from a channels-last
            layer after a stride-2 stage, it is copied to NCHW).
        e: The forward's input.
        d: The depthwise output the forward returned.
        bn1: ``(weight, bias, mean, invstd)`` of the first BatchNorm.
        w_dw: The depthwise weight (C, 1, 3, 3).
        stride: 1 or 2.
        bn2: ``(weight, bias, mean, invstd)`` of the second BatchNorm.

    Returns:
        ``(dL/de, dL/dgamma1, dL/dbeta1, dL/dw_dw, dL/dgamma2, dL/dbeta2)``.
    """
    (w1, b1, mean1, invstd1), (w2, b2, mean2, invstd2) = bn1, bn2
    e, d = _c(e), _c(d)
    ge = np.empty_like(e)
    return _backward(as_nchw(gh), e, d, _c(mean1), _c(invstd1), _c(w1), _c(b1), _c(w_dw),
                     int(stride), _c(mean2), _c(invstd2), _c(w2), _c(b2), ge)
