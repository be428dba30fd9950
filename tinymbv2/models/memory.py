r"""Memory-efficient inference, paper section 5.1.

A bottleneck block computes $F(x) = B(N(A(x)))$ where $A$ is the 1x1 expansion
(with its BN and ReLU6), $N$ the per-channel part (depthwise 3x3, BN, ReLU6) and
$B$ the linear 1x1 projection. $A$ and $N$ act on each hidden channel separately
and $B$ is linear, so splitting the hidden channels into $m$ slices gives exactly

$$
B_{conv}(h) = \sum_i W_p[:, \text{slice}_i]\, h[\text{slice}_i] \quad (h = N(A(x))),
\qquad F(x) = \text{BN}_p\Big(\sum_i B_i(N(A_i(x)))\Big)
$$

(plus $x$ for a residual block), with the projection's BN applied once, after the sum.
Only one slice of the wide hidden tensor (t times the block's input channels) is alive
at a time, so the peak activation memory falls roughly $m$-fold inside the expanded
blocks, while the multiply-adds are unchanged. The paper suggests $m$ = 2..5; its
Table 3 shows MobileNetV2's peak is set by these expanded tensors.

In evaluation mode every BN is a fixed per-channel affine map, so slicing its
statistics along with the channels is exact.
"""
from __future__ import annotations

import numbers

from .. import functional as F
from ..autograd import Tensor, no_grad
from .mobilenetv2 import InvertedResidual, MobileNetV2


def _conv_bn_relu6_slice(x, layer, sl, groups=1):
    """ReLU6(BN(conv(x))) of a Conv2dNormActivation for its output channels ``sl`` only,
    BatchNorm in eval mode: -> (N, len(sl), H', W')."""
    conv, bn = layer[0], layer[1]
    h = F.conv2d(x, Tensor(conv.weight.data[sl]), None, conv.stride, conv.padding,
                 conv.dilation, groups)
    h = F.batch_norm(h, bn.running_mean.data[sl], bn.running_var.data[sl],
                     Tensor(bn.weight.data[sl]), Tensor(bn.bias.data[sl]), training=False,
                     eps=bn.eps)
    return F.relu6(h)


def chunked_block(block: InvertedResidual, x: Tensor, chunks: int) -> Tensor:
    """One inverted residual block with its hidden channels computed in ``chunks`` slices.

    Args:
        block: The [InvertedResidual][tinymbv2.models.mobilenetv2.InvertedResidual], in
            eval mode.
        x: The input (N, inp, H, W).
        chunks: The number of hidden-channel slices.

    Returns:
        (N, oup, H / s, W / s), equal to ``block(x)`` in eval mode.

    Raises:
        ValueError: A block of the Figure 6 ablations (a ReLU6 in the bottleneck or the
            shortcut between expansions), which this does not cover.
    """
    if block.bottleneck_activation is not None or block.shortcut == "expansion":
        raise ValueError("chunked_block: expected the paper's block (linear bottleneck, "
                         f"shortcut between bottlenecks), got {block.extra_repr()}")
    layers = list(block.conv)  # [expand,] depthwise, project conv, project BN
    expand = layers[0] if len(layers) == 4 else None
    depthwise, project, project_bn = layers[-3:]
    hidden = block.hidden_dim
    m = min(chunks, hidden)
    bounds = [hidden * i // m for i in range(m + 1)]
    acc = None
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sl = slice(lo, hi)
        # one name, reassigned step by step, so at most two slice-sized arrays are alive
        if expand is not None:  # A_i: the rows lo:hi of the 1x1 expansion, its BN and ReLU6
            h = _conv_bn_relu6_slice(x, expand, sl)
        else:  # t = 1: the hidden channels are the input's
            h = Tensor(x.data[:, sl])
        # N: depthwise, so its channels split like everything else
        h = _conv_bn_relu6_slice(h, depthwise, sl, groups=hi - lo)
        y = F.conv2d(h, Tensor(project.weight.data[:, sl]))  # B_i: columns lo:hi
        del h  # the slice dies here, before the next one is made
        if acc is None:
            acc = y
        else:
            acc.data += y.data  # in place: no second accumulator alive
        del y
    out = project_bn(acc)
    return x + out if block.use_res_connect else out


def memory_efficient_inference(model: MobileNetV2, x, chunks: int = 4) -> Tensor:
    """Eval-mode logits of ``model`` with every block's expansion computed in slices.

    Runs under ``no_grad``; the model's train/eval mode is restored.

    Args:
        model: A [MobileNetV2][tinymbv2.models.mobilenetv2.MobileNetV2].
        x: The images (N, C, H, W), a Tensor or an array of the model's dtype.
        chunks: The number of hidden-channel slices per block (>= 1; clipped to the block's
            width).

    Returns:
        The logits (N, num_classes), equal to ``model.eval()(x)`` up to rounding.

    Raises:
        TypeError: ``model`` is not a MobileNetV2.
        ValueError: ``chunks < 1``.
    """
    if not isinstance(model, MobileNetV2):
        raise TypeError(
            f"memory_efficient_inference: expected a MobileNetV2, got {type(model).__name__}"
        )
    if isinstance(chunks, bool) or not isinstance(chunks, numbers.Integral) or chunks < 1:
        raise ValueError(f"memory_efficient_inference: expected chunks >= 1, got {chunks!r}")
    if not isinstance(x, Tensor):
        x = Tensor(x)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            h = x
            for layer in model.features:
                if isinstance(layer, InvertedResidual):
                    if h.ndim != 4 or h.shape[1] != layer.inp:
                        layer.conv(h)  # raises the layer's own clear error
                    h = chunked_block(layer, h, int(chunks))
                else:
                    h = layer(h)
            return model.classifier(model.flatten(model.pool(h)))
    finally:
        model.train(was_training)
