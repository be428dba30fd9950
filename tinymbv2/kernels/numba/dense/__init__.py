"""Numba kernels for dense (groups = 1) convolution: im2col + a matrix product, image by image.

At stride 1 with many channels on a channels-last plane the weight gradient is one
product over the whole batch instead: ``.channels_last``. DeepLabHead's 3x3 (3x3, stride
1, padding 1, many channels) never comes here: ``NumbaKernels`` sends all three of its
passes to Winograd's algorithm, ``.winograd``.

Same names, signatures and results as ``tinymbv2.kernels.reference``;
``NumbaKernels`` takes them as its kernels. With
``K = Ci*kh*kw`` and ``P = Ho*Wo``, image n's column matrix ``cols[n]`` (K, P) holds in column p
the K input values that output pixel p reads, so

    forward          y[n]  = W (Co, K) @ cols[n]
    backward-input   dcols = W.T @ gy[n], then ``col2im`` adds each column
                     back onto the input pixels it was copied from
    backward-weight  gw    = sum_n gy[n] @ cols[n].T

Each image is one task of an ``@njit(parallel=True)`` loop that builds its
column matrix in a buffer of its own and multiplies it there, so the products
run in Numba's thread pool (BLAS's single-threaded) -- the one-pool design of
``..pool``. An odd batch on NCHW planes of at least ``PART_PIXELS`` pixels (the stem at
batch 1) cuts each image in two instead, so that no thread waits: the rows of its column
matrix, then the columns of its product, are two tasks each.

On an NCHW output plane the products are ``..gemm``'s loops, which beat a
Haswell-kernel BLAS there on AVX-512 CPUs: the forward its broadcast form (a large
output with no epilogue streamed to memory, as in ``..pointwise``), backward-weight its
dot-product form, which runs along the pixels of both gy[n] and cols[n] -- except for a
3x3 filter at stride 2 and padding 1 (the stem), whose weight gradient needs no column
matrix at all and is faster still (``.weight3x3_s2``). Figures for the stem:
docs/kernels.md, "The dense convolution (the stem)". For inference (``conv2d_bn_eval``)
output planes up to ``EVAL_PIXELS_UP_TO`` pixels (the stem at 224 px) are written
channels-last, as the inference blocks after it read them, by ``.direct``: each pixel's
outputs one row of ``cols.T @ W.T`` in ``..tile``'s register blocks, the BatchNorm applied
in the registers, the terms read from padded bands of input rows (no column matrix). On other channels-last output planes (16x16 and smaller)
the products are BLAS's, and backward-weight sums its images in ``_GROUPS``
runs of consecutive images, each in order in one thread, and adds the run totals
in order. Either way the split is fixed by the shapes, not by the thread count, so
results are bit-identical across runs and thread counts.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ..cache import CACHE
from ...checks import conv_geometry, grad_out_shape, same_float_dtype
from .. import pool  # noqa: F401  (pins Numba's BLAS to one thread, starts the pool passive)
from ..batchnorm import affine_inplace, epilogue, epilogue_args, epilogue_table
from ..batchnorm.channels_last import affine_rows_inplace
from ..gemm import columns_nn, sum_of_products
from ..layout import (aligned_empty, as_channels_last, channels_last_plane, empty_channels_last,
                      pixels)
from ..padding import valid_range
from ..tile import STREAM_BYTES
from . import channels_last, direct, weight3x3_s2 as stem

_JIT = dict(cache=CACHE, fastmath=False)
PART_PIXELS = 1024
"""Output planes from this many pixels are cut in two for an odd batch (``image_parts``):
below it, waking the second thread costs more than half the product (a 32x32 plane of the
stem's 27 x 32 product is about 0.9 M multiply-adds)."""
EVAL_PIXELS_UP_TO = 12544
"""With a BatchNorm epilogue (inference), output planes of up to this many pixels (112x112:
MobileNetV2's stem at 224 px) are written channels-last, as the inference block that
reads them works (``..block_channels_last``): ``.direct``, each pixel's Co outputs one row
of a product ``cols.T @ W.T`` with the BatchNorm in its register blocks. Read at each call."""
_GROUPS = 8  # partial sums of backward-weight: fixed, so the result ignores the thread count


@njit(**_JIT)
def add_into(acc, tmp):
    """``acc (M, K) += tmp (M, K)``, element by element.

    Args:
        acc: The sums (M, K), added to in place.
        tmp: The values added (M, K).
    """
    for i in range(acc.shape[0]):
        ai, ti = acc[i], tmp[i]
        for j in range(acc.shape[1]):
            ai[j] += ti[j]


@njit(**_JIT)
def sum_in_order(part):
    """``part[0] + part[1] + ...`` over the first axis, added in index order (deterministic).

    Summed as flat rows: loops over the arrays' own small trailing axes, element by
    element, were measurably slower on the stem's 88 (32, 3, 3, 3) parts (figures:
    docs/kernels.md, "The dense convolution (the stem)").

    Args:
        part: The parts (G, ...), C-contiguous.

    Returns:
        The sum (...).
    """
    flat = part.reshape(part.shape[0], 1, -1)
    total = flat[0].copy()
    for g in range(1, flat.shape[0]):
        add_into(total, flat[g])
    return total.reshape(part.shape[1:])


# -------------------------------------------------------------- one image each
@njit(**_JIT)
def _im2col_row(dst, x, i, j, sh, sw, ph, pw, rlo, rhi, clo, chi):
    """dst (Ho, Wo) = what tap (i, j) reads of plane x (H, W); 0 on the padding."""
    dst[:] = 0
    lo, hi, off = clo[j], chi[j], j - pw
    if hi <= lo:
        return
    for oh in range(rlo[i], rhi[i]):
        xrow, drow = x[oh * sh - ph + i], dst[oh, lo:hi]
        if sw == 1:
            xs = xrow[lo + off : hi + off]
        else:
            xs = xrow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
        for k in range(hi - lo):
            drow[k] = xs[k]


@njit(**_JIT)
def _im2col(cols, x, kh, kw, sh, sw, ph, pw, ho, wo, rlo, rhi, clo, chi):
    """cols ``(Ci*kh*kw, Ho*Wo)`` of one image x (Ci, H, W):
    ``cols[(c, i, j), (oh, ow)] = xpad[c, oh*sh + i, ow*sw + j]``."""
    for r in range(cols.shape[0]):
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        _im2col_row(cols[r].reshape(ho, wo), x[c], i, j, sh, sw, ph, pw, rlo, rhi, clo, chi)


@njit(**_JIT)
def _im2col_part(cols, x, kh, kw, sh, sw, ph, pw, ho, wo, rlo, rhi, clo, chi, r0, r1):
    """Rows [r0, r1) of ``_im2col``'s column matrix."""
    for r in range(r0, r1):
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        _im2col_row(cols[r].reshape(ho, wo), x[c], i, j, sh, sw, ph, pw, rlo, rhi, clo, chi)


@njit(**_JIT)
def image_parts(n, pixels):
    """Parts each image's output is cut into for the forward's threads: two for an odd
    batch of planes of at least ``PART_PIXELS`` pixels (the stem at batch 1, where one image
    would be one task for one thread), else one. A function of the shapes only; each
    output is the same sum wherever the parts fall (``.tile``).

    Args:
        n: N, the images.
        pixels: ``Ho * Wo``.

    Returns:
        1 or 2.
    """
    return 2 if n % 2 == 1 and pixels >= PART_PIXELS else 1


@njit(**_JIT)
def _col2im(gx, dcols, kh, kw, sh, sw, ph, pw, ho, wo, rlo, rhi, clo, chi):
    """The transpose of ``_im2col``: gx (Ci, H, W) = the columns added back onto their pixels."""
    gx[:] = 0
    for c in range(gx.shape[0]):
        for i in range(kh):
            for j in range(kw):
                src = dcols[(c * kh + i) * kw + j].reshape(ho, wo)
                lo, hi, off = clo[j], chi[j], j - pw
                if hi <= lo:
                    continue
                for oh in range(rlo[i], rhi[i]):
                    grow, srow = gx[c, oh * sh - ph + i], src[oh, lo:hi]
                    if sw == 1:
                        gs = grow[lo + off : hi + off]
                    else:
                        gs = grow[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for k in range(hi - lo):
                        gs[k] += srow[k]


# ------------------------------------------------------------------ jitted cores
# ``cl``: y / gy is channels-last, given as (N, Ho*Wo, Co) instead of (N, Co, Ho*Wo); the
# GEMMs then take its transpose (a BLAS flag): y[n] (P, Co) = cols.T @ W.T, and so on.
@njit(parallel=True, **_JIT)
def _conv_forward(x, wm, kh, kw, sh, sw, ph, pw, ho, wo, y, ep, cl):
    n, ci, h, wd = x.shape
    rlo, rhi = valid_range(kh, ph, sh, h, ho)
    clo, chi = valid_range(kw, pw, sw, wd, wo)
    cols_all = np.empty((n, wm.shape[1], ho * wo), x.dtype)  # scratch before the loop: see kernels.numba
    mean, scale, bias, flags = ep
    stream = not flags[0] and y.size * y.itemsize >= STREAM_BYTES
    parts = 1 if cl else image_parts(n, ho * wo)
    if parts > 1:  # an odd batch: each image's column matrix, then its product, in parts
        k = wm.shape[1]
        for t in prange(n * parts):
            b, p = t // parts, t % parts
            _im2col_part(cols_all[b], x[b], kh, kw, sh, sw, ph, pw, ho, wo, rlo, rhi, clo,
                         chi, k * p // parts, k * (p + 1) // parts)
        for t in prange(n * parts):
            b, p = t // parts, t % parts
            c0, c1 = ho * wo * p // parts, ho * wo * (p + 1) // parts
            columns_nn(wm, cols_all[b], y[b], c0, c1, stream)
            if flags[0]:
                for ch in range(y.shape[1]):
                    affine_inplace(y[b, ch, c0:c1], mean[ch], scale[ch], bias[ch], flags[1])
        return y
    for b in prange(n):
        cols = cols_all[b]
        _im2col(cols, x[b], kh, kw, sh, sw, ph, pw, ho, wo, rlo, rhi, clo, chi)
        if cl:
            np.dot(cols.T, wm.T, y[b])
            if flags[0]:
                affine_rows_inplace(y[b], 0, ho * wo, 0, y.shape[2], mean, scale, bias, flags[1])
        else:
            columns_nn(wm, cols, y[b], 0, ho * wo, stream)
            epilogue(y[b], ep)
    return y


@njit(parallel=True, **_JIT)
def _conv_backward_input(gy3, wt, kh, kw, sh, sw, ph, pw, ho, wo, gx, cl):
    n, ci, h, wd = gx.shape
    rlo, rhi = valid_range(kh, ph, sh, h, ho)
    clo, chi = valid_range(kw, pw, sw, wd, wo)
    dcols_all = np.empty((n, wt.shape[0], ho * wo), gy3.dtype)
    for b in prange(n):
        dcols = dcols_all[b]
        if cl:
            np.dot(wt, gy3[b].T, dcols)
        else:
            np.dot(wt, gy3[b], dcols)
        _col2im(gx[b], dcols, kh, kw, sh, sw, ph, pw, ho, wo, rlo, rhi, clo, chi)
    return gx


@njit(parallel=True, **_JIT)
def _im2col_images(x, kh, kw, sh, sw, ph, pw, ho, wo, cols_all):
    """cols_all[b] = the column matrix ``(K, Ho*Wo)`` of image b, one image per task."""
    n, ci, h, wd = x.shape
    rlo, rhi = valid_range(kh, ph, sh, h, ho)
    clo, chi = valid_range(kw, pw, sw, wd, wo)
    for b in prange(n):
        _im2col(cols_all[b], x[b], kh, kw, sh, sw, ph, pw, ho, wo, rlo, rhi, clo, chi)
    return cols_all


@njit(parallel=True, **_JIT)
def _conv_backward_weight_channels_last(gy3, x, kh, kw, sh, sw, ph, pw, ho, wo, groups):
    """``gw (Co, K) = sum_n gy3[n].T @ cols[n].T`` for channels-last gy3 ``(N, Ho*Wo, Co)``."""
    n, ci, h, wd = x.shape
    co, k = gy3.shape[2], ci * kh * kw
    rlo, rhi = valid_range(kh, ph, sh, h, ho)
    clo, chi = valid_range(kw, pw, sw, wd, wo)
    part = np.empty((groups, co, k), x.dtype)
    tmps = np.empty((groups, co, k), x.dtype)
    cols_all = np.empty((groups, k, ho * wo), x.dtype)
    for g in prange(groups):  # a run of consecutive images, summed in order in one thread
        b0, b1 = g * n // groups, (g + 1) * n // groups
        acc, tmp, cols = part[g], tmps[g], cols_all[g]
        for b in range(b0, b1):
            _im2col(cols, x[b], kh, kw, sh, sw, ph, pw, ho, wo, rlo, rhi, clo, chi)
            np.dot(gy3[b].T, cols.T, acc if b == b0 else tmp)
            if b > b0:
                add_into(acc, tmp)
    return sum_in_order(part)


# ------------------------------------------------------------- public wrappers
def _c(a):
    return np.ascontiguousarray(a)


def _output_rows(a):
    """(a as (N, P, C) channels-last, True) when the output plane is kept channels-last
    (``..layout``: decided by the output plane here, as x is the image), else
    (a as (N, C, P) C-contiguous, False). Copies only an input in the other layout."""
    n, c, h, w = a.shape
    if channels_last_plane(h, w):
        return pixels(as_channels_last(a)), True
    return _c(a).reshape(n, c, h * w), False


def conv2d_forward(x, w, stride, padding):
    """Dense convolution, groups = 1.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, Ci, H, W).
        w: The weight (Co, Ci, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.

    Returns:
        y (N, Co, Ho, Wo).
    """
    return _forward(x, w, stride, padding, None, "conv2d_forward")


def conv2d_bn_eval(x, w, stride, padding, bn):
    """``conv2d_forward``, then each image's output through BatchNorm-eval (and ReLU6).

    The BatchNorm runs while the image's output is in cache. The contract is
    ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, Ci, H, W).
        w: The weight (Co, Ci, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        bn: ``(mean, var, weight, bias, eps, relu6)``, the BatchNorm in eval mode, as
            ``ReferenceKernels`` takes it.

    Returns:
        y (N, Co, Ho, Wo).
    """
    return _forward(x, w, stride, padding, bn, "conv2d_bn_eval")


def _forward(x, w, stride, padding, bn_eval, fn):
    x, w = _c(x), _c(w)
    same_float_dtype(fn, x=x, w=w)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding)
    n, co, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    ep = epilogue_args(fn, bn_eval, co, x.dtype)
    if channels_last_plane(ho, wo):
        y = empty_channels_last((n, co, ho, wo), x.dtype)
        _conv_forward(x, w.reshape(co, -1), kh, kw, sh, sw, ph, pw, ho, wo, pixels(y), ep, True)
        return y
    if ep[3][0] and ho * wo <= EVAL_PIXELS_UP_TO:  # inference: channels-last pixels
        y = empty_channels_last((n, co, ho, wo), x.dtype)
        wt = np.ascontiguousarray(w.reshape(co, -1).T)
        if n:
            direct.convolve_bn(x, wt, kh, kw, sh, sw, ph, pw, ho, wo, pixels(y),
                               epilogue_table(ep, co, x.dtype), bool(ep[3][1]), direct.band_rows(ho),
                               numba.get_num_threads())
        return y
    y = aligned_empty((n, co, ho, wo), x.dtype)  # NumPy's allocator (see kernels.numba), aligned
    _conv_forward(x, w.reshape(co, -1), kh, kw, sh, sw, ph, pw, ho, wo, y.reshape(n, co, ho * wo),
                  ep, False)
    return y


def conv2d_backward_input(gy, w, x_shape, stride, padding):
    r"""Gradient of ``conv2d_forward`` with respect to x.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo).
        w: The weight (Co, Ci, kh, kw).
        x_shape: The input's shape (N, C, H, W).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.

    Returns:
        gx, of ``x_shape``.
    """
    fn = "conv2d_backward_input"
    gy, w = np.asarray(gy), _c(w)
    same_float_dtype(fn, gy=gy, w=w)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding)
    n, ci, h, wd = (int(s) for s in x_shape)
    co, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    wt = w.reshape(co, -1).T  # (K, Co): a transposed view, BLAS reads it as is
    gx = np.empty((n, ci, h, wd), gy.dtype)  # NumPy's allocator: see kernels.numba
    gy3, cl = _output_rows(gy)
    return _conv_backward_input(gy3, wt, kh, kw, sh, sw, ph, pw, ho, wo, gx, cl)


def conv2d_backward_weight(gy, x, w_shape, stride, padding):
    r"""Gradient of ``conv2d_forward`` with respect to w.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo).
        x: The input (N, Ci, H, W).
        w_shape: (Co, Ci, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.

    Returns:
        gw, of ``w_shape``.
    """
    fn = "conv2d_backward_weight"
    gy, x = np.asarray(gy), np.asarray(x)
    same_float_dtype(fn, gy=gy, x=x)
    (sh, sw), (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding)
    n = x.shape[0]
    co, kh, kw = int(w_shape[0]), int(w_shape[2]), int(w_shape[3])
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    w_shape = tuple(int(s) for s in w_shape)
    if n == 0:
        return np.zeros(w_shape, x.dtype)
    if channels_last.fits(x.shape, w_shape, (sh, sw), (ph, pw), True):
        return channels_last.conv2d_backward_weight(gy, x, w_shape, (ph, pw))
    x = _c(x)
    gy3, cl = _output_rows(gy)
    if not cl and co > 0 and stem.supported(w_shape, (sh, sw), (ph, pw)):  # tap planes
        return sum_in_order(stem.band_weight_gradients(gy3.reshape(gy.shape), x))
    if cl:
        gw = _conv_backward_weight_channels_last(gy3, x, kh, kw, sh, sw, ph, pw, ho, wo,
                                                 min(n, _GROUPS))
    else:  # both operands run along the pixels: ..gemm's loop, not BLAS
        cols = np.empty((n, x.shape[1] * kh * kw, ho * wo), x.dtype)
        gw = sum_of_products(gy3, _im2col_images(x, kh, kw, sh, sw, ph, pw, ho, wo, cols))
    return gw.reshape(w_shape)
