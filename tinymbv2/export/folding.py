r"""BatchNorm folded into the convolution before it: one layer instead of two at inference.

In evaluation mode a BatchNorm is an affine map per channel with constants: its running
statistics $\mu$, $\sigma^2$ and its learned $\gamma$, $\beta$. A convolution before it is
linear, so the two compose into one convolution. Output channel $o$ of the conv is
$z_o = w_o * x + b_o$ (with $b_o = 0$ for a conv without bias); the BatchNorm gives

$$y_o = \frac{z_o - \mu_o}{\sqrt{\sigma_o^2 + \epsilon}}\,\gamma_o + \beta_o
      = s_o\,(w_o * x) + s_o\,(b_o - \mu_o) + \beta_o,
      \qquad s_o = \frac{\gamma_o}{\sqrt{\sigma_o^2 + \epsilon}},$$

which is the convolution with weight $w'_o = s_o\,w_o$ (every tap of output channel $o$
scaled by $s_o$) and bias $b'_o = s_o\,(b_o - \mu_o) + \beta_o$. Depthwise or dense, the
scale is per *output* channel, the weight's first axis, so grouping changes nothing.

The ONNX exporter writes the folded convolution when asked to (``fold=True``), and int8
quantization quantizes the folded weights: the weights the deployed network really has.
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..backend import to_device


def fold_bn(conv_weight, conv_bias, running_mean, running_var, gamma, beta, eps):
    r"""The weight and bias of a convolution with the BatchNorm after it folded in.

    $s = \gamma / \sqrt{\sigma^2 + \epsilon}$ per output channel;
    $w' = w\,s$ (broadcast over the weight's other axes), $b' = (b - \mu)\,s + \beta$.
    Computed in float64 and returned in the weight's dtype, so a float32 model loses only
    the last rounding.

    Args:
        conv_weight: The convolution's weight, (Co, Ci / groups, kh, kw).
        conv_bias: Its bias, (Co,), or None (a conv without bias: $b = 0$).
        running_mean: The BatchNorm's $\mu$, (Co,).
        running_var: Its $\sigma^2$, (Co,).
        gamma: Its weight $\gamma$, (Co,), or None (``affine=False``: 1).
        beta: Its bias $\beta$, (Co,), or None (0).
        eps: Its $\epsilon$.

    Returns:
        ``(weight, bias)``: (Co, Ci / groups, kh, kw) and (Co,), in ``conv_weight``'s dtype.

    Raises:
        ValueError: A statistic or parameter whose shape is not (Co,).
    """
    w = np.asarray(conv_weight)
    co = w.shape[0]
    ones, zeros = np.ones(co), np.zeros(co)
    given = {"conv_bias": zeros if conv_bias is None else conv_bias, "running_mean": running_mean,
             "running_var": running_var, "gamma": ones if gamma is None else gamma,
             "beta": zeros if beta is None else beta}
    arrays = {}
    for name, value in given.items():
        value = np.asarray(value, dtype=np.float64)
        if value.shape != (co,):
            raise ValueError(f"fold_bn: expected {name} of shape ({co},) for a weight of shape "
                             f"{w.shape}, got {value.shape}")
        arrays[name] = value
    scale = arrays["gamma"] / np.sqrt(arrays["running_var"] + float(eps))
    weight = w.astype(np.float64) * scale.reshape((co,) + (1,) * (w.ndim - 1))
    bias = (arrays["conv_bias"] - arrays["running_mean"]) * scale + arrays["beta"]
    return weight.astype(w.dtype), bias.astype(w.dtype)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, str, nn.BatchNorm2d]]:
    """Every Conv2d followed by a BatchNorm2d in the same Sequential: the pairs that fold.

    A pair is two consecutive children of a [Sequential][tinymbv2.nn.container.Sequential]
    (a ``Conv2dNormActivation``'s ``'0'`` and ``'1'``, an inverted residual block's
    projection and its BatchNorm), of exactly these types, with a BatchNorm that tracks
    running statistics (one without uses the batch's, which no constant folds). Only a
    Sequential runs its children in order, so only there does "followed by" hold.

    Args:
        model: The model.

    Returns:
        ``[(conv name, conv, bn name, bn), ...]`` in the model's order, the names its
        ``state_dict`` prefixes (``"features.0.0"``, ``"features.0.1"``).
    """
    order = {id(m): i for i, (_, m) in enumerate(model.named_modules())}
    pairs = []
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential) or isinstance(module, nn.ModuleList):
            continue
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d
                    and bn.running_mean is not None and bn.num_features == conv.out_channels):
                pairs.append((_join(prefix, conv_name), conv, _join(prefix, bn_name), bn))
    return sorted(pairs, key=lambda pair: order[id(pair[1])])  # a Sequential comes before its children


def fold_model(model: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """The folded weight and bias of every Conv2d + BatchNorm2d pair of ``model``.

    The model is not changed: what a deployment (an ONNX file, int8 weights) needs is
    returned, keyed by the conv's name. See
    [conv_bn_pairs][tinymbv2.export.folding.conv_bn_pairs] for which pairs fold and
    [fold_bn][tinymbv2.export.folding.fold_bn] for the arithmetic.

    Args:
        model: The model (its BatchNorms' running statistics are used, as in eval mode).

    Returns:
        ``{conv name: (weight, bias, bn name)}``.
    """
    folded = {}
    for conv_name, conv, bn_name, bn in conv_bn_pairs(model):
        weight, bias = fold_bn(host(conv.weight), host(conv.bias), host(bn.running_mean),
                               host(bn.running_var), host(bn.weight), host(bn.bias), bn.eps)
        folded[conv_name] = (weight, bias, bn_name)
    return folded


def host(tensor) -> np.ndarray | None:
    """The NumPy array of a parameter or buffer ``tensor`` (from the GPU if there); None: None."""
    return None if tensor is None else to_device(tensor.data, "cpu", "export")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
