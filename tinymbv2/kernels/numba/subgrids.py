r"""Dilated depthwise convolution at stride 1 as the undilated kernels on interleaved sub-grids.

With stride 1 and dilation $d$, output pixel $o$ reads input pixels $o + k d - p$: all in
the same residue class modulo $d$ as $o$ when the padding $p$ is a multiple of $d$ (DeepLab's
"same" padding $p = d$ for a 3x3 filter is). So the map splits into $d_h d_w$ interleaved
sub-grids (rows $a, a + d_h, a + 2 d_h, \dots$ and columns likewise) that never mix, and on
each the dilated filter is an ordinary undilated one with padding $p / d$:

$$y[n, c, a + d_h i, b + d_w j] = (x_{ab} \star w)[n, c, i, j], \qquad
x_{ab}[n, c, i, j] = x[n, c, a + d_h i, b + d_w j].$$

The sub-grids are stacked along the batch (space-to-batch: (N, C, H, W) ->
$(d_h d_w N, C, \lceil H/d_h \rceil, \lceil W/d_w \rceil)$, one copy), run through the
undilated kernels of ``.depthwise`` (the fast 3x3 ones, vectorised over channels on small
planes), and put back (batch-to-space, one copy). When $H$ is not a multiple of $d_h$ the
map is padded at the bottom with zero rows first, which read as the zero padding they
replace, and the outputs past the real ones are dropped; in the gradients the padded
output rows carry zero. Exact: the same products, summed in another order in the weight
gradient only.

This is the "space-to-batch" form of atrous convolution of DeepLab's and TensorFlow's
code (``tf.nn.atrous_conv2d``). Any other stride or padding goes to the direct loops of
``.dilated``.

**In place, without the copies.** On a channels-last plane the numba set keeps so
(``.layout``: DeepLab's dilated blocks at output stride 16, 16 x 16), a 3x3 filter with the
padding equal to the dilation (each sub-grid's padding 1) needs no copies at all: the
register kernels of ``.depthwise.rows3x3`` read and write each sub-grid where it lies, its
pixels $d_w C$ values apart and its rows $d_h W C$ (``rows3x3.forward_dilated`` and the
gradients). The same products and sums as on the stacked sub-grids, except the weight
gradient's order (sub-grids outer, images inner).
"""
from __future__ import annotations

import numpy as np

from numba import njit, prange

from .cache import CACHE
from ..checks import conv_geometry, dilation_pair, grad_out_shape, pair, same_float_dtype
from . import depthwise
from .depthwise import rows3x3
from .layout import (as_channels_last, as_nchw, channels_last_plane, empty_channels_last,
                     is_channels_last, nhwc)

_JIT = dict(cache=CACHE, fastmath=False)


def fits(stride, padding, dilation) -> bool:
    """Whether a dilated depthwise convolution splits into sub-grids: stride 1, padding % d == 0.

    Args:
        stride: An int or (sh, sw).
        padding: An int or (ph, pw).
        dilation: An int or (dh, dw).

    Returns:
        True when the sub-grid kernels below compute it (arguments that are not ints or
        pairs give False, for the direct loops to refuse with their message).
    """
    try:
        (sh, sw), (ph, pw) = pair(stride, "stride", "fits"), pair(padding, "padding", "fits")
        dh, dw = pair(dilation, "dilation", "fits")
    except TypeError:
        return False
    return (sh, sw) == (1, 1) and dh >= 1 and dw >= 1 and ph % dh == 0 and pw % dw == 0


@njit(parallel=True, **_JIT)
def _split_planes(x, dh, dw, out):
    """``out[(a*dw + b)*N + n, c, i, j] = x[n, c, a + dh*i, b + dw*j]`` (zero past x), NCHW."""
    n, c, h, w = x.shape
    mh, mw = out.shape[2], out.shape[3]
    for t in prange(n * c):
        b0, ch = t // c, t % c
        plane = x[b0, ch]
        for a in range(dh):
            for b in range(dw):
                dst = out[(a * dw + b) * n + b0, ch]
                for i in range(mh):
                    r = a + dh * i
                    for j in range(mw):
                        q = b + dw * j
                        dst[i, j] = plane[r, q] if r < h and q < w else 0.0
    return out


