"""The depthwise stage of an inverted residual block, in training, as one op.

Between its two 1x1 convolutions a MobileNetV2 block runs, on the expanded tensor e
(for block 1, which has no expansion, on the stem's conv output),

    a = ReLU6(BN1(e))         (N, C, H, W)
    d = depthwise3x3(a)       stride s, padding 1 -> (N, C, Ho, Wo)
    h = ReLU6(BN2(d))

with both BatchNorms in training mode (batch statistics; the running statistics move
as :func:`~tinymbv2.functional.batch_norm` moves them). As one op the kernel set may
run it channel by channel, each channel's planes read from memory once and kept in
cache through all three steps, and never store ``a`` (the backward recomputes it from
e): the numba set does so on the planes it keeps NCHW (:mod:`tinymbv2.kernels.numba_stage`),
with the bits of the three separate ops. Elsewhere -- the other kernel sets, small
planes -- it is the three ops one after the other. The gradients are those of the
three ops (the tests compare both paths with PyTorch):

    dL/dd = BN2 and ReLU6 backward of dL/dh,   dL/da, dL/dw = depthwise backward of dL/dd,
    dL/de = BN1 and ReLU6 backward of dL/da.
"""
from __future__ import annotations

from ..autograd import Function, Tensor
from ..backend import kernels_for
from ._util import check_same_device, check_same_dtype, check_tensor
from .batchnorm import batch_norm_relu6, update_running_stats
from .conv import conv2d


class DepthwiseStageTrain(Function):
    """The stage in one kernel call per direction (kernel sets with ``stage_supported``)."""

    @staticmethod
    def forward(ctx, e, w1, b1, w_dw, w2, b2, stride, eps1, eps2, stats1, stats2):
        k = kernels_for(e)
        h, d, m1, i1, m2, i2 = k.stage_forward_train(e, (w1, b1, eps1), w_dw, stride,
                                                     (w2, b2, eps2))
        ctx.save_for_backward(e, d, w1, b1, m1, i1, w_dw, w2, b2, m2, i2)
        ctx.kernels, ctx.stride = k, stride
        stats1.update(mean=m1, invstd=i1)  # for the running statistics
        stats2.update(mean=m2, invstd=i2)
        return h

    @staticmethod
    def backward(ctx, g):
        e, d, w1, b1, m1, i1, w_dw, w2, b2, m2, i2 = ctx.saved_tensors
        grads = ctx.kernels.stage_backward_train(g, e, d, (w1, b1, m1, i1), w_dw, ctx.stride,
                                                 (w2, b2, m2, i2))
        return (*grads, None, None, None, None, None)


def depthwise_stage_train(e, norm1, w_dw, stride, norm2) -> Tensor:
    """relu6(BN2(depthwise3x3(relu6(BN1(e))))) with both BatchNorms in training mode.

    e: Tensor (N, C, H, W); w_dw: Tensor (C, 1, 3, 3), padding 1, ``stride`` 1 or 2;
    norm1, norm2: ``(running_mean, running_var, weight, bias, momentum, eps)`` of the
    two BatchNorms, weight and bias Tensors (C,), the running statistics arrays (C,)
    updated in place as ``F.batch_norm(training=True)`` does, or both None.
    Returns h (N, C, ceil(H/s), ceil(W/s)).
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

    k = kernels_for(e.data)
    supported = getattr(k, "stage_supported", None)
    if supported is None or not supported(e.data, w_dw.data, stride):  # the three ops
        (rm1, rv1, w1, b1, momentum1, eps1), (rm2, rv2, w2, b2, momentum2, eps2) = norm1, norm2
        a = batch_norm_relu6(e, rm1, rv1, w1, b1, True, momentum1, eps1)
        d = conv2d(a, w_dw, None, stride, 1, c)
        return batch_norm_relu6(d, rm2, rv2, w2, b2, True, momentum2, eps2)
    stats1, stats2 = {}, {}
    h = DepthwiseStageTrain.apply(e, norm1[2], norm1[3], w_dw, norm2[2], norm2[3], stride,
                                  norm1[5], norm2[5], stats1, stats2)
    for (running_mean, running_var, _, _, momentum, eps), stats, m in (
            (norm1, stats1, n * hi * wi), (norm2, stats2, n * ho * wo)):
        if running_mean is not None:
            update_running_stats(running_mean, running_var, stats, eps, momentum, m)
    return h
