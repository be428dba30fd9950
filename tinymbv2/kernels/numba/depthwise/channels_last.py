"""Numba depthwise convolution for small planes, on channels-last tensors.

On a plane of at most 16x16 pixels (all of MobileNetV2 at 32 px, its last stages
at 224 px) the numba set keeps activations channels-last (``..layout``):
image b is the matrix x[b] ``(H*W, C)``, one row per pixel. A plane that small is too
short to vectorise along, so these kernels run along the channels instead, a
block of up to 64 of them at a time -- contiguous and vectorised:

    forward:      y[o, :]   = sum_taps  w_t[tap, :] * x[in(o, tap), :]
    grad input:   gx[in, :] += w_t[tap, :] * gy[o, :]     for every (o, tap)
    grad weight:  gw_t[tap, :] += gy[o, :] * x[in(o, tap), :]

where ``in(o, tap)`` is the input pixel that tap (i, j) of output pixel o reads
(padding taps are skipped), listed once per call by ``tap_table``. Until the
layout existed these kernels copied each block of an NCHW image into channels-last
scratch and back; the transposes took most of their time (measured at 32 px; figures:
docs/kernels.md, "Depthwise").

The 3x3 filter at stride 1 and padding 1 (most of MobileNetV2's) has faster kernels in
``.rows3x3``, which keep the weights and a window of the input in
vector registers; these serve every other geometry, and the forward with an epilogue.

Parallel over (image, channel block) tasks; the weight gradient keeps one
partial sum per image and adds them in image order afterwards, so results are
bit-identical for any number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from ..batchnorm.channels_last import affine_rows_inplace

_JIT = dict(cache=CACHE, fastmath=False)


@njit(**_JIT)
def tap_table(h, wd, kh, kw, ho, wo, sh, sw, ph, pw):
    """For each output pixel ``o = oh*wo + ow``, its valid (tap, input pixel) pairs.

    They are rows ``start[o]:start[o+1]`` of ``pairs``, with ``tap = i*kw + j`` and
    ``input = ih*wd + iw``.

    Args:
        h: H, the input height.
        wd: W, the input width.
        kh: The filter's height.
        kw: The filter's width.
        ho: Ho, the output height.
        wo: Wo, the output width.
        sh: The stride along H.
        sw: The stride along W.
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.

    Returns:
        ``(start, pairs)``.
    """
    start = np.zeros(ho * wo + 1, np.int64)
    pairs = np.empty((ho * wo * kh * kw, 2), np.int64)
    k = 0
    for oh in range(ho):
        for ow in range(wo):
            for i in range(kh):
                ih = oh * sh - ph + i
                if ih < 0 or ih >= h:
                    continue
                for j in range(kw):
                    iw = ow * sw - pw + j
                    if 0 <= iw < wd:
                        pairs[k, 0] = i * kw + j
                        pairs[k, 1] = ih * wd + iw
                        k += 1
            start[oh * wo + ow + 1] = k
    return start, pairs


_BLOCK = 16  # channels per tile of the weight gradient's final transpose
CHANNEL_BLOCK = 256  # channels per task
_CHUNKS = 16  # task chunks, each with its own scratch allocated before the parallel loop


@njit(**_JIT)
def _to_channels_first(a, out):
    """out (C, P) = a (P, C) transposed, in tiles of 16 channels."""
    c, p = out.shape
    for c0 in range(0, c, _BLOCK):
        c1 = min(c0 + _BLOCK, c)
        for q in range(p):
            for ch in range(c0, c1):
                out[ch, q] = a[q, ch]


@njit(**_JIT)
def _weights_channels_last(w):
    """(C, 1, kh, kw) -> ``(kh*kw, C)``."""
    c, kk = w.shape[0], w.shape[2] * w.shape[3]
    out = np.empty((kk, c), w.dtype)
    w2 = w.reshape(c, kk)
    for ch in range(c):
        for t in range(kk):
            out[t, ch] = w2[ch, t]
    return out


@njit(**_JIT)
def _tasks(n, c):
    """Tasks (image, channel block) cut into at most _CHUNKS runs: -> (blocks, bounds)."""
    blocks = (c + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    total = n * blocks
    k = min(total, _CHUNKS)
    return blocks, np.array([total * i // k for i in range(k + 1)], np.int64)


@njit(**_JIT)
def _nine_taps(out, wt, xt, xo, pairs, k0, c0, cb):
    """out[:cb] = sum of the 9 taps of a 3x3 output pixel that lies wholly inside the
    image, in one loop over the channels: 18 loads, 9 multiply-adds and one store per
    channel, instead of nine read-modify-write passes over ``out``."""
    w0, w1, w2 = wt[0, c0:c0 + cb], wt[1, c0:c0 + cb], wt[2, c0:c0 + cb]
    w3, w4, w5 = wt[3, c0:c0 + cb], wt[4, c0:c0 + cb], wt[5, c0:c0 + cb]
    w6, w7, w8 = wt[6, c0:c0 + cb], wt[7, c0:c0 + cb], wt[8, c0:c0 + cb]
    e = xo + cb
    x0, x1, x2 = xt[pairs[k0, 1], xo:e], xt[pairs[k0 + 1, 1], xo:e], xt[pairs[k0 + 2, 1], xo:e]
    x3, x4, x5 = xt[pairs[k0 + 3, 1], xo:e], xt[pairs[k0 + 4, 1], xo:e], xt[pairs[k0 + 5, 1], xo:e]
    x6, x7, x8 = xt[pairs[k0 + 6, 1], xo:e], xt[pairs[k0 + 7, 1], xo:e], xt[pairs[k0 + 8, 1], xo:e]
    for ch in range(cb):
        out[ch] = ((w0[ch] * x0[ch] + w1[ch] * x1[ch] + w2[ch] * x2[ch])
                   + (w3[ch] * x3[ch] + w4[ch] * x4[ch] + w5[ch] * x5[ch])
                   + (w6[ch] * x6[ch] + w7[ch] * x7[ch] + w8[ch] * x8[ch]))


# ------------------------------------------------------------- one task's work
# Each core works on one (image, block of channels) task: ``xt`` (input pixels,
# channels) and ``yt`` (output pixels, channels) are the image itself, x (N, H*W, C)[b],
# read and written in place, with the block's channels at columns [xo, xo + cb).
@njit(**_JIT)
def _forward_task(xt, xo, yt, yo, wt, c0, cb, start, pairs):
    """``yt[o, yo:yo+cb]`` = the sum over o's taps of ``wt[tap, c0:c0+cb] * xt[in, xo:xo+cb]``."""
    for o in range(yt.shape[0]):
        out = yt[o, yo:yo + cb]
        if start[o + 1] - start[o] == 9 and wt.shape[0] == 9:
            _nine_taps(out, wt, xt, xo, pairs, start[o], c0, cb)
            continue
        out[:] = 0
        for k in range(start[o], start[o + 1]):
            wr, xr = wt[pairs[k, 0], c0:c0 + cb], xt[pairs[k, 1], xo:xo + cb]
            for ch in range(cb):
                out[ch] += wr[ch] * xr[ch]


