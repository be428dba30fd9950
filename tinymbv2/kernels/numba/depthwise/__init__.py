"""Numba kernels for depthwise convolution (CPU, parallel, deterministic).

Same names, signatures and results as ``tinymbv2.kernels.reference``;
``NumbaKernels`` takes them as its kernels. Which routines run:

* Input planes of at most 16x16 pixels, any kernel, kept channels-last
  (``..layout``): ``.channels_last``, vectorised over blocks of 256 channels
  (the 3x3 filter at stride 1 and padding 1 in vector registers: ``.rows3x3``).
  Larger planes, NCHW, one plane at a time:
* 3x3 kernels, MobileNetV2's only kind: ``.planes3x3`` (at stride 1
  a zero-padded flat plane, one vectorised loop per plane) and, at stride 2 with
  padding 1, ``.planes3x3_s2`` (every other column, read in place); other
  strides are computed at stride 1 and subsampled, with column phases for the gradients.
* Any other kernel size: the general per-tap routines here (``_correlate_plane``,
  ``_scatter_plane``, ``_weight_taps_plane``). The padding is never
  materialised: for each kernel row i / column j the range of outputs whose
  input lies inside the image is computed once (``..padding``), so the
  innermost loop runs over a run of output columns with no bounds test.

``prange`` only splits work whose outputs are disjoint: (image, channel) planes
for forward and backward-input, channels for backward-weight (each channel sums
over the batch in order in one thread). Results are therefore bit-identical from
run to run, and whatever the number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..cache import CACHE
from ...checks import conv_geometry, grad_out_shape, same_float_dtype
from .. import pool  # noqa: F401  (the one-pool set-up, see there)
from ..batchnorm import affine_inplace, epilogue_args
from ..chunks import chunk_bounds
from ..layout import as_channels_last, channels_last_plane, empty_channels_last, pixels
from ..padding import valid_range
from . import rows3x3, rows3x3_bn
from .channels_last import backward_input_pixels, backward_weight_pixels, forward_pixels
from .planes3x3 import (correlate3x3_padded, correlate3x3_strided, padded_size,
                        scatter3x3_strided_plane, weight3x3_padded, weight3x3_strided)
from .planes3x3 import weight_scratch_size as s1_weight_scratch_size
from .planes3x3_s2 import correlate3x3_s2, scatter3x3_s2, weight3x3_s2
from .planes3x3_s2 import weight_scratch_size as s2_weight_scratch_size

_JIT = dict(cache=CACHE, fastmath=False)


# ---------------------------------------------------------------- plane helpers
# The inner loops below index row *views* from 0 (``ys[k]``, not ``y[oh, ow]``):
# Numba then knows the index is non-negative, drops its negative-index
# wraparound test, and LLVM vectorises the loop (several times faster). Stride 1
# and stride > 1 get separate loops so the stride-1 views stay contiguous.


@njit(**_JIT)
def _correlate_plane(y, x, w, sh, sw, ph, pw, rlo, rhi, clo, chi):
    """y (Ho, Wo) += cross-correlation of plane x (H, W) with w (kh, kw)."""
    kh, kw = w.shape
    for i in range(kh):
        for oh in range(rlo[i], rhi[i]):
            yrow, xrow = y[oh], x[oh * sh - ph + i]
            for j in range(kw):
                lo, hi, off = clo[j], chi[j], j - pw
                if hi <= lo:
                    continue
                wv = w[i, j]
                ys = yrow[lo:hi]
                if sw == 1:
                    xs = xrow[lo + off : hi + off]
                    for k in range(hi - lo):
                        ys[k] += wv * xs[k]
                else:
                    xs = xrow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for k in range(hi - lo):
                        ys[k] += wv * xs[k]


@njit(**_JIT)
def _scatter_plane(gx, gy, w, sh, sw, ph, pw, rlo, rhi, clo, chi):
    """gx (H, W) += the transpose of ``_correlate_plane`` applied to gy (Ho, Wo)."""
    kh, kw = w.shape
    for i in range(kh):
        for oh in range(rlo[i], rhi[i]):
            gyrow, gxrow = gy[oh], gx[oh * sh - ph + i]
            for j in range(kw):
                lo, hi, off = clo[j], chi[j], j - pw
                if hi <= lo:
                    continue
                wv = w[i, j]
                gys = gyrow[lo:hi]
                if sw == 1:
                    gxs = gxrow[lo + off : hi + off]
                    for k in range(hi - lo):
                        gxs[k] += wv * gys[k]
                else:
                    gxs = gxrow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for k in range(hi - lo):
                        gxs[k] += wv * gys[k]


@njit(**_JIT)
def _weight_taps_plane(acc, gy, x, sh, sw, ph, pw, rlo, rhi, clo, chi):
    """``acc (kh, kw, Wo) += gy[oh, ow] * x[input of tap (i, j) at (oh, ow)]``, summed over oh.

    Keeping one running sum per output column (summed up only at the end)
    lets the inner loop vectorise without reordering a floating-point
    reduction, which ``fastmath=False`` forbids."""
    kh, kw = acc.shape[0], acc.shape[1]
    for i in range(kh):
        for oh in range(rlo[i], rhi[i]):
            gyrow, xrow = gy[oh], x[oh * sh - ph + i]
            for j in range(kw):
                lo, hi, off = clo[j], chi[j], j - pw
                if hi <= lo:
                    continue
                a = acc[i, j, lo:hi]
                gys = gyrow[lo:hi]
                if sw == 1:
                    xs = xrow[lo + off : hi + off]
                    for k in range(hi - lo):
                        a[k] += gys[k] * xs[k]
                else:
                    xs = xrow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for k in range(hi - lo):
                        a[k] += gys[k] * xs[k]


@njit(**_JIT)
def _finish_taps(acc, out):
    """out (kh, kw) = acc (kh, kw, Wo) summed over its last axis, left to right."""
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            s = acc.dtype.type(0)
            for ow in range(acc.shape[2]):
                s += acc[i, j, ow]
            out[i, j] = s


# ------------------------------------------------------------------ jitted cores
@njit(**_JIT)
def _is_3x3(kh, kw, sh, sw, ph, pw):
    """The fast 3x3 planes apply: square stride, padding up to 2 (so the flipped
    kernel's padding 2 - p is not negative)."""
    return kh == 3 and kw == 3 and sh == sw and ph <= 2 and pw <= 2


@njit(parallel=True, **_JIT)
def _depthwise_forward(x, w, sh, sw, ph, pw, y, ep):
    n, c, h, wd = x.shape
    ho, wo = y.shape[2], y.shape[3]
    mean, scale, bias, flags = ep
    y3 = y.reshape(n, c, ho * wo)
    if _is_3x3(w.shape[2], w.shape[3], sh, sw, ph, pw):
        zero_row = np.zeros(wd, x.dtype)
        bounds = chunk_bounds(n * c)
        row_bufs = np.empty((bounds.shape[0] - 1, (wo - 1) * sw + 1), x.dtype)
        pads = np.empty((bounds.shape[0] - 1, padded_size(h, wd, ph, pw) if sw == 1 else 0), x.dtype)
        outs = np.empty((bounds.shape[0] - 1, ho * (wd + 2 * pw) if sw == 1 else 0), x.dtype)
        for chunk in prange(bounds.shape[0] - 1):
            row_buf = row_bufs[chunk]
            for t in range(bounds[chunk], bounds[chunk + 1]):
                bt, ch = t // c, t % c
                if sw == 1:
                    correlate3x3_padded(y[bt, ch], x[bt, ch], w[ch, 0], ph, pw, pads[chunk],
                                        outs[chunk])
                elif sw == 2 and ph == 1 and pw == 1:
                    correlate3x3_s2(y[bt, ch], x[bt, ch], w[ch, 0], zero_row)
                else:
                    correlate3x3_strided(y[bt, ch], x[bt, ch], w[ch, 0], sw, ph, pw, zero_row,
                                         row_buf)
                if flags[0]:  # the BatchNorm-eval epilogue, on the plane still in cache
                    affine_inplace(y3[bt, ch], mean[ch], scale[ch], bias[ch], flags[1])
        return y
    rlo, rhi = valid_range(w.shape[2], ph, sh, h, ho)
    clo, chi = valid_range(w.shape[3], pw, sw, wd, wo)
    for t in prange(n * c):
        b, ch = t // c, t % c
        y[b, ch] = 0
        _correlate_plane(y[b, ch], x[b, ch], w[ch, 0], sh, sw, ph, pw, rlo, rhi, clo, chi)
        if flags[0]:
            affine_inplace(y3[b, ch], mean[ch], scale[ch], bias[ch], flags[1])
    return y


@njit(parallel=True, **_JIT)
def _depthwise_backward_input(gy, w, sh, sw, ph, pw, gx):
    n, c, ho, wo = gy.shape
    h, wd = gx.shape[2], gx.shape[3]
    if _is_3x3(w.shape[2], w.shape[3], sh, sw, ph, pw):
        bounds = chunk_bounds(n * c)
        if sh == 1:
            # dL/dx: the correlation of dL/dy with the flipped kernel, padding 2 - p
            flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])
            pads = np.empty((bounds.shape[0] - 1, padded_size(ho, wo, 2 - ph, 2 - pw)), gy.dtype)
            outs = np.empty((bounds.shape[0] - 1, h * (wo + 4 - 2 * pw)), gy.dtype)
            for chunk in prange(bounds.shape[0] - 1):
                for t in range(bounds[chunk], bounds[chunk + 1]):
                    bt, ch = t // c, t % c
                    correlate3x3_padded(gx[bt, ch], gy[bt, ch], flipped[ch, 0], 2 - ph, 2 - pw,
                                        pads[chunk], outs[chunk])
            return gx
        if sh == 2 and ph == 1 and pw == 1:
            for t in prange(n * c):
                scatter3x3_s2(gx[t // c, t % c], gy[t // c, t % c], w[t % c, 0])
            return gx
        phases = np.empty((bounds.shape[0] - 1, sw, (wd + sw - 1) // sw), gy.dtype)
        for chunk in prange(bounds.shape[0] - 1):
            for t in range(bounds[chunk], bounds[chunk + 1]):
                bt, ch = t // c, t % c
                scatter3x3_strided_plane(gx[bt, ch], gy[bt, ch], w[ch, 0], sw, ph, pw, phases[chunk])
        return gx
    rlo, rhi = valid_range(w.shape[2], ph, sh, h, ho)
    clo, chi = valid_range(w.shape[3], pw, sw, wd, wo)
    for t in prange(n * c):
        b, ch = t // c, t % c
        gx[b, ch] = 0
        _scatter_plane(gx[b, ch], gy[b, ch], w[ch, 0], sh, sw, ph, pw, rlo, rhi, clo, chi)
    return gx


@njit(parallel=True, **_JIT)
def _depthwise_backward_weight(gy, x, kh, kw, sh, sw, ph, pw):
    n, c, ho, wo = gy.shape
    h, wd = x.shape[2], x.shape[3]
    gw = np.empty((c, 1, kh, kw), x.dtype)
    if _is_3x3(kh, kw, sh, sw, ph, pw):
        zero_row = np.zeros(wd, x.dtype)
        gw[:] = 0
        bounds = chunk_bounds(c)
        phases = np.empty((bounds.shape[0] - 1, 3, sw, (wd + sw - 1) // sw), x.dtype)
        pads = np.empty((bounds.shape[0] - 1, padded_size(h, wd, ph, pw) if sh == 1 else 0), x.dtype)
        s2 = sh == 2 and ph == 1 and pw == 1
        size = (s1_weight_scratch_size(ho, wd, pw) if sh == 1 else
                s2_weight_scratch_size(ho, wd) if s2 else 0)
        scratch = np.empty((bounds.shape[0] - 1, size), x.dtype)
        for chunk in prange(bounds.shape[0] - 1):
            for ch in range(bounds[chunk], bounds[chunk + 1]):
                for bt in range(n):  # each channel sums over n in one thread, in order
                    if sh == 1:
                        weight3x3_padded(gw[ch, 0], gy[bt, ch], x[bt, ch], ph, pw, pads[chunk],
                                         scratch[chunk])
                    elif s2:
                        weight3x3_s2(gw[ch, 0], gy[bt, ch], x[bt, ch], scratch[chunk])
                    else:
                        weight3x3_strided(gw[ch, 0], gy[bt, ch], x[bt, ch], sw, ph, pw,
                                          zero_row, phases[chunk])
        return gw
    rlo, rhi = valid_range(kh, ph, sh, h, ho)
    clo, chi = valid_range(kw, pw, sw, wd, wo)
    for ch in prange(c):  # one channel per iteration: its sum over n stays in one thread, in order
        acc = np.zeros((kh, kw, wo), x.dtype)
        for b in range(n):
            _weight_taps_plane(acc, gy[b, ch], x[b, ch], sh, sw, ph, pw, rlo, rhi, clo, chi)
        _finish_taps(acc, gw[ch, 0])
    return gw


# ------------------------------------------------------------- public wrappers
def _c(a):
    return np.ascontiguousarray(a)


def depthwise_conv2d_forward(x, w, stride, padding):
    """Depthwise convolution.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, C, H, W).
        w: The weight (C, 1, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.

    Returns:
        y (N, C, Ho, Wo).
    """
    return _forward(x, w, stride, padding, None, "depthwise_conv2d_forward")


def depthwise_conv2d_bn_eval(x, w, stride, padding, bn):
    """``depthwise_conv2d_forward``, then each plane through BatchNorm-eval (and ReLU6).

    The BatchNorm runs while the plane is in cache. The contract is ``ReferenceKernels``'
    kernel of the same name.

    Args:
        x: The input (N, C, H, W).
        w: The weight (C, 1, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        bn: ``(mean, var, weight, bias, eps, relu6)``, the BatchNorm in eval mode, as
            ``ReferenceKernels`` takes it.

    Returns:
        y (N, C, Ho, Wo).
    """
    return _forward(x, w, stride, padding, bn, "depthwise_conv2d_bn_eval")


def _forward(x, w, stride, padding, bn_eval, fn):
    x, w = np.asarray(x), _c(w)
    same_float_dtype(fn, x=x, w=w)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding, depthwise=True)
    ep = epilogue_args(fn, bn_eval, x.shape[1], x.dtype)
    if channels_last_plane(x.shape[2], x.shape[3]):  # see ..layout
        x = as_channels_last(x)
        y = empty_channels_last((x.shape[0], x.shape[1], ho, wo), x.dtype)
        if y.size and bn_eval is None and rows3x3.supported(*w.shape[2:], sh, sw, ph, pw):
            rows3x3.forward(pixels(x), x.shape[2], x.shape[3], w, pixels(y))
        elif y.size and bn_eval is not None and rows3x3_bn.takes(w.shape, (sh, sw), (ph, pw)):
            rows3x3_bn.forward_bn(pixels(x), x.shape[2], x.shape[3], w, sh, ep, pixels(y))
        elif y.size:
            forward_pixels(pixels(x), x.shape[2], x.shape[3], w, sh, sw, ph, pw, ho, wo, pixels(y), ep)
        return y
    x = _c(x)
    y = np.empty((x.shape[0], x.shape[1], ho, wo), x.dtype)  # see kernels.numba on allocation
    if y.size == 0:  # an empty batch (the parallel loops below divide work by N*C)
        return y
    return _depthwise_forward(x, w, sh, sw, ph, pw, y, ep)


def depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding):
    r"""Gradient of ``depthwise_conv2d_forward`` with respect to x.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, C, Ho, Wo).
        w: The weight (C, 1, kh, kw).
        x_shape: The input's shape (N, C, H, W).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.

    Returns:
        gx, of ``x_shape``.
    """
    fn = "depthwise_conv2d_backward_input"
    gy, w = np.asarray(gy), _c(w)
    same_float_dtype(fn, gy=gy, w=w)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding, depthwise=True)
    grad_out_shape(fn, gy.shape, (x_shape[0], x_shape[1], ho, wo))
    h, wd = int(x_shape[2]), int(x_shape[3])
    if channels_last_plane(h, wd):  # see ..layout
        gy, gx = as_channels_last(gy), empty_channels_last(x_shape, gy.dtype)
        if gy.size == 0:
            gx[...] = 0
        elif rows3x3.supported(*w.shape[2:], sh, sw, ph, pw):
            rows3x3.backward_input(pixels(gy), h, wd, w, pixels(gx))
        elif gx.size:
            backward_input_pixels(pixels(gy), ho, wo, w, sh, sw, ph, pw, h, wd, pixels(gx))
        return gx
    gy = _c(gy)
    gx = np.empty(tuple(int(d) for d in x_shape), gy.dtype)  # see kernels.numba on allocation
    if gy.size == 0:  # an empty batch, or an empty output plane: no gradient reaches x
        gx[...] = 0
        return gx
    return _depthwise_backward_input(gy, w, sh, sw, ph, pw, gx)


def depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding):
    r"""Gradient of ``depthwise_conv2d_forward`` with respect to w.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, C, Ho, Wo).
        x: The input (N, C, H, W).
        w_shape: (C, 1, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.

    Returns:
        gw, of ``w_shape``.
    """
    fn = "depthwise_conv2d_backward_weight"
    gy, x = np.asarray(gy), np.asarray(x)
    same_float_dtype(fn, gy=gy, x=x)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding, depthwise=True)
    grad_out_shape(fn, gy.shape, (x.shape[0], x.shape[1], ho, wo))
    kh, kw = int(w_shape[2]), int(w_shape[3])
    if gy.size == 0:  # an empty batch: the sums over images are empty
        return np.zeros((x.shape[1], 1, kh, kw), gy.dtype)
    if channels_last_plane(x.shape[2], x.shape[3]):  # see ..layout
        gy, x = as_channels_last(gy), as_channels_last(x)
        if rows3x3.supported(kh, kw, sh, sw, ph, pw):
            return rows3x3.backward_weight(pixels(gy), pixels(x), x.shape[2], x.shape[3])
        return backward_weight_pixels(pixels(gy), ho, wo, pixels(x), x.shape[2], x.shape[3],
                                      kh, kw, sh, sw, ph, pw)
    gy, x = _c(gy), _c(x)
    return _depthwise_backward_weight(gy, x, kh, kw, sh, sw, ph, pw)
