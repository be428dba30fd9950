"""MobileNetV2's inverted residual block for inference, layer by layer, in any kernel set.

What :func:`tinymbv2.functional.inverted_residual_eval` runs on kernel sets that
have no fused block kernel (``reference``, ``cupy``), and what the numba set's
fused kernel (:mod:`.numba_block`) falls back to on small planes:

    h = ReLU6(BN(We @ x))            1x1 expansion  (skipped when expand is None)
    h = ReLU6(BN(depthwise3x3(h)))   stride s, padding 1
    y = BN(Wp @ h)                   1x1 linear projection, no activation
    y = y + x                        when ``residual``

each conv with its BatchNorm-eval fused in (the kernels' ``bn_eval``).
"""
from __future__ import annotations


def inverted_residual_eval_layered(k, x, expand, depthwise, project, stride, residual):
    """The block above with kernel set ``k``; arguments as ``inverted_residual_eval``
    (see :mod:`.numba_block`). x: (N, Ci, H, W) -> (N, Co, Ho, Wo)."""
    h = x if expand is None else k.pointwise_conv2d_forward(x, expand[0], bn_eval=expand[1])
    h = k.depthwise_conv2d_forward(h, depthwise[0], (stride, stride), (1, 1),
                                   bn_eval=depthwise[1])
    y = k.pointwise_conv2d_forward(h, project[0], bn_eval=project[1])
    if residual:
        y += x
    return y