@njit(parallel=True, **_JIT)
def _join_planes(y, dh, dw, out):
    """The inverse of ``_split_planes``: ``out[n, c, a + dh*i, b + dw*j] = y[(a*dw + b)*N + n, c, i, j]``."""
    n, c, h, w = out.shape
    for t in prange(n * c):
        b0, ch = t // c, t % c
        plane = out[b0, ch]
        for a in range(dh):
            for b in range(dw):
                src = y[(a * dw + b) * n + b0, ch]  # a sub-grid read in order, no division
                for i in range((h - a + dh - 1) // dh):
                    row = plane[a + dh * i]
                    for j in range((w - b + dw - 1) // dw):
                        row[b + dw * j] = src[i, j]
    return out


@njit(parallel=True, **_JIT)
def _split_pixels(x, dh, dw, out):
    """``_split_planes`` channels-last: ``out[(a*dw + b)*N + n, i, j] = x[n, a + dh*i, b + dw*j]``
    on (N, H, W, C) pixels, a run of C values per pixel (zero past x)."""
    n, h, w, c = x.shape
    images, mh, mw = out.shape[0], out.shape[1], out.shape[2]
    for t in prange(images * mh):
        g, i = t // mh, t % mh
        ab, b0 = g // n, g % n
        r = ab // dw + dh * i
        for j in range(mw):
            q = ab % dw + dw * j
            dst = out[g, i, j]
            if r < h and q < w:
                src = x[b0, r, q]
                for k in range(c):
                    dst[k] = src[k]
            else:
                for k in range(c):
                    dst[k] = 0.0
    return out


@njit(parallel=True, **_JIT)
def _join_pixels(y, dh, dw, out):
    """The inverse of ``_split_pixels``, cropped to out's (H, W): (N, H, W, C) pixels."""
    n, h, w, c = out.shape
    for t in prange(n * h):
        b0, r = t // h, t % h
        a, i = r % dh, r // dh
        for q in range(w):
            src = y[((a * dw + q % dw) * n + b0), i, q // dw]
            dst = out[b0, r, q]
            for k in range(c):
                dst[k] = src[k]
    return out


def space_to_batch(x, dh: int, dw: int):
    r"""The $d_h d_w$ interleaved sub-grids of x, stacked along the batch.

    Args:
        x: (N, C, H, W), in either layout.
        dh: $d_h$, the row spacing.
        dw: $d_w$, the column spacing.

    Returns:
        $(d_h d_w N, C, \lceil H/d_h \rceil, \lceil W/d_w \rceil)$; image
        $(a d_w + b) N + n$ holds ``x[n, :, a::dh, b::dw]``, zero-padded at the bottom and
        right to the common size. Channels-last if x is (the moves then copy whole runs of C
        values), else C-contiguous (a plane at a time).
    """
    n, c, h, w = x.shape
    mh, mw = -(-h // dh), -(-w // dw)
    if not is_channels_last(x):
        return _split_planes(np.ascontiguousarray(x), dh, dw,
                             np.empty((dh * dw * n, c, mh, mw), x.dtype))
    out = empty_channels_last((dh * dw * n, c, mh, mw), x.dtype)
    _split_pixels(x.transpose(0, 2, 3, 1), dh, dw, out.transpose(0, 2, 3, 1))
    return out


def batch_to_space(y, dh: int, dw: int, h: int, w: int, channels_last: bool):
    r"""The inverse of ``space_to_batch``: the sub-grids put back, cropped to (h, w).

    Args:
        y: $(d_h d_w N, C, m_h, m_w)$, in either layout.
        dh: $d_h$.
        dw: $d_w$.
        h: The rows kept, at most $d_h m_h$.
        w: The columns kept, at most $d_w m_w$.
        channels_last: Return it channels-last (from channels-last y only), else C-contiguous.

    Returns:
        (N, C, h, w).
    """
    b, c, mh, mw = y.shape
    n = b // (dh * dw)
    if channels_last and is_channels_last(y):
        out = empty_channels_last((n, c, h, w), y.dtype)
        _join_pixels(y.transpose(0, 2, 3, 1), dh, dw, out.transpose(0, 2, 3, 1))
        return out
    out = _join_planes(as_nchw(y), dh, dw, np.empty((n, c, h, w), y.dtype))
    return as_channels_last(out) if channels_last else out


def _out_channels_last(h, w):
    """Whether the result is channels-last: as ``.depthwise`` returns an (h, w) input plane's."""
    return channels_last_plane(h, w)


def _grid_geometry(fn, x_shape, w_shape, padding, dilation):
    """((dh, dw), the sub-grids' padding, the real output (Ho, Wo)) of a checked convolution."""
    _, _, out_hw = conv_geometry(fn, x_shape, w_shape, 1, padding, depthwise=True, dilation=dilation)
    (ph, pw), (dh, dw) = pair(padding, "padding", fn), dilation_pair(fn, dilation)
    return (dh, dw), (ph // dh, pw // dw), out_hw


def _in_place(w_shape, grid_pad, plane, *arrays) -> bool:
    """Whether the sub-grids are read in place (``rows3x3``'s dilated kernels): a 3x3 filter,
    each sub-grid's padding 1, a plane kept channels-last, and every array channels-last."""
    return (tuple(w_shape[2:]) == (3, 3) and tuple(grid_pad) == (1, 1)
            and channels_last_plane(*plane) and all(is_channels_last(a) for a in arrays))


def depthwise_conv2d_forward(x, w, padding, dilation):
    """Depthwise dilated convolution at stride 1 on the sub-grids.

    Args:
        x: The input (N, C, H, W).
        w: The weight (C, 1, kh, kw).
        padding: (ph, pw), multiples of the dilation (``fits``).
        dilation: (dh, dw).

    Returns:
        y (N, C, Ho, Wo), $H_o = H + 2 p_h - d_h (k_h - 1)$.
    """
    fn = "depthwise_conv2d_forward"
    x = np.asarray(x)
    (dh, dw), grid_pad, (ho, wo) = _grid_geometry(fn, x.shape, w.shape, padding, dilation)
    if _in_place(w.shape, grid_pad, x.shape[2:], x):
        w = np.ascontiguousarray(w)
        same_float_dtype(fn, x=x, w=w)
        y = empty_channels_last(x.shape, x.dtype)
        rows3x3.forward_dilated(nhwc(x), dh, dw, w, nhwc(y))
        return y
    y = depthwise.depthwise_conv2d_forward(space_to_batch(x, dh, dw), w, (1, 1), grid_pad)
    return batch_to_space(y, dh, dw, ho, wo, _out_channels_last(x.shape[2], x.shape[3]))


def _checked_grad(fn, gy, x_shape, w_shape, padding, dilation):
    """gy checked against the geometry: ``(gy, (dh, dw), the sub-grids' padding)``."""
    gy = np.asarray(gy)
    (dh, dw), grid_pad, (ho, wo) = _grid_geometry(fn, x_shape, w_shape, padding, dilation)
    grad_out_shape(fn, gy.shape, (x_shape[0], x_shape[1], ho, wo))
    return gy, (dh, dw), grid_pad


def depthwise_conv2d_backward_input(gy, w, x_shape, padding, dilation):
    r"""Input gradient of the sub-grid dilated depthwise convolution.

    Args:
        gy: $\partial L / \partial y$ (N, C, Ho, Wo).
        w: The weight (C, 1, kh, kw).
        x_shape: The input's shape (N, C, H, W).
        padding: (ph, pw), multiples of the dilation.
        dilation: (dh, dw).

    Returns:
        gx, of ``x_shape``.
    """
    fn = "depthwise_conv2d_backward_input"
    x_shape = tuple(int(s) for s in x_shape)
    gy, (dh, dw), grid_pad = _checked_grad(fn, gy, x_shape, w.shape, padding, dilation)
    n, c, h, wd = x_shape
    if _in_place(w.shape, grid_pad, (h, wd), gy):
        w = np.ascontiguousarray(w)
        same_float_dtype(fn, gy=gy, w=w)
        gx = empty_channels_last(x_shape, gy.dtype)
        rows3x3.backward_input_dilated(nhwc(gy), dh, dw, w, nhwc(gx))
        return gx
    grid_x = (dh * dw * n, c, -(-h // dh), -(-wd // dw))
    gx = depthwise.depthwise_conv2d_backward_input(space_to_batch(gy, dh, dw), w, grid_x, (1, 1),
                                                   grid_pad)
    return batch_to_space(gx, dh, dw, h, wd, _out_channels_last(h, wd))


def depthwise_conv2d_backward_weight(gy, x, w_shape, padding, dilation):
    r"""Weight gradient of the sub-grid dilated depthwise convolution.

    Args:
        gy: $\partial L / \partial y$ (N, C, Ho, Wo).
        x: The input (N, C, H, W).
        w_shape: The weight's shape (C, 1, kh, kw).
        padding: (ph, pw), multiples of the dilation.
        dilation: (dh, dw).

    Returns:
        gw, of ``w_shape``: $\sum_{n, a, b, i, j} g_{ab}[n, c, i, j]\, x_{ab}[n, c, i + u - p/d,
        j + v - p/d]$, the sum over the sub-grids of their undilated weight gradients.
    """
    fn = "depthwise_conv2d_backward_weight"
    x = np.asarray(x)
    w_shape = tuple(int(s) for s in w_shape)
    gy, (dh, dw), grid_pad = _checked_grad(fn, gy, x.shape, w_shape, padding, dilation)
    if _in_place(w_shape, grid_pad, x.shape[2:], gy, x):
        same_float_dtype(fn, gy=gy, x=x)
        return rows3x3.backward_weight_dilated(nhwc(gy), nhwc(x), dh, dw)
    return depthwise.depthwise_conv2d_backward_weight(space_to_batch(gy, dh, dw),
                                                      space_to_batch(x, dh, dw), w_shape,
                                                      (1, 1), grid_pad)
