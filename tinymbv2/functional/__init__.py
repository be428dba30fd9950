"""Differentiable operations, PyTorch's ``torch.nn.functional`` (import as ``F``).

Each op is a :class:`~tinymbv2.autograd.Function` with its forward and its
hand-derived backward side by side; the heavy ones call the active kernel set.
"""
from .basic import (  # noqa: F401
    add, clamp, div, exp, flatten, getitem, log, matmul, mean, mul, neg, pow, relu,
    reshape, sub, sum, transpose,
)
from .blocks import inverted_residual_eval  # noqa: F401
from .batchnorm import batch_norm, batch_norm_relu6  # noqa: F401
from .conv import conv2d, conv2d_batch_norm_eval  # noqa: F401
from .depthwise_stage import depthwise_stage_train  # noqa: F401
from .layers import adaptive_avg_pool2d, dropout, linear, relu6  # noqa: F401
from .losses import cross_entropy, dice_loss, focal_loss, l2_penalty, log_softmax, softmax  # noqa: F401
