r"""Reference kernels: convolution and BatchNorm in plain NumPy, written to be read.

This is the version the course teaches. Every function is vectorised NumPy
with no Python loop over pixels: a convolution loops only over the $k_h k_w$
*taps* of its kernel, and each tap is one whole-array operation on a strided
slice of the zero-padded input.

The one picture behind all three convolution passes. For a tap $(i, j)$ of the
kernel, output pixel $(o_h, o_w)$ reads input pixel

$$(o_h s_h + i d_h - p_h,\; o_w s_w + j d_w - p_w)$$

with $d$ the dilation (atrous convolution: the taps $d$ pixels apart, 1 for the usual
convolution), so the set of input pixels that tap $(i, j)$ touches, over all outputs, is
the strided slice ``xp[..., i*dh : i*dh + sh*(Ho-1) + 1 : sh, j*dw : j*dw + sw*(Wo-1) + 1 : sw]``
of the padded input ``xp``: a (Ho, Wo) "window". Then

* forward: ``y += w[i, j] * window(xp)`` (gather);
* backward-input: ``window(gxp) += w[i, j] * gy`` (scatter: send each output's
  gradient back along the same wire the forward read it through);
* backward-weight: ``gw[i, j]`` = the sum over (n, oh, ow) of ``gy * window(xp)``
  (the weight gradient *correlates the input with the output gradient*:
  $\partial L / \partial w_{ij} =
  \sum_p \partial L / \partial y_p \cdot \partial y_p / \partial w_{ij}$,
  and $\partial y_p / \partial w_{ij}$ is the input pixel that tap $(i, j)$ met at output $p$).

Why backward-input is a "full correlation with the flipped kernel": with
stride 1 the scatter above says $g_{x,h} = \sum_i g_{y,\,h - i + p}\, w_i$, which is
$g_y$ (zero-padded by $k - 1 - p$ on each side) correlated with $w$ reversed, i.e.
a "full" convolution. With stride $s$ the same holds for $g_y$ with $s - 1$ zeros
inserted between its pixels (the "transposed convolution"). The scatter
form computes exactly that without building the dilated array.

**One class, the interface of every kernel set.**
[ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels] defines every kernel the
differentiable ops call: the simple ones as plain NumPy, the fused ones (a convolution
with its BatchNorm for inference, the depthwise stage of a block in training, a whole
block for inference) as compositions of the simple ones through ``self``, and the
RMSprop update, a few lines of array arithmetic that a fast set may run as one pass. A
faster set subclasses it and overrides what it speeds up (``kernels/numba/``,
``kernels/cupy/``), as minitorch's ``FastOps`` subclasses its ``TensorOps``: whatever it
does not override, it inherits, computed with its own simple kernels.
``tinymbv2.kernels.kernels_for(x)`` returns the set for an array.

Shapes are NCHW. ``stride``, ``padding`` and ``dilation`` are ``(sh, sw)`` /
``(ph, pw)`` / ``(dh, dw)`` (an int is taken for both); with dilation
$H_o = \lfloor (H + 2p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1$.
Every output has the dtype of the inputs
(float32 or float64; mixing them is a ``TypeError``, never a silent upcast)
and is a fresh C-contiguous array. Inputs may be non-contiguous.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from . import int8_reference
from .taps import tap_window
from .checks import (batch_norm_args, clamp_bound, conv_geometry, dilation_pair, grad_out_shape,
                     interpolate_args, matmul_args, pointwise_args, pointwise_weight_args, relu6_bias,
                     same_float_dtype)


# --------------------------------------------------------------------- helpers
def _pad(x, ph, pw):
    """Zero-pad the two spatial axes of an (N, C, H, W) array."""
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _per_channel(v):
    """(C,) -> (1, C, 1, 1), so a per-channel vector broadcasts over N, H, W."""
    return v.reshape(1, -1, 1, 1)



def _per_class(v, ndim):
    """A (K,) vector shaped to broadcast along axis 1 of an ``ndim``-D array."""
    return v.reshape((-1,) + (1,) * (ndim - 2))


def interpolation_taps(xp, n_in, n_out, mode, align_corners, scale, dtype):
    """The two source rows and their weights for each output row of one axis of a resize.

    The formulas are in ``ReferenceKernels.interpolate_forward``. The ratio is computed as
    PyTorch computes it, so that a floor lands where PyTorch's does: for nearest in float32
    whatever the data (its kernels do), for bilinear in the data's dtype.

    Args:
        xp: NumPy or CuPy.
        n_in: The input's length along the axis.
        n_out: The output's length.
        mode: ``"bilinear"`` or ``"nearest"``.
        align_corners: Bilinear's source formula.
        scale: The scale factor the caller gave for this axis, or None.
        dtype: The data's dtype (of the weights).

    Returns:
        ``(i0, i1, l0, l1)``, each (n_out,): output o is ``l0[o] * x[i0[o]] + l1[o] * x[i1[o]]``
        (nearest: ``i1 = i0``, ``l0 = 1``, ``l1 = 0``).
    """
    dtype = np.dtype(dtype)
    o = xp.arange(n_out)
    if mode == "nearest":
        r = np.float32(1.0 / scale if scale else n_in / n_out)
        if n_out in (n_in, 2 * n_in):  # PyTorch's shortcuts, whatever the scale factor said
            r = np.float32(n_in / n_out)
        i0 = xp.minimum(xp.floor(o.astype(np.float32) * r).astype(np.int64), n_in - 1)
        return i0, i0, xp.ones(n_out, dtype), xp.zeros(n_out, dtype)
    if align_corners:
        r = dtype.type((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        src = o.astype(dtype) * r
    else:
        # an axis that keeps its size is copied, whatever the scale factor (PyTorch skips it)
        r = dtype.type(1.0 / scale if scale and n_out != n_in else n_in / n_out)
        src = xp.maximum((o.astype(dtype) + dtype.type(0.5)) * r - dtype.type(0.5), 0)
    i0 = xp.minimum(src.astype(np.int64), n_in - 1)
    i1 = xp.minimum(i0 + 1, n_in - 1)
    l1 = (src - i0).astype(dtype)
    return i0, i1, 1 - l1, l1


def interpolation_matrices(xp, in_hw, size, mode, align_corners, scales, dtype):
    r"""The resize of a plane as two matrices: $y = A_h\, x\, A_w^T$.

    Args:
        xp: NumPy or CuPy.
        in_hw: The input plane (H, W).
        size: The output plane (Ho, Wo).
        mode: ``"bilinear"`` or ``"nearest"``.
        align_corners: Bilinear's source formula.
        scales: The caller's (scale_h, scale_w), or None.
        dtype: The data's dtype.

    Returns:
        ``(A_h, A_w)``, (Ho, H) and (Wo, W): row o holds the weights output o gives each
        source row (at most two are not zero).
    """
    mats = []
    for axis, (n_in, n_out) in enumerate(zip(in_hw, size)):
        i0, i1, l0, l1 = interpolation_taps(xp, int(n_in), int(n_out), mode, align_corners,
                                            scales[axis] if scales else None, dtype)
        cols = xp.arange(n_in)
        # l0 and l1 add up where i0 == i1 (the last row), as PyTorch's two taps do
        mats.append((l0[:, None] * (cols == i0[:, None]) + l1[:, None] * (cols == i1[:, None]))
                    .astype(dtype))
    return tuple(mats)


class ReferenceKernels:
    """The readable kernel set: every kernel of the interface, in NumPy.

    Simple kernels are static methods (they call no other kernel); fused kernels are
    methods composed of ``self``'s simple kernels, so a subclass that speeds up only
    the simple ones gets its fused kernels from them. ``bn`` arguments of the fused
    inference kernels are BatchNorm in eval mode as a tuple
    ``(mean, var, weight, bias, eps, relu6)``.
    """

    name = "reference"

    # ------------------------------------------------------------ dense convolution
    @staticmethod
    def conv2d_forward(x, w, stride, padding, dilation=1):
        r"""Dense 2-D cross-correlation (PyTorch's ``conv2d``, groups = 1, no bias).

        $$
        y_{n,o,o_h,o_w} = \sum_{c,i,j} w_{o,c,i,j}\;
          \bar{x}_{n,\,c,\,o_h s_h + i d_h,\,o_w s_w + j d_w}
        $$

        with $\bar{x}$ the padded input. Per tap this is a matrix product: (Co, Ci) @ (Ci, Ho·Wo)
        for every image.

        Args:
            x: The input (N, Ci, H, W).
            w: The weight (Co, Ci, kh, kw).
            stride: (sh, sw).
            padding: (ph, pw), zeros on each side.
            dilation: (dh, dw), the spacing of the taps (1: side by side).

        Returns:
            y (N, Co, Ho, Wo).
        """
        fn = "conv2d_forward"
        x, w = np.asarray(x), np.asarray(w)
        dtype = same_float_dtype(fn, x=x, w=w)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding,
                                                   dilation=dilation)
        d = dilation_pair(fn, dilation)
        n, ci = x.shape[:2]
        co, _, kh, kw = w.shape
        xp = _pad(x, ph, pw)
        w_taps = w.transpose(2, 3, 0, 1)  # (kh, kw, Co, Ci): one (Co, Ci) matrix per tap
        y = np.zeros((n, co, ho * wo), dtype)
        for i in range(kh):
            for j in range(kw):
                patch = tap_window(xp, i, j, (ho, wo), stride, d).reshape(n, ci, ho * wo)
                y += np.matmul(w_taps[i, j], patch)  # (Co, Ci) @ (N, Ci, P) -> (N, Co, P)
        return y.reshape(n, co, ho, wo)

    @staticmethod
    def conv2d_backward_input(gy, w, x_shape, stride, padding, dilation=1):
        r"""Gradient of ``conv2d_forward`` with respect to x.

        The scatter of the forward: per tap, ``window(gxp) += w[:, :, i, j].T @ gy``, then the
        padding border is cut off (its gradient belongs to no input). Input rows and columns
        that no window reaches (when $H + 2p_h - d_h (k_h - 1) - 1$ is not a multiple of
        $s_h$) keep gradient 0, as they should.

        Args:
            gy: $\partial L / \partial y$ (N, Co, Ho, Wo).
            w: The weight (Co, Ci, kh, kw).
            x_shape: The input's shape (N, Ci, H, W).
            stride: (sh, sw).
            padding: (ph, pw), zeros on each side.
            dilation: (dh, dw), the spacing of the taps (1: side by side).

        Returns:
            gx, of ``x_shape``.
        """
        fn = "conv2d_backward_input"
        gy, w = np.asarray(gy), np.asarray(w)
        dtype = same_float_dtype(fn, gy=gy, w=w)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding,
                                                   dilation=dilation)
        d = dilation_pair(fn, dilation)
        n, ci, h, wd = x_shape
        co, _, kh, kw = w.shape
        grad_out_shape(fn, gy.shape, (n, co, ho, wo))
        gy3 = gy.reshape(n, co, ho * wo)
        w_taps = w.transpose(2, 3, 1, 0)  # (kh, kw, Ci, Co): the transposed matrix per tap
        gxp = np.zeros((n, ci, h + 2 * ph, wd + 2 * pw), dtype)
        for i in range(kh):
            for j in range(kw):
                contribution = np.matmul(w_taps[i, j], gy3).reshape(n, ci, ho, wo)
                tap_window(gxp, i, j, (ho, wo), stride, d)[...] += contribution
        return np.ascontiguousarray(gxp[:, :, ph : ph + h, pw : pw + wd])

    @staticmethod
    def conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation=1):
        r"""Gradient of ``conv2d_forward`` with respect to w.

        $$
        g_{w,\,o,c,i,j} = \sum_{n,o_h,o_w} g_{y,\,n,o,o_h,o_w}\;
          \bar{x}_{n,\,c,\,o_h s_h + i d_h,\,o_w s_w + j d_w}
        $$

        i.e. the input correlated with the output gradient, one tap at a time.

        Args:
            gy: $\partial L / \partial y$ (N, Co, Ho, Wo).
            x: The input (N, Ci, H, W).
            w_shape: The weight's shape (Co, Ci, kh, kw).
            stride: (sh, sw).
            padding: (ph, pw), zeros on each side.
            dilation: (dh, dw), the spacing of the taps (1: side by side).

        Returns:
            gw, of ``w_shape``.
        """
        fn = "conv2d_backward_weight"
        gy, x = np.asarray(gy), np.asarray(x)
        dtype = same_float_dtype(fn, gy=gy, x=x)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding,
                                                   dilation=dilation)
        d = dilation_pair(fn, dilation)
        grad_out_shape(fn, gy.shape, (x.shape[0], w_shape[0], ho, wo))
        xp = _pad(x, ph, pw)
        gw = np.empty(w_shape, dtype)
        for i in range(w_shape[2]):
            for j in range(w_shape[3]):
                patch = tap_window(xp, i, j, (ho, wo), stride, d)
                # contract batch and output pixels: (N, Co, Ho, Wo) x (N, Ci, Ho, Wo) -> (Co, Ci)
                gw[:, :, i, j] = np.tensordot(gy, patch, axes=([0, 2, 3], [0, 2, 3]))
        return gw

    # -------------------------------------------------------- depthwise convolution
    @staticmethod
    def depthwise_conv2d_forward(x, w, stride, padding, dilation=1):
        r"""Depthwise convolution (groups = C): each channel has its own kh x kw filter.

        $$
        y_{n,c,o_h,o_w} = \sum_{i,j} w_{c,0,i,j}\;
          \bar{x}_{n,\,c,\,o_h s_h + i d_h,\,o_w s_w + j d_w}
        $$

        No sum over channels, so per tap it is an elementwise multiply-add (paper section 3.1:
        $k_h k_w C H_o W_o$ multiply-adds instead of $k_h k_w C C_o H_o W_o$).

        Args:
            x: The input (N, C, H, W).
            w: The weight (C, 1, kh, kw).
            stride: (sh, sw).
            padding: (ph, pw), zeros on each side.
            dilation: (dh, dw), the spacing of the taps (1: side by side).

        Returns:
            y (N, C, Ho, Wo).
        """
        fn = "depthwise_conv2d_forward"
        x, w = np.asarray(x), np.asarray(w)
        dtype = same_float_dtype(fn, x=x, w=w)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding,
                                                   depthwise=True, dilation=dilation)
        d = dilation_pair(fn, dilation)
        n, c = x.shape[:2]
        xp = _pad(x, ph, pw)
        y = np.zeros((n, c, ho, wo), dtype)
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                y += _per_channel(w[:, 0, i, j]) * tap_window(xp, i, j, (ho, wo), stride, d)
        return y

    @staticmethod
    def depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding, dilation=1):
        r"""Gradient of ``depthwise_conv2d_forward`` with respect to x.

        Scatter per tap: ``window(gxp) += w[c, 0, i, j] * gy``, then crop the padding.

        Args:
            gy: $\partial L / \partial y$ (N, C, Ho, Wo).
            w: The weight (C, 1, kh, kw).
            x_shape: The input's shape (N, C, H, W).
            stride: (sh, sw).
            padding: (ph, pw), zeros on each side.
            dilation: (dh, dw), the spacing of the taps (1: side by side).

        Returns:
            gx, of ``x_shape``.
        """
        fn = "depthwise_conv2d_backward_input"
        gy, w = np.asarray(gy), np.asarray(w)
        dtype = same_float_dtype(fn, gy=gy, w=w)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding,
                                                   depthwise=True, dilation=dilation)
        d = dilation_pair(fn, dilation)
        n, c, h, wd = x_shape
        grad_out_shape(fn, gy.shape, (n, c, ho, wo))
        gxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype)
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                tap_window(gxp, i, j, (ho, wo), stride, d)[...] += _per_channel(w[:, 0, i, j]) * gy
        return np.ascontiguousarray(gxp[:, :, ph : ph + h, pw : pw + wd])

    @staticmethod
    def depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation=1):
        r"""Gradient of ``depthwise_conv2d_forward`` with respect to w.

        $$
        g_{w,\,c,0,i,j} = \sum_{n,o_h,o_w} g_{y,\,n,c,o_h,o_w}\;
          \bar{x}_{n,\,c,\,o_h s_h + i d_h,\,o_w s_w + j d_w}
        $$

        Args:
            gy: $\partial L / \partial y$ (N, C, Ho, Wo).
            x: The input (N, C, H, W).
            w_shape: The weight's shape (C, 1, kh, kw).
            stride: (sh, sw).
            padding: (ph, pw), zeros on each side.
            dilation: (dh, dw), the spacing of the taps (1: side by side).

        Returns:
            gw, of ``w_shape``.
        """
        fn = "depthwise_conv2d_backward_weight"
        gy, x = np.asarray(gy), np.asarray(x)
        dtype = same_float_dtype(fn, gy=gy, x=x)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding,
                                                   depthwise=True, dilation=dilation)
        d = dilation_pair(fn, dilation)
        grad_out_shape(fn, gy.shape, (x.shape[0], x.shape[1], ho, wo))
        xp = _pad(x, ph, pw)
        gw = np.empty(w_shape, dtype)
        for i in range(w_shape[2]):
            for j in range(w_shape[3]):
                gw[:, 0, i, j] = np.sum(gy * tap_window(xp, i, j, (ho, wo), stride, d), axis=(0, 2, 3))
        return gw

    # -------------------------------------------------------- pointwise convolution
    @staticmethod
    def pointwise_conv2d_forward(x, w):
        """1x1 convolution: a matrix product over channels, done for every pixel at once.

        ``y[n] = W @ x[n]`` with W = w as (Co, Ci) and x[n] as (Ci, H·W). The expansion and
        projection layers of the inverted residual block are these; they hold about 90% of
        MobileNetV2's multiply-adds.

        Args:
            x: The input (N, Ci, H, W).
            w: The weight (Co, Ci, 1, 1).

        Returns:
            y (N, Co, H, W).
        """
        fn = "pointwise_conv2d_forward"
        x, w = np.asarray(x), np.asarray(w)
        same_float_dtype(fn, x=x, w=w)
        pointwise_args(fn, x, "x", w, axis=1)
        n, ci, h, wd = x.shape
        co = w.shape[0]
        y = np.matmul(w.reshape(co, ci), x.reshape(n, ci, h * wd))  # (Co, Ci) @ (N, Ci, P)
        return y.reshape(n, co, h, wd)

    @staticmethod
    def pointwise_conv2d_backward_input(gy, w):
        r"""Gradient of the 1x1 convolution with respect to x: ``gx[n] = W.T @ gy[n]``.

        Args:
            gy: $\partial L / \partial y$ (N, Co, H, W).
            w: The weight (Co, Ci, 1, 1).

        Returns:
            gx (N, Ci, H, W).
        """
        fn = "pointwise_conv2d_backward_input"
        gy, w = np.asarray(gy), np.asarray(w)
        same_float_dtype(fn, gy=gy, w=w)
        pointwise_args(fn, gy, "gy", w, axis=0)
        n, co, h, wd = gy.shape
        ci = w.shape[1]
        gx = np.matmul(w.reshape(co, ci).T, gy.reshape(n, co, h * wd))  # (Ci, Co) @ (N, Co, P)
        return gx.reshape(n, ci, h, wd)

    @staticmethod
    def pointwise_conv2d_backward_weight(gy, x):
        r"""Gradient of the 1x1 convolution with respect to w.

        ``gw`` is the sum over n of ``gy[n] @ x[n].T``: each pixel of each image is one sample.

        Args:
            gy: $\partial L / \partial y$ (N, Co, H, W).
            x: The input (N, Ci, H, W).

        Returns:
            gw (Co, Ci, 1, 1).
        """
        fn = "pointwise_conv2d_backward_weight"
        gy, x = np.asarray(gy), np.asarray(x)
        same_float_dtype(fn, gy=gy, x=x)
        pointwise_weight_args(fn, gy, x)
        n, co, h, wd = gy.shape
        ci = x.shape[1]
        gy3, x3 = gy.reshape(n, co, h * wd), x.reshape(n, ci, h * wd)
        gw = np.matmul(gy3, x3.transpose(0, 2, 1)).sum(axis=0)  # (N, Co, Ci) summed over images
        return gw.reshape(co, ci, 1, 1)

    # ------------------------------------------------------------------- BatchNorm
    @staticmethod
    def batch_norm_forward_train(x, weight, bias, eps, relu6=False, relu=False):
        r"""BatchNorm in training mode: normalise each channel by its batch statistics.

        Over the $M = N H W$ values of each channel (Ioffe & Szegedy 2015):

        $$
        \mu = \frac{1}{M}\sum x, \quad \sigma^2 = \frac{1}{M}\sum (x - \mu)^2, \quad
        \text{invstd} = \frac{1}{\sqrt{\sigma^2 + \epsilon}}, \quad
        \hat{x} = (x - \mu)\,\text{invstd}, \quad y = \gamma \hat{x} + \beta
        $$

        The variance is the biased one, which is what normalises; the caller keeps the
        unbiased $\sigma^2 M / (M - 1)$ for ``running_var``.

        Args:
            x: The input (N, C, H, W).
            weight: $\gamma$ (C,).
            bias: $\beta$ (C,).
            eps: $\epsilon$.
            relu6: Also apply the ReLU6 that follows BatchNorm in MobileNetV2,
                $y = \min(\max(y, 0), 6)$, in the same call (see ``batch_norm_backward_train``).
            relu: Also apply a ReLU, $y = \max(y, 0)$: the same clamp with no upper bound
                (the segmentation heads' BatchNorm and ReLU).

        Returns:
            ``(y, mean, invstd)``: y like x, the others (C,).
        """
        fn = "batch_norm_forward_train"
        x, weight, bias = np.asarray(x), np.asarray(weight), np.asarray(bias)
        same_float_dtype(fn, x=x, weight=weight, bias=bias)
        batch_norm_args(fn, x, train=True, weight=weight, bias=bias)
        clamp, top = clamp_bound(fn, relu6, relu)
        axes = (0, 2, 3)
        mean = x.mean(axis=axes)
        var = ((x - _per_channel(mean)) ** 2).mean(axis=axes)
        invstd = 1.0 / np.sqrt(var + float(eps))
        xhat = (x - _per_channel(mean)) * _per_channel(invstd)
        y = xhat * _per_channel(weight) + _per_channel(bias)
        if clamp:
            y = np.clip(y, 0, top)
        return np.ascontiguousarray(y), mean, invstd

    @staticmethod
    def batch_norm_backward_train(gy, x, mean, invstd, weight, bias=None, relu6=False,
                                  relu=False):
        r"""Gradients of ``batch_norm_forward_train`` (x, weight and bias).

        $y = \gamma \hat{x} + \beta$, so $g_\beta = \sum g_y$ and $g_\gamma = \sum g_y \hat{x}$.
        For $g_x$ remember that the mean and the variance depend on every $x$ of the channel:
        $d\hat{x} = \gamma g_y$ flows to $x$ directly, through the mean
        ($-\text{mean}(d\hat{x})$) and through the variance
        ($-\hat{x}\,\text{mean}(d\hat{x}\,\hat{x})$), giving

        $$
        g_x = \gamma\,\text{invstd}\,
          \left(g_y - \frac{g_\beta}{M} - \hat{x} \frac{g_\gamma}{M}\right)
        $$

        (A gradient check through ``sum(y)`` would miss errors here: the input gradient of
        ``sum(BN(x))`` is exactly zero. Check with a random $g_y$.)

        With ``relu6`` (the fused ReLU6, which needs ``bias``), ``gy`` is the gradient of
        $\min(\max(z, 0), 6)$ with $z$ the BatchNorm output, so it first passes only where
        $0 < z < 6$ (PyTorch's choice at the kinks). With ``relu`` (the fused ReLU) the same
        with no upper bound: it passes where $z > 0$. $z$ is recomputed from x by the forward's
        own expression: no mask has to be kept between the passes.

        Args:
            gy: $\partial L / \partial y$ (N, C, H, W).
            x: The input (N, C, H, W).
            mean: The batch mean (C,), from the forward.
            invstd: $1/\sqrt{\sigma^2 + \epsilon}$ (C,), from the forward.
            weight: $\gamma$ (C,).
            bias: $\beta$ (C,); needed with ``relu6`` or ``relu``.
            relu6: The forward applied ReLU6.
            relu: The forward applied ReLU.

        Returns:
            ``(gx, gweight, gbias)``.
        """
        fn = "batch_norm_backward_train"
        clamp, top = clamp_bound(fn, relu6, relu)
        bias = relu6_bias(fn, relu6, bias, weight, relu)
        arrays = {k: np.asarray(v) for k, v in
                  dict(gy=gy, x=x, mean=mean, invstd=invstd, weight=weight, bias=bias).items()}
        same_float_dtype(fn, **arrays)
        gy, x, mean, invstd, weight, bias = arrays.values()
        batch_norm_args(fn, x, train=True, mean=mean, invstd=invstd, weight=weight, bias=bias)
        if gy.shape != x.shape:
            raise ValueError(f"{fn}: gy must have the shape of x {x.shape}, got {gy.shape}")
        axes = (0, 2, 3)
        m = x.shape[0] * x.shape[2] * x.shape[3]
        xhat = (x - _per_channel(mean)) * _per_channel(invstd)
        if clamp:
            z = xhat * _per_channel(weight) + _per_channel(bias)
            gy = gy * ((z > 0) & (z < top))
        gbias = gy.sum(axis=axes)
        gweight = (gy * xhat).sum(axis=axes)
        gx = _per_channel(weight * invstd) * (gy - _per_channel(gbias / m)
                                              - xhat * _per_channel(gweight / m))
        return np.ascontiguousarray(gx), gweight, gbias

    @staticmethod
    def batch_norm_forward_eval(x, mean, var, weight, bias, eps, relu6=False):
        r"""BatchNorm in eval mode: normalise with stored (running) statistics.

        $y = (x - \text{mean}) / \sqrt{\text{var} + \epsilon} \cdot \gamma + \beta$, a per-channel
        affine map, then clamped to [0, 6] when ``relu6``.

        Args:
            x: The input (N, C, H, W).
            mean: The running mean (C,).
            var: The running variance (C,).
            weight: $\gamma$ (C,).
            bias: $\beta$ (C,).
            eps: $\epsilon$.
            relu6: Clamp to [0, 6].

        Returns:
            y, like x.
        """
        fn = "batch_norm_forward_eval"
        arrays = {k: np.asarray(v) for k, v in
                  dict(x=x, mean=mean, var=var, weight=weight, bias=bias).items()}
        same_float_dtype(fn, **arrays)
        x, mean, var, weight, bias = arrays.values()
        batch_norm_args(fn, x, mean=mean, var=var, weight=weight, bias=bias)
        scale = weight / np.sqrt(var + float(eps))
        y = (x - _per_channel(mean)) * _per_channel(scale) + _per_channel(bias)
        if relu6:
            y = np.clip(y, 0, 6)
        return np.ascontiguousarray(y)

    # ---------------------------------------------------------------- matrix product
    @staticmethod
    def matmul(a, b):
        """``a @ b``: the Linear layer's product, $y = x W^T$.

        Args:
            a: (M, K).
            b: (K, N).

        Returns:
            (M, N).
        """
        fn = "matmul"
        a, b = np.asarray(a), np.asarray(b)
        same_float_dtype(fn, a=a, b=b)
        matmul_args(fn, a, b)
        return np.ascontiguousarray(a @ b)

    # ------------------------------------------------------------------ pooling
    @staticmethod
    def global_average_pool(x):
        r"""Global average pooling for inference, MobileNetV2's head: (N, C, H, W) -> (N, C),
        $\text{out}_{nc} = \frac{1}{HW} \sum_{h,w} x_{nchw}$ (``x.mean(axis=(2, 3))``, as the
        model's ``AdaptiveAvgPool2d`` computes it).

        Args:
            x: The map (N, C, H, W), an array of this set's array module.

        Returns:
            (N, C).
        """
        if x.ndim != 4:
            raise ValueError(f"global_average_pool: expected a map (N, C, H, W), got {x.shape}")
        return x.mean(axis=(2, 3))

    # ------------------------------------------------------------- interpolation
    @staticmethod
    def interpolate_forward(x, size, mode, align_corners, scales):
        r"""Resize the planes of x to ``size``: PyTorch's ``interpolate``, bilinear or nearest.

        Each axis is resampled on its own (both modes are separable). Output row $o$ of an axis
        of $n_\text{in}$ inputs and $n_\text{out}$ outputs reads the source coordinate

        * bilinear, ``align_corners=False``: $s = \max(0,\; (o + 0.5)\,r - 0.5)$, with
          $r = n_\text{in} / n_\text{out}$ (pixel centres line up);
        * bilinear, ``align_corners=True``: $s = o\,(n_\text{in} - 1) / (n_\text{out} - 1)$
          (corner pixels line up; $s = 0$ for $n_\text{out} = 1$);
        * nearest: $s = \min(\lfloor o\,r \rfloor,\; n_\text{in} - 1)$ (PyTorch's
          ``"nearest"``: the floor, not the rounding);

        where $r = 1 / \text{scale}$ instead when the caller gave a scale factor (PyTorch's
        rule; but, as PyTorch, an axis that keeps its size is copied, and nearest's doubling
        takes $r = 1/2$, whatever the scale). Bilinear mixes the two rows around $s$: with $i = \lfloor s \rfloor$ and
        $\lambda = s - i$, $y_o = (1 - \lambda)\,x_i + \lambda\,x_{\min(i + 1,\, n_\text{in} - 1)}$.
        Written as a matrix $A$ (n_out, n_in) with those weights in each row, the whole
        resize is $y = A_h\, x\, A_w^T$ per plane, two matrix products.

        Args:
            x: The input (N, C, H, W).
            size: (Ho, Wo), the output plane.
            mode: ``"bilinear"`` or ``"nearest"``.
            align_corners: For bilinear, which source formula (above); False for nearest.
            scales: (scale_h, scale_w), the scale factors the caller gave, or None (then
                $r = n_\text{in} / n_\text{out}$).

        Returns:
            y (N, C, Ho, Wo).
        """
        x = np.asarray(x)
        dtype = interpolate_args("interpolate_forward", x, size)
        a_h, a_w = interpolation_matrices(np, x.shape[2:], size, mode, align_corners, scales, dtype)
        return np.ascontiguousarray(np.matmul(np.matmul(a_h, x), a_w.T))

    @staticmethod
    def interpolate_backward(gy, x_shape, mode, align_corners, scales):
        r"""Gradient of ``interpolate_forward`` with respect to x.

        $y = A_h x A_w^T$ is linear in x, so $\partial L / \partial x = A_h^T\, g_y\, A_w$:
        each output's gradient is scattered back to the (one or two) source rows and
        columns it read, with the forward's weights; rows that several outputs read add up.

        Args:
            gy: $\partial L / \partial y$ (N, C, Ho, Wo).
            x_shape: The input's shape (N, C, H, W).
            mode: As in the forward.
            align_corners: As in the forward.
            scales: As in the forward.

        Returns:
            $\partial L / \partial x$ (N, C, H, W).
        """
        gy = np.asarray(gy)
        dtype = interpolate_args("interpolate_backward", gy, gy.shape[2:], x_shape)
        a_h, a_w = interpolation_matrices(np, x_shape[2:], gy.shape[2:], mode, align_corners, scales,
                                          dtype)
        return np.ascontiguousarray(np.matmul(np.matmul(a_h.T, gy), a_w))

    # ---------------------------------------- fused: convolution + BatchNorm, inference
    def conv2d_bn_eval(self, x, w, stride, padding, bn):
        """A dense convolution, then its BatchNorm in eval mode (and ReLU6), for inference.

        ``batch_norm_forward_eval(conv2d_forward(x, w, stride, padding), *bn)``; ReLU6 when
        ``bn[5]``.

        Args:
            x: The input (N, Ci, H, W).
            w: The weight (Co, Ci, kh, kw).
            stride: (sh, sw).
            padding: (ph, pw), zeros on each side.
            bn: ``(mean, var, weight, bias, eps, relu6)``, the BatchNorm in eval mode (arrays (C,)).

        Returns:
            (N, Co, Ho, Wo).
        """
        return self._bn_eval(self.conv2d_forward(x, w, stride, padding), bn)

    def depthwise_conv2d_bn_eval(self, x, w, stride, padding, bn):
        """A depthwise convolution, then BatchNorm-eval (and ReLU6): as ``conv2d_bn_eval``.

        Args:
            x: The input (N, C, H, W).
            w: The weight (C, 1, kh, kw).
            stride: (sh, sw).
            padding: (ph, pw), zeros on each side.
            bn: ``(mean, var, weight, bias, eps, relu6)``, the BatchNorm in eval mode (arrays (C,)).

        Returns:
            (N, C, Ho, Wo).
        """
        return self._bn_eval(self.depthwise_conv2d_forward(x, w, stride, padding), bn)

    def pointwise_conv2d_bn_eval(self, x, w, bn):
        """A 1x1 convolution, then BatchNorm-eval (and ReLU6): as ``conv2d_bn_eval``.

        Args:
            x: The input (N, Ci, H, W).
            w: The weight (Co, Ci, 1, 1).
            bn: ``(mean, var, weight, bias, eps, relu6)``, the BatchNorm in eval mode (arrays (C,)).

        Returns:
            (N, Co, H, W).
        """
        return self._bn_eval(self.pointwise_conv2d_forward(x, w), bn)

    def _bn_eval(self, y, bn):
        mean, var, weight, bias, eps, relu6 = bn
        return self.batch_norm_forward_eval(y, mean, var, weight, bias, eps, relu6=relu6)

    # ------------------------------------- fused: both gradients of a 1x1 convolution
    def pointwise_conv2d_backward(self, gy, x, w):
        r"""Both gradients of the 1x1 convolution; a faster set may take both from one pass over gy.

        ``(pointwise_conv2d_backward_input(gy, w), pointwise_conv2d_backward_weight(gy, x))``.

        Args:
            gy: $\partial L / \partial y$ (N, Co, H, W).
            x: The input (N, Ci, H, W).
            w: The weight (Co, Ci, 1, 1).

        Returns:
            ``(gx, gw)``.
        """
        return (self.pointwise_conv2d_backward_input(gy, w),
                self.pointwise_conv2d_backward_weight(gy, x))

    # ------------------------------------------- fused: a whole block, for inference
    def inverted_residual_eval(self, x, expand, depthwise, project, stride, residual):
        """MobileNetV2's inverted residual block in eval mode (paper section 3.3, Table 1).

            h = ReLU6(BN(We @ x))            1x1 expansion  (skipped when expand is None)
            h = ReLU6(BN(depthwise3x3(h)))   stride s, padding 1
            y = BN(Wp @ h)                   1x1 linear projection, no activation
            y = y + x                        when ``residual``

        Each bn is as in the class docstring (ReLU6 on the expansion and the depthwise step,
        not on the projection). A faster set computes the block band by band, so that the
        expanded tensor (t times the input) stays in cache.

        Args:
            x: The block's input (N, Ci, H, W).
            expand: None (expansion ratio 1) or ``(w (Ch, Ci, 1, 1), bn)``.
            depthwise: ``(w (Ch, 1, 3, 3), bn)``.
            project: ``(w (Co, Ch, 1, 1), bn)``.
            stride: 1 or 2.
            residual: Add x (needs stride 1 and Co = Ci).

        Returns:
            (N, Co, ceil(H / s), ceil(W / s)).
        """
        fn = "inverted_residual_eval"
        if stride not in (1, 2):
            raise ValueError(f"{fn}: stride must be 1 or 2, got {stride!r}")
        co, ci = project[0].shape[0], x.shape[1]
        if residual and (stride != 1 or co != ci):
            raise ValueError(f"{fn}: the residual needs stride 1 and Co = Ci, got stride "
                             f"{stride}, Ci {ci}, Co {co}")
        h = x if expand is None else self.pointwise_conv2d_bn_eval(x, *expand)
        h = self.depthwise_conv2d_bn_eval(h, depthwise[0], (stride, stride), (1, 1),
                                          depthwise[1])
        y = self.pointwise_conv2d_bn_eval(h, *project)
        if residual:
            y += x
        return y

    def prepare_inverted_residual_eval(self, expand, depthwise, project, stride, residual):
        """``inverted_residual_eval`` with its weights fixed: a function ``run(x) -> y``.

        For a model that does not change between calls (``tinymbv2.freeze``). Here ``run``
        calls ``inverted_residual_eval``; a faster set checks the weights and lays them out
        for its kernels once, and gives the same numbers.

        Args:
            expand: None (expansion ratio 1) or ``(w (Ch, Ci, 1, 1), bn)``.
            depthwise: ``(w (Ch, 1, 3, 3), bn)``.
            project: ``(w (Co, Ch, 1, 1), bn)``.
            stride: 1 or 2.
            residual: Add x (needs stride 1 and Co = Ci).

        Returns:
            ``run``: the block's input (N, Ci, H, W) to its output.
        """
        def run(x):
            return self.inverted_residual_eval(x, expand, depthwise, project, stride, residual)

        return run

    def prepare_stem_block_eval(self, stem, block, w, stride, padding, bn):
        """A network's first two steps as one: ``run(x) = block(stem(x))``.

        For a frozen model whose stem, a dense conv-BN-ReLU6 (``conv2d_bn_eval``), is
        followed by a block without expansion or residual (MobileNetV2's). Here ``run``
        calls the two; a faster set makes the stem's rows the block reads inside the block's
        pass, without the stem's map in memory, and gives the same numbers.

        Args:
            stem: The stem's step, a function of x (its weights bound).
            block: The block's step, from ``prepare_inverted_residual_eval``.
            w: The stem's weight (Cs, Ci, kh, kw).
            stride: The stem's (sh, sw).
            padding: The stem's (ph, pw).
            bn: The stem's BatchNorm, ``(mean, var, weight, bias, eps, relu6)``.

        Returns:
            ``run``: the images (N, Ci, H, W) to the block's output.
        """
        def run(x):
            return block(stem(x))

        return run

    def prepare_pointwise_conv2d_bn_eval(self, w, bn):
        """``pointwise_conv2d_bn_eval`` with its weights fixed: a function ``run(x) -> y``.

        As ``prepare_inverted_residual_eval``: here ``run`` calls the kernel; a faster set
        lays W out for its GEMM once.

        Args:
            w: The weight (Co, Ci, 1, 1).
            bn: ``(mean, var, weight, bias, eps, relu6)``, the BatchNorm in eval mode.

        Returns:
            ``run``: x (N, Ci, H, W) to y (N, Co, H, W).
        """
        def run(x):
            return self.pointwise_conv2d_bn_eval(x, w, bn)

        return run

    # ------------------------------------- fused: the depthwise stage, in training
    def depthwise_stage_forward_train(self, e, bn1, w_dw, stride, bn2, dilation=1):
        """The middle of an inverted residual block in training, BatchNorms on batch statistics.

            a = ReLU6(BN1(e))
            d = depthwise3x3(a)      stride 1 or 2, padding 1 (dilated: stride 1, padding d)
            h = ReLU6(BN2(d))

        A faster set that recomputes ``a`` in the backward instead of keeping it returns None
        in its place.

        Args:
            e: The input (N, C, H, W).
            bn1: ``(weight, bias, eps)`` of the first BatchNorm ((C,) arrays).
            w_dw: The depthwise weight (C, 1, 3, 3).
            stride: 1 or 2 (1 when dilated).
            bn2: ``(weight, bias, eps)`` of the second BatchNorm.
            dilation: The filter's dilation, an int (DeepLab's atrous blocks); the padding is
                the same.

        Returns:
            ``(h, a, d, mean1, invstd1, mean2, invstd2)``: h and d (N, C, Ho, Wo), a like e, and
            each BatchNorm's batch statistics as ``batch_norm_forward_train`` returns them.
        """
        (w1, b1, eps1), (w2, b2, eps2) = bn1, bn2
        a, mean1, invstd1 = self.batch_norm_forward_train(e, w1, b1, eps1, relu6=True)
        d = self.depthwise_conv2d_forward(a, w_dw, (stride, stride), (dilation, dilation), dilation)
        h, mean2, invstd2 = self.batch_norm_forward_train(d, w2, b2, eps2, relu6=True)
        return h, a, d, mean1, invstd1, mean2, invstd2

    def depthwise_stage_backward_train(self, gh, e, a, d, bn1, w_dw, stride, bn2, dilation=1):
        r"""The gradients of ``depthwise_stage_forward_train``, its three steps backwards.

        * $\partial L / \partial d$: BN2 and ReLU6 backward of $\partial L / \partial h$;
        * $\partial L / \partial a$ and $\partial L / \partial w_{dw}$: the depthwise backward;
        * $\partial L / \partial e$: BN1 and ReLU6 backward of $\partial L / \partial a$.

        Args:
            gh: $\partial L / \partial h$ (N, C, Ho, Wo).
            e: The forward's input.
            a: ``ReLU6(BN1(e))`` as the forward gave it (None: recomputed).
            d: The depthwise output as the forward gave it.
            bn1: ``(weight, bias, mean, invstd)`` of the first BatchNorm.
            w_dw: The depthwise weight (C, 1, 3, 3).
            stride: 1 or 2 (1 when dilated).
            bn2: ``(weight, bias, mean, invstd)`` of the second BatchNorm.
            dilation: The filter's dilation, an int.

        Returns:
            ``(dL/de, dL/dweight1, dL/dbias1, dL/dw_dw, dL/dweight2, dL/dbias2)``.
        """
        (w1, b1, mean1, invstd1), (w2, b2, mean2, invstd2) = bn1, bn2
        s, p = (stride, stride), (dilation, dilation)
        gd, gw2, gb2 = self.batch_norm_backward_train(gh, d, mean2, invstd2, w2, b2, relu6=True)
        ga = self.depthwise_conv2d_backward_input(gd, w_dw, a.shape, s, p, dilation)
        gw_dw = self.depthwise_conv2d_backward_weight(gd, a, w_dw.shape, s, p, dilation)
        ge, gw1, gb1 = self.batch_norm_backward_train(ga, e, mean1, invstd1, w1, b1, relu6=True)
        return ge, gw1, gb1, gw_dw, gw2, gb2

    # ------------------------------------------------------ fused: the RMSprop step
    def rmsprop_update(self, p, grad, square_avg, momentum_buffer, lr, alpha, eps,
                       weight_decay, momentum, grad_avg=None):
        """One RMSprop step on arrays, in place (PyTorch's form).

        The formulas are in [RMSprop][tinymbv2.optim.rmsprop.RMSprop]. Works on NumPy and
        CuPy arrays alike.

        Args:
            p: The parameter, updated in place.
            grad: Its gradient.
            square_avg: $v$, the running mean of the squared gradient, updated in place.
            momentum_buffer: The momentum buffer, updated in place; used when ``momentum > 0``.
            lr: The learning rate.
            alpha: The decay of ``square_avg``.
            eps: Added to the denominator (outside the square root).
            weight_decay: The L2 coefficient added to the gradient.
            momentum: The momentum factor (0: none).
            grad_avg: The running mean of the gradient, updated in place: the centered form;
                None: not centered.
        """
        xp = get_array_module(p)
        if weight_decay != 0:
            grad = grad + weight_decay * p
        v = square_avg
        v *= alpha
        v += (1.0 - alpha) * grad * grad
        if grad_avg is not None:
            c = grad_avg
            c += (grad - c) * (1.0 - alpha)  # torch's lerp
            denom = xp.sqrt(v - c * c) + eps
        else:
            denom = xp.sqrt(v) + eps
        if momentum > 0:
            buf = momentum_buffer
            buf *= momentum
            buf += grad / denom
            p -= lr * buf
        else:
            p -= lr * (grad / denom)

    # ------------------------------------------------------- fused: the SGD step
    def sgd_update(self, p, grad, momentum_buffer, lr, momentum, dampening, weight_decay,
                   nesterov, first=False):
        """One SGD step on arrays, in place (PyTorch's form).

        The formulas are in [SGD][tinymbv2.optim.sgd.SGD]. Works on NumPy and CuPy arrays
        alike.

        Args:
            p: The parameter, updated in place.
            grad: Its gradient.
            momentum_buffer: The velocity, updated in place; used when ``momentum != 0``.
            lr: The learning rate.
            momentum: The momentum factor (0: none).
            dampening: The dampening of the momentum.
            weight_decay: The L2 coefficient added to the gradient.
            nesterov: Nesterov momentum.
            first: The parameter's first step with momentum: the buffer is set to the
                gradient (no dampening), as PyTorch's.
        """
        if weight_decay != 0:
            grad = grad + weight_decay * p
        if momentum != 0:
            buf = momentum_buffer
            if first:
                buf[...] = grad
            else:
                buf *= momentum
                buf += (1.0 - dampening) * grad
            grad = grad + momentum * buf if nesterov else buf
        p -= lr * grad

    # ------------------------------------------------- int8 inference (int8_reference.py)
    # ONNX QLinearConv and onnxruntime's QGemm, requantized as onnxruntime does: the readable
    # NumPy is in kernels/int8_reference.py (why a module of its own: its docstring)
    qlinear_conv2d = staticmethod(int8_reference.qlinear_conv2d)
    prepare_qlinear_conv2d = staticmethod(int8_reference.prepare_qlinear_conv2d)
    qgemm = staticmethod(int8_reference.qgemm)
    requantize = staticmethod(int8_reference.requantize)
    quantize_uint8 = staticmethod(int8_reference.quantize_uint8)
    qlinear_add = staticmethod(int8_reference.qlinear_add)
    dequantize_global_average_pool = staticmethod(int8_reference.dequantize_global_average_pool)

    @staticmethod
    def prepare_qlinear_block(convs):
        """A whole inverted residual block as one kernel, where a set has one: here None
        (the block's layers run one by one, each ``prepare_qlinear_conv2d``'s).

        Args:
            convs: The block's prepared convolutions, in order.

        Returns:
            None.
        """
        return None

    # --------------------------------------------- fused: softmax cross-entropy
    @staticmethod
    def cross_entropy_forward(z, target, weight, label_smoothing, ignore_index):
        r"""Softmax cross-entropy of every row, and the softmax that its gradient needs.

        Rows $i$ are the samples of (N, K) logits or the pixels of (N, K, H, W) ones (the
        class axis is axis 1). With $\log p = z - \max_k z - \log \sum_k e^{z_k - \max z}$
        per row, class weights $w$ (ones for None), $m_i = [t_i \ne \text{ignore}]$ and
        label smoothing $\epsilon$:

        $$\text{loss}_i = m_i \Big[(1 - \epsilon)\, w_{t_i} (-\log p_{i,t_i})
          + \frac{\epsilon}{K} \sum_k w_k (-\log p_{ik})\Big].$$

        Works on NumPy and CuPy arrays alike.

        Args:
            z: The logits (N, K) or (N, K, H, W).
            target: int64 class indices in [0, K) or ``ignore_index``, (N,) or (N, H, W).
            weight: The (K,) class weights of z's dtype, or None.
            label_smoothing: $\epsilon$.
            ignore_index: The target value that counts nowhere.

        Returns:
            ``(losses, w_t, p)``: the losses of the target's shape (0 where ignored),
            $w_{t_i} m_i$ of the same shape (the weighted mean divides by its sum), and the
            softmax p of z's shape, which ``cross_entropy_backward`` takes.
        """
        xp = get_array_module(z)
        k = z.shape[1]
        shifted = z - z.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        keep = target != ignore_index
        t = xp.where(keep, target, 0)
        w = xp.ones(k, z.dtype) if weight is None else weight
        w_t = w[t] * keep
        losses = -(1.0 - label_smoothing) * w_t * xp.take_along_axis(logp, t[:, None], axis=1)[:, 0]
        if label_smoothing:
            smooth = (logp * _per_class(w, z.ndim)).sum(axis=1)
            losses = losses - (label_smoothing / k) * keep * smooth
        return losses, w_t, xp.exp(logp)

    @staticmethod
    def cross_entropy_backward(p, target, weight, label_smoothing, ignore_index, scale):
        r"""Gradient of ``cross_entropy_forward``'s losses with respect to the logits.

        $\partial(-\log p_k) / \partial z_j = p_j - \delta_{jk}$ gives, for row $i$ scaled by
        $g_i$,

        $$\frac{\partial L}{\partial z_i} = g_i\, m_i \Big[(1 - \epsilon)\, w_{t_i}
          (p_i - e_{t_i}) + \frac{\epsilon}{K} \big(p_i \textstyle\sum_k w_k - w\big)\Big]$$

        (without weights or smoothing the classic $p - \text{onehot}(t)$).

        Args:
            p: The softmax the forward returned, (N, K) or (N, K, H, W).
            target: The forward's target.
            weight: The forward's class weights, or None.
            label_smoothing: $\epsilon$.
            ignore_index: As in the forward.
            scale: $g$: a number (one for every row: a ``"mean"`` or ``"sum"``) or an array
                of the target's shape (``"none"``'s upstream gradient).

        Returns:
            $\partial L / \partial z$, of p's shape.
        """
        xp = get_array_module(p)
        k, eps = p.shape[1], label_smoothing
        keep = target != ignore_index
        t = xp.where(keep, target, 0)
        w = xp.ones(k, p.dtype) if weight is None else weight
        a = ((1.0 - eps) * w[t] * keep * scale)[:, None]        # (N, 1, ...)
        if eps:
            b = ((eps / k) * keep * scale)[:, None]
            dz = p * (a + b * w.sum()) - b * _per_class(w, p.ndim)
        else:
            dz = p * a
        onehot = _per_class(xp.arange(k), p.ndim) == t[:, None]
        return dz - a * onehot
