"""Reference kernels: convolution and BatchNorm in plain NumPy, written to be read.

This is the version the course teaches. Every function is vectorised NumPy
with no Python loop over pixels: a convolution loops only over the kh*kw
*taps* of its kernel, and each tap is one whole-array operation on a strided
slice of the zero-padded input.

The one picture behind all three convolution passes. For a tap (i, j) of the
kernel, output pixel (oh, ow) reads input pixel

    (oh*sh + i - ph,  ow*sw + j - pw)

so the set of input pixels that tap (i, j) touches, over all outputs, is the
strided slice ``xp[..., i : i + sh*(Ho-1) + 1 : sh, j : j + sw*(Wo-1) + 1 : sw]``
of the padded input ``xp`` -- a (Ho, Wo) "window". Then

* forward:         y  += w[i, j]   * window(xp)              (gather)
* backward-input:  window(gxp) += w[i, j] * gy               (scatter: send each
  output's gradient back along the same wire the forward read it through)
* backward-weight: gw[i, j] = sum over (n, oh, ow) of gy * window(xp)
  (the weight gradient *correlates the input with the output gradient*:
  dL/dw[i, j] = sum_p dL/dy[p] * dy[p]/dw[i, j] and dy[p]/dw[i, j] is the input
  pixel that tap (i, j) met at output p).

Why backward-input is a "full correlation with the flipped kernel": with
stride 1 the scatter above says gx[h] = sum_i gy[h - i + p] * w[i], which is
gy (zero-padded by k - 1 - p on each side) correlated with w reversed, i.e.
a "full" convolution. With stride s the same holds for gy with s - 1 zeros
inserted between its pixels (the "transposed convolution"). The scatter
form computes exactly that without building the dilated array.

**One class, the interface of every kernel set.** :class:`ReferenceKernels` defines
every kernel the differentiable ops call: the simple ones as plain NumPy, the fused ones
(a convolution with its BatchNorm for inference, the depthwise stage of a block in
training, a whole block for inference) as compositions of the simple ones through
``self``, and the RMSprop update, a few lines of array arithmetic that a fast set may run
as one pass. A faster set subclasses it and overrides what it speeds
up (``kernels/numba/``, ``kernels/cupy/``), as minitorch's ``FastOps`` subclasses its
``TensorOps``: whatever it does not override, it inherits, computed with its own
simple kernels. ``tinymbv2.kernels.kernels_for(x)`` returns the set for an array.

Shapes are NCHW. ``stride`` and ``padding`` are ``(sh, sw)`` / ``(ph, pw)``
(an int is taken for both). Every output has the dtype of the inputs
(float32 or float64; mixing them is a ``TypeError``, never a silent upcast)
and is a fresh C-contiguous array. Inputs may be non-contiguous.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .checks import (batch_norm_args, conv_geometry, grad_out_shape, matmul_args, pointwise_args,
                     pointwise_weight_args, relu6_bias, same_float_dtype)


# --------------------------------------------------------------------- helpers
def _pad(x, ph, pw):
    """Zero-pad the two spatial axes of an (N, C, H, W) array."""
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _window(xp, i, j, out_hw, stride):
    """The (N, C, Ho, Wo) view of padded ``xp`` that kernel tap (i, j) reads.

    ``window[n, c, oh, ow] = xp[n, c, oh*sh + i, ow*sw + j]``. A view, so
    ``_window(gxp, ...) += v`` writes into ``gxp``.
    """
    (ho, wo), (sh, sw) = out_hw, stride
    return xp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def _per_channel(v):
    """(C,) -> (1, C, 1, 1), so a per-channel vector broadcasts over N, H, W."""
    return v.reshape(1, -1, 1, 1)



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
    def conv2d_forward(x, w, stride, padding):
        """Dense 2-D cross-correlation (PyTorch's ``conv2d``, groups = 1, no bias).

        x: (N, Ci, H, W), w: (Co, Ci, kh, kw) -> y: (N, Co, Ho, Wo),

            y[n, o, oh, ow] = sum_{c, i, j} w[o, c, i, j] * xp[n, c, oh*sh + i, ow*sw + j]

        Per tap this is a matrix product: (Co, Ci) @ (Ci, Ho*Wo) for every image.
        """
        fn = "conv2d_forward"
        x, w = np.asarray(x), np.asarray(w)
        dtype = same_float_dtype(fn, x=x, w=w)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding)
        n, ci = x.shape[:2]
        co, _, kh, kw = w.shape
        xp = _pad(x, ph, pw)
        w_taps = w.transpose(2, 3, 0, 1)  # (kh, kw, Co, Ci): one (Co, Ci) matrix per tap
        y = np.zeros((n, co, ho * wo), dtype)
        for i in range(kh):
            for j in range(kw):
                patch = _window(xp, i, j, (ho, wo), stride).reshape(n, ci, ho * wo)
                y += np.matmul(w_taps[i, j], patch)  # (Co, Ci) @ (N, Ci, P) -> (N, Co, P)
        return y.reshape(n, co, ho, wo)

    @staticmethod
    def conv2d_backward_input(gy, w, x_shape, stride, padding):
        """Gradient of ``conv2d_forward`` with respect to x.

        gy: (N, Co, Ho, Wo), w: (Co, Ci, kh, kw) -> gx: ``x_shape`` = (N, Ci, H, W).
        The scatter of the forward: per tap, ``window(gxp) += w[:, :, i, j].T @ gy``,
        then the padding border is cut off (its gradient belongs to no input).
        Input rows/columns that no window reaches (when (H + 2ph - kh) is not a
        multiple of sh) keep gradient 0, as they should.
        """
        fn = "conv2d_backward_input"
        gy, w = np.asarray(gy), np.asarray(w)
        dtype = same_float_dtype(fn, gy=gy, w=w)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding)
        n, ci, h, wd = x_shape
        co, _, kh, kw = w.shape
        grad_out_shape(fn, gy.shape, (n, co, ho, wo))
        gy3 = gy.reshape(n, co, ho * wo)
        w_taps = w.transpose(2, 3, 1, 0)  # (kh, kw, Ci, Co): the transposed matrix per tap
        gxp = np.zeros((n, ci, h + 2 * ph, wd + 2 * pw), dtype)
        for i in range(kh):
            for j in range(kw):
                contribution = np.matmul(w_taps[i, j], gy3).reshape(n, ci, ho, wo)
                _window(gxp, i, j, (ho, wo), stride)[...] += contribution
        return np.ascontiguousarray(gxp[:, :, ph : ph + h, pw : pw + wd])

    @staticmethod
    def conv2d_backward_weight(gy, x, w_shape, stride, padding):
        """Gradient of ``conv2d_forward`` with respect to w.

        gy: (N, Co, Ho, Wo), x: (N, Ci, H, W) -> gw: ``w_shape`` = (Co, Ci, kh, kw),

            gw[o, c, i, j] = sum_{n, oh, ow} gy[n, o, oh, ow] * xp[n, c, oh*sh + i, ow*sw + j]

        i.e. the input correlated with the output gradient, one tap at a time.
        """
        fn = "conv2d_backward_weight"
        gy, x = np.asarray(gy), np.asarray(x)
        dtype = same_float_dtype(fn, gy=gy, x=x)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding)
        grad_out_shape(fn, gy.shape, (x.shape[0], w_shape[0], ho, wo))
        xp = _pad(x, ph, pw)
        gw = np.empty(w_shape, dtype)
        for i in range(w_shape[2]):
            for j in range(w_shape[3]):
                patch = _window(xp, i, j, (ho, wo), stride)
                # contract batch and output pixels: (N, Co, Ho, Wo) x (N, Ci, Ho, Wo) -> (Co, Ci)
                gw[:, :, i, j] = np.tensordot(gy, patch, axes=([0, 2, 3], [0, 2, 3]))
        return gw

    # -------------------------------------------------------- depthwise convolution
    @staticmethod
    def depthwise_conv2d_forward(x, w, stride, padding):
        """Depthwise convolution (groups = C): each channel has its own kh x kw filter.

        x: (N, C, H, W), w: (C, 1, kh, kw) -> y: (N, C, Ho, Wo),

            y[n, c, oh, ow] = sum_{i, j} w[c, 0, i, j] * xp[n, c, oh*sh + i, ow*sw + j]

        No sum over channels, so per tap it is an elementwise multiply-add
        (paper section 3.1: kh*kw*C*Ho*Wo multiply-adds instead of kh*kw*C*Co*Ho*Wo).
        """
        fn = "depthwise_conv2d_forward"
        x, w = np.asarray(x), np.asarray(w)
        dtype = same_float_dtype(fn, x=x, w=w)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding,
                                                   depthwise=True)
        n, c = x.shape[:2]
        xp = _pad(x, ph, pw)
        y = np.zeros((n, c, ho, wo), dtype)
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                y += _per_channel(w[:, 0, i, j]) * _window(xp, i, j, (ho, wo), stride)
        return y

    @staticmethod
    def depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding):
        """Gradient of ``depthwise_conv2d_forward`` with respect to x.

        gy: (N, C, Ho, Wo), w: (C, 1, kh, kw) -> gx: ``x_shape``.
        Scatter per tap: ``window(gxp) += w[c, 0, i, j] * gy``, then crop the padding.
        """
        fn = "depthwise_conv2d_backward_input"
        gy, w = np.asarray(gy), np.asarray(w)
        dtype = same_float_dtype(fn, gy=gy, w=w)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding,
                                                   depthwise=True)
        n, c, h, wd = x_shape
        grad_out_shape(fn, gy.shape, (n, c, ho, wo))
        gxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype)
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                _window(gxp, i, j, (ho, wo), stride)[...] += _per_channel(w[:, 0, i, j]) * gy
        return np.ascontiguousarray(gxp[:, :, ph : ph + h, pw : pw + wd])

    @staticmethod
    def depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding):
        """Gradient of ``depthwise_conv2d_forward`` with respect to w.

        gy: (N, C, Ho, Wo), x: (N, C, H, W) -> gw: ``w_shape`` = (C, 1, kh, kw),

            gw[c, 0, i, j] = sum_{n, oh, ow} gy[n, c, oh, ow] * xp[n, c, oh*sh + i, ow*sw + j]
        """
        fn = "depthwise_conv2d_backward_weight"
        gy, x = np.asarray(gy), np.asarray(x)
        dtype = same_float_dtype(fn, gy=gy, x=x)
        stride, (ph, pw), (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding,
                                                   depthwise=True)
        grad_out_shape(fn, gy.shape, (x.shape[0], x.shape[1], ho, wo))
        xp = _pad(x, ph, pw)
        gw = np.empty(w_shape, dtype)
        for i in range(w_shape[2]):
            for j in range(w_shape[3]):
                gw[:, 0, i, j] = np.sum(gy * _window(xp, i, j, (ho, wo), stride), axis=(0, 2, 3))
        return gw

    # -------------------------------------------------------- pointwise convolution
    @staticmethod
    def pointwise_conv2d_forward(x, w):
        """1x1 convolution: a matrix product over channels, done for every pixel at once.

        x: (N, Ci, H, W), w: (Co, Ci, 1, 1) -> y: (N, Co, H, W),
        ``y[n] = W @ x[n]`` with W = w as (Co, Ci) and x[n] as (Ci, H*W).
        The expansion and projection layers of the inverted residual block are
        these; they hold about 90% of MobileNetV2's multiply-adds.
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
        """Gradient of the 1x1 convolution with respect to x.

        gy: (N, Co, H, W), w: (Co, Ci, 1, 1) -> gx: (N, Ci, H, W), ``gx[n] = W.T @ gy[n]``.
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
        """Gradient of the 1x1 convolution with respect to w.

        gy: (N, Co, H, W), x: (N, Ci, H, W) -> gw: (Co, Ci, 1, 1),
        ``gw = sum_n gy[n] @ x[n].T`` (each pixel of each image is one sample).
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
    def batch_norm_forward_train(x, weight, bias, eps, relu6=False):
        """BatchNorm in training mode: normalise each channel by its batch statistics.

        x: (N, C, H, W), weight/bias: (C,) -> (y, mean, invstd), y like x, the others (C,).
        Over the M = N*H*W values of each channel (Ioffe & Szegedy 2015):

            mean = sum x / M,  var = sum (x - mean)^2 / M   (biased: this is what
            normalises; the caller keeps the *unbiased* var * M/(M-1) for running_var)
            invstd = 1 / sqrt(var + eps),  xhat = (x - mean) * invstd,
            y = weight * xhat + bias

        ``relu6=True`` also applies the ReLU6 that follows BatchNorm in MobileNetV2:
        y = min(max(y, 0), 6), in the same call (see ``batch_norm_backward_train``).
        """
        fn = "batch_norm_forward_train"
        x, weight, bias = np.asarray(x), np.asarray(weight), np.asarray(bias)
        same_float_dtype(fn, x=x, weight=weight, bias=bias)
        batch_norm_args(fn, x, train=True, weight=weight, bias=bias)
        axes = (0, 2, 3)
        mean = x.mean(axis=axes)
        var = ((x - _per_channel(mean)) ** 2).mean(axis=axes)
        invstd = 1.0 / np.sqrt(var + float(eps))
        xhat = (x - _per_channel(mean)) * _per_channel(invstd)
        y = xhat * _per_channel(weight) + _per_channel(bias)
        if relu6:
            y = np.clip(y, 0, 6)
        return np.ascontiguousarray(y), mean, invstd

    @staticmethod
    def batch_norm_backward_train(gy, x, mean, invstd, weight, bias=None, relu6=False):
        """Gradients of ``batch_norm_forward_train`` (x, weight and bias).

        gy, x: (N, C, H, W); mean, invstd, weight: (C,) -> (gx, gweight, gbias).
        y = weight * xhat + bias, so gbias = sum gy and gweight = sum gy * xhat.
        For gx remember that mean and var depend on every x of the channel:
        dxhat = weight * gy flows to x directly, through the mean (-mean(dxhat))
        and through the variance (-xhat * mean(dxhat * xhat)), giving

            gx = weight * invstd * (gy - gbias / M - xhat * gweight / M)

        (A gradient check through sum(y) would miss errors here: the input
        gradient of sum(BN(x)) is exactly zero. Check with a random gy.)

        ``relu6=True`` (the fused ReLU6, needs ``bias``): gy is the gradient of
        min(max(z, 0), 6) with z the BatchNorm output, so it first passes only where
        0 < z < 6 (PyTorch's choice at the kinks). z is recomputed from x by the
        forward's own expression: no mask has to be kept between the passes.
        """
        fn = "batch_norm_backward_train"
        bias = relu6_bias(fn, relu6, bias, weight)
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
        if relu6:
            z = xhat * _per_channel(weight) + _per_channel(bias)
            gy = gy * ((z > 0) & (z < 6))
        gbias = gy.sum(axis=axes)
        gweight = (gy * xhat).sum(axis=axes)
        gx = _per_channel(weight * invstd) * (gy - _per_channel(gbias / m)
                                              - xhat * _per_channel(gweight / m))
        return np.ascontiguousarray(gx), gweight, gbias

    @staticmethod
    def batch_norm_forward_eval(x, mean, var, weight, bias, eps, relu6=False):
        """BatchNorm in eval mode: normalise with stored (running) statistics.

        x: (N, C, H, W); mean, var, weight, bias: (C,) -> y like x,
        ``y = (x - mean) / sqrt(var + eps) * weight + bias`` -- a per-channel affine map,
        then clamped to [0, 6] when ``relu6``.
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
        """a (M, K) @ b (K, N) -> (M, N): the Linear layer's product, y = x W^T."""
        fn = "matmul"
        a, b = np.asarray(a), np.asarray(b)
        same_float_dtype(fn, a=a, b=b)
        matmul_args(fn, a, b)
        return np.ascontiguousarray(a @ b)

    # ---------------------------------------- fused: convolution + BatchNorm, inference
    def conv2d_bn_eval(self, x, w, stride, padding, bn):
        """``batch_norm_forward_eval(conv2d_forward(x, w, ...), *bn)``: a dense convolution
        followed by its BatchNorm in eval mode (and ReLU6 when ``bn[5]``), for inference.
        x: (N, Ci, H, W), w: (Co, Ci, kh, kw) -> (N, Co, Ho, Wo)."""
        return self._bn_eval(self.conv2d_forward(x, w, stride, padding), bn)

    def depthwise_conv2d_bn_eval(self, x, w, stride, padding, bn):
        """A depthwise convolution, then BatchNorm-eval (and ReLU6): as ``conv2d_bn_eval``.
        x: (N, C, H, W), w: (C, 1, kh, kw) -> (N, C, Ho, Wo)."""
        return self._bn_eval(self.depthwise_conv2d_forward(x, w, stride, padding), bn)

    def pointwise_conv2d_bn_eval(self, x, w, bn):
        """A 1x1 convolution, then BatchNorm-eval (and ReLU6): as ``conv2d_bn_eval``.
        x: (N, Ci, H, W), w: (Co, Ci, 1, 1) -> (N, Co, H, W)."""
        return self._bn_eval(self.pointwise_conv2d_forward(x, w), bn)

    def _bn_eval(self, y, bn):
        mean, var, weight, bias, eps, relu6 = bn
        return self.batch_norm_forward_eval(y, mean, var, weight, bias, eps, relu6=relu6)

    # ------------------------------------- fused: both gradients of a 1x1 convolution
    def pointwise_conv2d_backward(self, gy, x, w):
        """Both gradients of the 1x1 convolution: ``(gx, gw)`` =
        ``(pointwise_conv2d_backward_input(gy, w), pointwise_conv2d_backward_weight(gy, x))``.
        A faster set may take both from one pass over gy."""
        return (self.pointwise_conv2d_backward_input(gy, w),
                self.pointwise_conv2d_backward_weight(gy, x))

    # ------------------------------------------- fused: a whole block, for inference
    def inverted_residual_eval(self, x, expand, depthwise, project, stride, residual):
        """MobileNetV2's inverted residual block in eval mode (paper section 3.3, Table 1):

            h = ReLU6(BN(We @ x))            1x1 expansion  (skipped when expand is None)
            h = ReLU6(BN(depthwise3x3(h)))   stride s, padding 1
            y = BN(Wp @ h)                   1x1 linear projection, no activation
            y = y + x                        when ``residual``

        x: (N, Ci, H, W). ``expand``: None (expansion ratio 1) or (w (Ch, Ci, 1, 1), bn);
        ``depthwise``: (w (Ch, 1, 3, 3), bn); ``project``: (w (Co, Ch, 1, 1), bn); each bn
        as in the class docstring (ReLU6 on expansion and depthwise, not on the
        projection). ``stride``: 1 or 2; ``residual``: add x (needs stride 1 and Co = Ci).
        Returns (N, Co, ceil(H/s), ceil(W/s)). A faster set computes it band by band,
        so that the expanded tensor (t times the input) stays in cache.
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

    # ------------------------------------- fused: the depthwise stage, in training
    def depthwise_stage_forward_train(self, e, bn1, w_dw, stride, bn2):
        """The middle of an inverted residual block in training (both BatchNorms on batch
        statistics):

            a = ReLU6(BN1(e)),  d = depthwise3x3(a) (stride 1 or 2, padding 1),  h = ReLU6(BN2(d))

        e: (N, C, H, W); bn1, bn2: (weight, bias, eps) of the two BatchNorms ((C,) arrays);
        w_dw: (C, 1, 3, 3). Returns ``(h, a, d, mean1, invstd1, mean2, invstd2)``: h and d
        (N, C, Ho, Wo), a like e, and each BatchNorm's batch statistics as
        ``batch_norm_forward_train`` returns them. A faster set that recomputes ``a`` in
        the backward instead of keeping it returns None in its place.
        """
        (w1, b1, eps1), (w2, b2, eps2) = bn1, bn2
        a, mean1, invstd1 = self.batch_norm_forward_train(e, w1, b1, eps1, relu6=True)
        d = self.depthwise_conv2d_forward(a, w_dw, (stride, stride), (1, 1))
        h, mean2, invstd2 = self.batch_norm_forward_train(d, w2, b2, eps2, relu6=True)
        return h, a, d, mean1, invstd1, mean2, invstd2

    def depthwise_stage_backward_train(self, gh, e, a, d, bn1, w_dw, stride, bn2):
        """The gradients of ``depthwise_stage_forward_train``, its three steps backwards:

            dL/dd = BN2 and ReLU6 backward of dL/dh,  dL/da, dL/dw_dw = depthwise backward,
            dL/de = BN1 and ReLU6 backward of dL/da.

        gh: dL/dh; e, a, d as the forward gave them; bn1, bn2: (weight, bias, mean,
        invstd) of the two BatchNorms. Returns ``(dL/de, dL/dweight1, dL/dbias1, dL/dw_dw,
        dL/dweight2, dL/dbias2)``.
        """
        (w1, b1, mean1, invstd1), (w2, b2, mean2, invstd2) = bn1, bn2
        s, p = (stride, stride), (1, 1)
        gd, gw2, gb2 = self.batch_norm_backward_train(gh, d, mean2, invstd2, w2, b2, relu6=True)
        ga = self.depthwise_conv2d_backward_input(gd, w_dw, a.shape, s, p)
        gw_dw = self.depthwise_conv2d_backward_weight(gd, a, w_dw.shape, s, p)
        ge, gw1, gb1 = self.batch_norm_backward_train(ga, e, mean1, invstd1, w1, b1, relu6=True)
        return ge, gw1, gb1, gw_dw, gw2, gb2

    # ------------------------------------------------------ fused: the RMSprop step
    def rmsprop_update(self, p, grad, square_avg, momentum_buffer, lr, alpha, eps,
                       weight_decay, momentum, grad_avg=None):
        """One RMSprop step on arrays, in place (PyTorch's form; the formulas are in
        :class:`tinymbv2.optim.RMSprop`). ``momentum_buffer`` is used when momentum > 0;
        ``grad_avg`` (the running mean of the gradient) makes it the centered form.
        Works on NumPy and CuPy arrays alike.
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
