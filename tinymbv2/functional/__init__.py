"""Differentiable operations, PyTorch's ``torch.nn.functional`` (import as ``F``).

Each op is a [Function][tinymbv2.autograd.Function] with its forward and its
hand-derived backward side by side; the heavy ones call the active kernel set
([kernels_for][tinymbv2.kernels.kernels_for]), and each Function's docstring names its
readable kernel in ``kernels/reference.py``. The fused ops
([tinymbv2.functional.fused][]) are what [tinymbv2.fusion.fuse][] swaps recognised layer
patterns for.
"""
from .basic import (  # noqa: F401
    add, cat, clamp, div, exp, flatten, getitem, log, matmul, mean, mul, neg, pow, relu,
    reshape, sigmoid, sub, sum, transpose,
)
from .batchnorm import batch_norm, batch_norm_relu, batch_norm_relu6  # noqa: F401
from .conv import conv2d  # noqa: F401
from .detection_losses import sigmoid_focal_loss, smooth_l1_loss  # noqa: F401
from .fused import conv2d_batch_norm_eval, depthwise_stage_train, inverted_residual_eval  # noqa: F401
from .resizing import interpolate  # noqa: F401
from .layers import adaptive_avg_pool2d, dropout, linear, relu6  # noqa: F401
from .losses import (ce_dice_loss, cross_entropy, dice_loss, focal_loss, l2_penalty, log_softmax,  # noqa: F401
                     multi_margin_loss, softmax)