@njit(**_JIT)
def _backward_input_task(gyt, go, gxt, xo, wt, c0, cb, start, pairs):
    """``gxt[in, xo:xo+cb]`` = the sum over the (o, tap) reading ``in`` of ``wt[tap] * gyt[o]``."""
    for q in range(gxt.shape[0]):
        gxt[q, xo:xo + cb] = 0
    for o in range(gyt.shape[0]):
        g = gyt[o, go:go + cb]
        for k in range(start[o], start[o + 1]):
            wr, out = wt[pairs[k, 0], c0:c0 + cb], gxt[pairs[k, 1], xo:xo + cb]
            for ch in range(cb):
                out[ch] += wr[ch] * g[ch]


@njit(**_JIT)
def _backward_weight_task(gyt, go, xt, xo, acc, ao, cb, start, pairs):
    """``acc (kh*kw, C)[tap, ao:ao+cb]``: the sum over o of ``gyt[o] * xt[in(o, tap)]``."""
    acc[:, ao:ao + cb] = 0
    for o in range(gyt.shape[0]):
        g = gyt[o, go:go + cb]
        for k in range(start[o], start[o + 1]):
            a, xr = acc[pairs[k, 0], ao:ao + cb], xt[pairs[k, 1], xo:xo + cb]
            for ch in range(cb):
                a[ch] += g[ch] * xr[ch]


