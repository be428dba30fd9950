"""Fused ops: several layers of MobileNetV2 computed in one call, with the separate ops' numbers.

A framework's compiler fuses layers so that a tensor is read from memory once instead
of once per layer; [tinymbv2.fusion.fuse][] does that to a model by swapping recognised
layer patterns for these ops (the model itself stays plain, layer by layer). Each op
equals the composition of the separate ops it replaces (bit for bit, or to the last
bit or two of float rounding, as noted) and its readable version is that very
composition, in ``kernels/reference.py``:

* [conv2d_batch_norm_eval][tinymbv2.functional.fused.conv2d_batch_norm_eval]: a
  convolution and its BatchNorm in eval mode (and ReLU6), for inference: one pass over
  memory fewer per layer;
* [inverted_residual_eval][tinymbv2.functional.fused.inverted_residual_eval]: a whole
  inverted residual block for inference, which a fast kernel set computes band by band
  so that the expanded tensor (t times the block's input, the block's biggest) stays in
  cache;
* [depthwise_stage_train][tinymbv2.functional.fused.depthwise_stage_train]: BatchNorm +
  ReLU6, the 3x3 depthwise filter and BatchNorm + ReLU6 in training, which a fast kernel
  set computes channel by channel so that a channel's planes stay in cache through all
  three steps.

([batch_norm_relu6][tinymbv2.functional.batchnorm.batch_norm_relu6], BatchNorm and the
ReLU6 after it as one op, lives with BatchNorm.) The two inference ops record no graph:
they refuse to run while gradients are being recorded for an input that requires them.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Context, Function, Tensor, is_grad_enabled
from ..backend import get_array_module
from ..kernels import kernels_for
from .checks import check_same_device, check_same_dtype, check_tensor, pair
from .batchnorm import update_running_stats
from .conv import GroupedConv2d, check_conv_args, conv_dilation


# ------------------------------------------------ convolution + BatchNorm, inference
class ConvBatchNormEval(Function):
    """Inference: a convolution then BatchNorm-eval (+ ReLU6), in one kernel call.

    readable: ``kernels/reference.py``, ``ReferenceKernels.conv2d_bn_eval``,
    ``depthwise_conv2d_bn_eval``, ``pointwise_conv2d_bn_eval`` (each the convolution
    kernel, then ``batch_norm_forward_eval``). A dilated (atrous) convolution has no fused
    kernel: it runs the convolution's own kernel with its dilation, then the BatchNorm's.
    """

    @staticmethod
    def forward(ctx, x, w, stride, padding, groups, bn, dilation=(1, 1)):
        return conv_bn_eval_arrays(kernels_for(x), x, w, stride, padding, groups, bn, dilation)

    @staticmethod
    def backward(ctx, g):  # never reached: conv2d_batch_norm_eval refuses to record a graph
        raise RuntimeError("conv2d_batch_norm_eval has no backward (inference only)")


def conv_bn_eval_arrays(k, x, w, stride, padding, groups, bn, dilation=(1, 1)):
    """``ConvBatchNormEval``'s computation on arrays: the kernel set's fused kernel for the
    convolution's kind (pointwise, depthwise, dense), or, dilated or grouped, the
    convolution and then BatchNorm-eval. Also what ``tinymbv2.freeze`` runs.

    Args:
        k: The kernel set.
        x: The input (N, Ci, H, W), an array.
        w: The weight (Co, Ci / groups, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw).
        groups: The channel groups.
        bn: ``(mean, var, weight, bias, eps, relu6)``, arrays and numbers.
        dilation: (dh, dw).

    Returns:
        The output (N, Co, Ho, Wo).
    """
    ci, co, (kh, kw) = x.shape[1], w.shape[0], w.shape[2:]
    if dilation == (1, 1):
        if groups == 1 and (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0):
            return k.pointwise_conv2d_bn_eval(x, w, bn)
        if groups == ci == co:
            return k.depthwise_conv2d_bn_eval(x, w, stride, padding, bn)
        if groups == 1:
            return k.conv2d_bn_eval(x, w, stride, padding, bn)
    if groups == ci == co:
        y = k.depthwise_conv2d_forward(x, w, stride, padding, dilation)
    else:
        y = GroupedConv2d.forward(Context(), x, w, stride, padding, dilation, groups)
    mean, var, weight, bias, eps, relu6 = bn
    return k.batch_norm_forward_eval(y, mean, var, weight, bias, eps, relu6=relu6)


def conv2d_batch_norm_eval(x, weight, stride, padding, groups, running_mean, running_var,
                           bn_weight, bn_bias, eps=1e-5, relu6=False, dilation=1) -> Tensor:
    r"""Inference only: ``batch_norm(conv2d(x, weight))`` (and ``relu6``) in one call.

    The BatchNorm uses the running statistics.

    The separate ops' numbers, to the last bit or two of float rounding (the numba set
    multiplies big images in column blocks); one pass over memory fewer per layer. The
    arguments are those of [conv2d][tinymbv2.functional.conv.conv2d] (no convolution bias)
    and of [batch_norm][tinymbv2.functional.batchnorm.batch_norm] in eval mode.

    Args:
        x: The input (N, Ci, H, W).
        weight: The convolution's weight (Co, Ci / groups, kh, kw).
        stride: An int or an (h, w) pair.
        padding: An int or an (h, w) pair.
        groups: The convolution's channel groups.
        running_mean: The BatchNorm's running mean (C,), an array or Tensor.
        running_var: The BatchNorm's running variance (C,).
        bn_weight: $\gamma$, a Tensor (Co,).
        bn_bias: $\beta$, a Tensor (Co,).
        eps: $\epsilon$, added to the variance.
        relu6: Clamp the output to [0, 6].
        dilation: The convolution's dilation, an int or an (h, w) pair.

    Returns:
        The output (N, Co, Ho, Wo).

    Raises:
        RuntimeError: Gradients are being recorded for an input that requires them.
        ValueError: The convolution's arguments do not fit.
    """
    fn = "conv2d_batch_norm_eval"
    stride, padding = pair(stride, "stride", fn), pair(padding, "padding", fn)
    check_tensor(weight, fn, "weight", ndim=4)
    dilation = conv_dilation(dilation, weight.shape[2:], fn)
    check_conv_args(x, weight, None, stride, padding, groups, fn=fn, dilation=dilation)
    if is_grad_enabled() and any(t.requires_grad for t in (x, weight, bn_weight, bn_bias)):
        raise RuntimeError(f"{fn}: inference only, it records no graph; call it under "
                           "tinymbv2.no_grad() (or use conv2d and batch_norm to train)")
    xp = get_array_module(x.data)
    bn = (xp.asarray(running_mean, dtype=x.dtype), xp.asarray(running_var, dtype=x.dtype),
          bn_weight.data, bn_bias.data, eps, relu6)
    return ConvBatchNormEval.apply(x, weight, stride, padding, groups, bn, dilation)


# --------------------------------------------------- a whole block, for inference
class InvertedResidualEval(Function):
    """Inference only: MobileNetV2's inverted residual block in one kernel call.

    readable: ``kernels/reference.py``, ``ReferenceKernels.inverted_residual_eval``
    (the block's layers one after the other).
    """

    @staticmethod
    def forward(ctx, x, expand, depthwise, project, stride, residual):
        return kernels_for(x).inverted_residual_eval(x, expand, depthwise, project, stride,
                                                     residual)

    @staticmethod
    def backward(ctx, g):  # never reached: inverted_residual_eval refuses to record a graph
        raise RuntimeError("inverted_residual_eval has no backward (inference only)")


def inverted_residual_eval(x, expand, depthwise, project, stride, residual) -> Tensor:
    """Inference only: an inverted residual block (paper section 3.3, Table 1) in one op.

        h = ReLU6(BN(conv1x1(x)))        expansion to t * Ci channels (absent when t = 1)
        h = ReLU6(BN(depthwise3x3(h)))   stride s, padding 1
        y = BN(conv1x1(h))               linear projection to Co channels
        y = x + y                        when ``residual``

    with every BatchNorm in eval mode (running statistics). Each ``bn`` below is
    ``(running_mean, running_var, weight, bias, eps, relu6)`` with arrays or Tensors (ReLU6 on
    the expansion and the depthwise step, not on the projection, in MobileNetV2). The
    result is the separate ops' numbers up to float rounding.

    Args:
        x: The block's input (N, Ci, H, W).
        expand: None (t = 1), or ``(weight (Ch, Ci, 1, 1), bn)``.
        depthwise: ``(weight (Ch, 1, 3, 3), bn)``.
        project: ``(weight (Co, Ch, 1, 1), bn)``.
        stride: 1 or 2.
        residual: Add ``x`` (needs stride 1 and Co = Ci).

    Returns:
        The output (N, Co, ceil(H / s), ceil(W / s)).

    Raises:
        RuntimeError: Gradients are being recorded for an input that requires them.
        ValueError: A weight of another shape, or a stride other than 1 or 2.
    """
    fn = "inverted_residual_eval"
    check_tensor(x, fn, "x", 4)
    parts = [p for p in (expand, depthwise, project) if p is not None]
    tensors = [x] + [p[0] for p in parts] + [a for p in parts for a in p[1][:4]]
    if is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors):
        raise RuntimeError(f"{fn}: inference only, it records no graph; call it under "
                           "tinymbv2.no_grad() (or run the block's layers to train)")
    xp = get_array_module(x.data)

    def layer(part):
        if part is None:
            return None
        weight, bn = part
        mean, var, gamma, beta, eps, relu6 = bn
        arrays = (xp.asarray(_data(a), dtype=x.dtype) for a in (mean, var, gamma, beta))
        return _data(weight), (*arrays, eps, relu6)

    return InvertedResidualEval.apply(x, layer(expand), layer(depthwise), layer(project),
                                      stride, residual)


def _data(a):
    return a.data if isinstance(a, Tensor) else a


# ------------------------------------------------ the depthwise stage, in training
class DepthwiseStageTrain(Function):
    """BN1 + ReLU6, depthwise 3x3, BN2 + ReLU6 in training, one kernel call per direction.

    readable: ``kernels/reference.py``, ``ReferenceKernels.depthwise_stage_forward_train``,
    ``depthwise_stage_backward_train`` (the three simple kernels each way).
    """

    @staticmethod
    def forward(ctx, e, w1, b1, w_dw, w2, b2, stride, eps1, eps2, stats1, stats2, dilation=1):
        k = kernels_for(e)
        h, a, d, m1, i1, m2, i2 = k.depthwise_stage_forward_train(e, (w1, b1, eps1), w_dw,
                                                                  stride, (w2, b2, eps2), dilation)
        ctx.save_for_backward(e, a, d, w1, b1, m1, i1, w_dw, w2, b2, m2, i2)
        ctx.kernels, ctx.stride, ctx.dilation = k, stride, dilation
        stats1.update(mean=m1, invstd=i1)  # for the running statistics
        stats2.update(mean=m2, invstd=i2)
        return h

    @staticmethod
    def backward(ctx, g):
        e, a, d, w1, b1, m1, i1, w_dw, w2, b2, m2, i2 = ctx.saved_tensors
        grads = ctx.kernels.depthwise_stage_backward_train(g, e, a, d, (w1, b1, m1, i1), w_dw,
                                                           ctx.stride, (w2, b2, m2, i2),
                                                           ctx.dilation)
        return (*grads, None, None, None, None, None)


def depthwise_stage_train(e, norm1, w_dw, stride, norm2, dilation=1) -> Tensor:
    r"""Training: BN1 + ReLU6, depthwise 3x3, BN2 + ReLU6 as one op, in one kernel call per pass.

    $h = \text{relu6}(\text{BN}_2(\text{depthwise3x3}(\text{relu6}(\text{BN}_1(e)))))$, with both
    BatchNorms in training mode. The middle of an inverted residual block: $e$ is the
    expansion's convolution output (for a block without expansion, the previous layer's).
    The same values and gradients as ``batch_norm_relu6``, ``conv2d`` (groups = C,
    padding 1, or padding and dilation d for DeepLab's atrous blocks) and
    ``batch_norm_relu6``, and the running statistics move as theirs do.
    The backward, with $d$ the depthwise output and $a$ its input:

    * $\partial L / \partial d$: BN2 and ReLU6 backward of $\partial L / \partial h$;
    * $\partial L / \partial a$ and $\partial L / \partial w$: depthwise backward of
      $\partial L / \partial d$;
    * $\partial L / \partial e$: BN1 and ReLU6 backward of $\partial L / \partial a$.

    Args:
        e: The input (N, C, H, W).
        norm1: The first BatchNorm, ``(running_mean, running_var, weight, bias, momentum,
            eps)``: weight and bias Tensors (C,), the running statistics arrays (C,) updated
            in place as ``F.batch_norm(training=True)`` does, or both None.
        w_dw: The depthwise weight (C, 1, 3, 3); padding 1, or the dilation.
        stride: 1 or 2; 1 when dilated.
        norm2: The second BatchNorm, as ``norm1``.
        dilation: The depthwise filter's dilation d, an int: its taps d pixels apart, and
            padding d, so that the plane keeps its size.

    Returns:
        h (N, C, ceil(H / s), ceil(W / s)).

    Raises:
        ValueError: A shape that does not fit, a stride other than 1 or 2, a dilation that
            is not a positive int or comes with stride 2, one running statistic without the
            other, or a single value per channel.
    """
    fn = "depthwise_stage_train"
    check_tensor(e, fn, "input", ndim=4)
    n, c, hi, wi = e.shape
    check_tensor(w_dw, fn, "depthwise weight", ndim=4)
    if tuple(w_dw.shape) != (c, 1, 3, 3):
        raise ValueError(f"{fn}: expected depthwise weight of shape ({c}, 1, 3, 3), "
                         f"got {tuple(w_dw.shape)}")
    if stride not in (1, 2):
        raise ValueError(f"{fn}: expected stride 1 or 2, got {stride!r}")
    if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 1:
        raise ValueError(f"{fn}: expected dilation a positive int, got {dilation!r}")
    if dilation > 1 and stride != 1:
        raise ValueError(f"{fn}: expected stride 1 with dilation {dilation}, got stride {stride}")
    ho, wo = (hi - 1) // stride + 1, (wi - 1) // stride + 1
    if n * hi * wi <= 1 or n * ho * wo <= 1:
        raise ValueError(f"{fn}: expected more than 1 value per channel when training, "
                         f"got input {e.shape}")
    for which, norm in (("norm1", norm1), ("norm2", norm2)):
        running_mean, running_var, weight, bias, _, _ = norm
        for name, t in ((f"{which} weight", weight), (f"{which} bias", bias)):
            check_tensor(t, fn, name, ndim=1)
            if t.shape != (c,):
                raise ValueError(f"{fn}: expected {name} of shape ({c},), got {t.shape}")
        if (running_mean is None) != (running_var is None):
            raise ValueError(f"{fn}: expected both {which} running statistics, or neither")
        check_same_device(fn, input=e, weight=weight, running_mean=running_mean)
    check_same_dtype(fn, input=e, depthwise_weight=w_dw, norm1_weight=norm1[2],
                     norm1_bias=norm1[3], norm2_weight=norm2[2], norm2_bias=norm2[3])
    check_same_device(fn, input=e, depthwise_weight=w_dw)

    stats1, stats2 = {}, {}
    h = DepthwiseStageTrain.apply(e, norm1[2], norm1[3], w_dw, norm2[2], norm2[3], stride,
                                  norm1[5], norm2[5], stats1, stats2, dilation=int(dilation))
    for (running_mean, running_var, _, _, momentum, eps), stats, m in (
            (norm1, stats1, n * hi * wi), (norm2, stats2, n * ho * wo)):
        if running_mean is not None:
            update_running_stats(running_mean, running_var, stats, eps, momentum, m)
    return h