# ----------------------------------------------------------------- entry points
@njit(parallel=True, **_JIT)
def forward_pixels(x3, h, wd, w, sh, sw, ph, pw, ho, wo, y3, ep):
    """The depthwise correlation of a channels-last batch, then the epilogue on each task's block.

    ``ep`` is ``batchnorm.epilogue``'s.

    Args:
        x3: The input, channels-last, ``(N, H*W, C)``.
        h: H, the input height.
        wd: W, the input width.
        w: The filter (C, 1, kh, kw).
        sh: The stride along H.
        sw: The stride along W.
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.
        ho: Ho, the output height.
        wo: Wo, the output width.
        y3: The output ``(N, Ho*Wo, C)``, written.
        ep: The BatchNorm-eval epilogue (``batchnorm.epilogue_args``).

    Returns:
        y3.
    """
    n, c = x3.shape[0], x3.shape[2]
    start, pairs = tap_table(h, wd, w.shape[2], w.shape[3], ho, wo, sh, sw, ph, pw)
    wt = _weights_channels_last(w)
    blocks, bounds = _tasks(n, c)
    mean, scale, bias, flags = ep
    for chunk in prange(bounds.shape[0] - 1):
        for task in range(bounds[chunk], bounds[chunk + 1]):
            b, c0 = task // blocks, (task % blocks) * CHANNEL_BLOCK
            cb = min(CHANNEL_BLOCK, c - c0)
            _forward_task(x3[b], c0, y3[b], c0, wt, c0, cb, start, pairs)
            if flags[0]:  # the BatchNorm-eval epilogue, on the block still in cache
                affine_rows_inplace(y3[b], 0, y3.shape[1], c0, c0 + cb, mean, scale, bias,
                                    flags[1])
    return y3


@njit(parallel=True, **_JIT)
def backward_input_pixels(gy3, ho, wo, w, sh, sw, ph, pw, h, wd, gx3):
    r"""The input gradient of ``forward_pixels``.

    Args:
        gy3: $\partial L / \partial y$, channels-last, ``(N, Ho*Wo, C)``.
        ho: Ho, the output height.
        wo: Wo, the output width.
        w: The filter (C, 1, kh, kw).
        sh: The stride along H.
        sw: The stride along W.
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.
        h: H, the input height.
        wd: W, the input width.
        gx3: The input gradient ``(N, H*W, C)``, written.

    Returns:
        gx3.
    """
    n, c = gy3.shape[0], gy3.shape[2]
    start, pairs = tap_table(h, wd, w.shape[2], w.shape[3], ho, wo, sh, sw, ph, pw)
    wt = _weights_channels_last(w)
    blocks, bounds = _tasks(n, c)
    for chunk in prange(bounds.shape[0] - 1):
        for task in range(bounds[chunk], bounds[chunk + 1]):
            b, c0 = task // blocks, (task % blocks) * CHANNEL_BLOCK
            cb = min(CHANNEL_BLOCK, c - c0)
            _backward_input_task(gy3[b], c0, gx3[b], c0, wt, c0, cb, start, pairs)
    return gx3


@njit(parallel=True, **_JIT)
def backward_weight_pixels(gy3, ho, wo, x3, h, wd, kh, kw, sh, sw, ph, pw):
    r"""The weight gradient of ``forward_pixels``.

    One partial sum per image, added in image order: the same bits for any thread count.

    Args:
        gy3: $\partial L / \partial y$, channels-last, ``(N, Ho*Wo, C)``.
        ho: Ho, the output height.
        wo: Wo, the output width.
        x3: The input, channels-last, ``(N, H*W, C)``.
        h: H, the input height.
        wd: W, the input width.
        kh: The filter's height.
        kw: The filter's width.
        sh: The stride along H.
        sw: The stride along W.
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.

    Returns:
        gw (C, 1, kh, kw).
    """
    n, c = x3.shape[0], x3.shape[2]
    start, pairs = tap_table(h, wd, kh, kw, ho, wo, sh, sw, ph, pw)
    blocks, bounds = _tasks(n, c)
    partial = np.empty((n, kh * kw, c), x3.dtype)  # one sum per image: no shared accumulator
    for chunk in prange(bounds.shape[0] - 1):
        for task in range(bounds[chunk], bounds[chunk + 1]):
            b, c0 = task // blocks, (task % blocks) * CHANNEL_BLOCK
            cb = min(CHANNEL_BLOCK, c - c0)
            _backward_weight_task(gy3[b], c0, x3[b], c0, partial[b], c0, cb, start, pairs)
    return _sum_images(partial, blocks, kh, kw)


@njit(parallel=True, **_JIT)
def _sum_images(partial, blocks, kh, kw):
    """gw (C, 1, kh, kw) = the sum over images of partial ``(N, kh*kw, C)``, in image order
    (the same sum for any thread count), a block of channels at a time so that every
    loop runs over contiguous channels."""
    n, kk, c = partial.shape
    total = np.empty((kk, c), partial.dtype)
    for blk in prange(blocks):
        c0, c1 = blk * CHANNEL_BLOCK, min(c, (blk + 1) * CHANNEL_BLOCK)
        for t in range(kk):
            acc = total[t, c0:c1]
            acc[:] = partial[0, t, c0:c1]
            for b in range(1, n):
                pr = partial[b, t, c0:c1]
                for ch in range(c1 - c0):
                    acc[ch] += pr[ch]
    gw = np.empty((c, 1, kh, kw), partial.dtype)
    _to_channels_first(total, gw.reshape(c, kk))
    return gw

