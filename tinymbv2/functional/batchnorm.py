r"""Batch normalisation (Ioffe & Szegedy 2015) over (N, H, W) for each channel.

Training mode, with $M = N H W$ values per channel:

$$
\mu = \text{mean}(x), \qquad \sigma^2 = \text{mean}((x - \mu)^2) \quad \text{(the biased variance)}
$$

$$
\hat{x} = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad y = \gamma \hat{x} + \beta
$$

and the running statistics move towards the batch's (PyTorch's convention), with the
unbiased variance:

$$
\text{running_mean} \leftarrow (1 - m)\,\text{running_mean} + m\,\mu
$$

$$
\text{running_var} \leftarrow (1 - m)\,\text{running_var} + m\,\sigma^2 \frac{M}{M - 1}
$$

for momentum $m$. Evaluation mode uses the running statistics instead, so $y$ is an
affine function of $x$.

Backward in training mode. Every $x$ moves $\mu$ and $\sigma^2$, so the gradient has three
paths. With $g = \partial L / \partial y$, summing over the channel's $M$ values:

$$
\frac{\partial L}{\partial \beta} = \sum g, \qquad
\frac{\partial L}{\partial \gamma} = \sum g \hat{x}, \qquad
\frac{\partial L}{\partial x} = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}}
  \left(g - \text{mean}(g) - \hat{x}\,\text{mean}(g \hat{x})\right)
$$

A check through ``y.sum()`` would hide a wrong $\partial L / \partial x$: with $g$ all
ones the bracket is 0 whatever the formula, which is why the tests use a random $g$.

``batch_norm_relu6`` is ``relu6(batch_norm(...))`` as one op, the way every
MobileNetV2 block uses them: the kernels clamp while they write $y$, and the
backward recomputes the BatchNorm output from the saved input to know where
ReLU6 passed the gradient ($0 < z < 6$). Same numbers as the two ops, one pass
fewer each way, and no ReLU6 mask kept in memory for the backward.

``batch_norm_relu`` is ``relu(batch_norm(...))`` the same way, for the segmentation
heads, which follow BatchNorm with a plain ReLU: the same kernels, with the clamp's
upper bound at infinity instead of 6 (the gradient passes where $z > 0$).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module
from ..kernels import kernels_for
from .basic import ReLU
from .checks import check_same_device, check_same_dtype, check_tensor


class BatchNormTrain(Function):
    """Training mode: normalise by the batch's statistics (and clamp, for ReLU6 or ReLU).

    readable: ``kernels/reference.py``, ``ReferenceKernels.batch_norm_forward_train``,
    ``batch_norm_backward_train``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, stats_out, relu6=False, relu=False):
        k = kernels_for(x)
        y, mean, invstd = k.batch_norm_forward_train(x, weight, bias, eps, relu6=relu6, relu=relu)
        ctx.save_for_backward(x, mean, invstd, weight, bias)
        ctx.kernels, ctx.relu6, ctx.relu = k, relu6, relu
        stats_out.update(mean=mean, invstd=invstd)  # for the running statistics
        return y

    @staticmethod
    def backward(ctx, g):
        x, mean, invstd, weight, bias = ctx.saved_tensors
        gx, gw, gb = ctx.kernels.batch_norm_backward_train(g, x, mean, invstd, weight, bias,
                                                           relu6=ctx.relu6, relu=ctx.relu)
        return gx, gw, gb, None, None, None, None


class BatchNormEval(Function):
    r"""$y = (x - \text{mean})\,\text{invstd}\,\gamma + \beta$, fixed statistics: an affine map.

    readable: ``kernels/reference.py``, ``ReferenceKernels.batch_norm_forward_eval``; the
    backward is this class's own NumPy (an affine map's gradient needs no kernel).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps, relu6=False):
        k = kernels_for(x)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.eps, ctx.relu6, ctx.kernels = eps, relu6, k
        return k.batch_norm_forward_eval(x, mean, var, weight, bias, eps, relu6=relu6)

    @staticmethod
    def backward(ctx, g):
        x, weight, bias, mean, var = ctx.saved_tensors
        xp = get_array_module(x)
        if ctx.relu6:  # the fused ReLU6 passed g where the BatchNorm output z was in (0, 6)
            z = ctx.kernels.batch_norm_forward_eval(x, mean, var, weight, bias, ctx.eps)
            g = g * ((z > 0) & (z < 6))
        invstd = (1.0 / xp.sqrt(var + ctx.eps)).astype(x.dtype)
        per_channel = (1, -1, 1, 1)
        gx = g * (weight * invstd).reshape(per_channel) if ctx.needs_input_grad[0] else None
        gw = gb = None
        if ctx.needs_input_grad[1]:
            xhat = (x - mean.reshape(per_channel)) * invstd.reshape(per_channel)
            gw = (g * xhat).sum(axis=(0, 2, 3))
        if ctx.needs_input_grad[2]:
            gb = g.sum(axis=(0, 2, 3))
        return gx, gw, gb, None, None, None, None


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5) -> Tensor:
    r"""PyTorch's ``F.batch_norm`` for NCHW input (see the module for the formulas).

    Args:
        x: The input (N, C, H, W).
        running_mean: An array (C,), or None; updated in place when ``training``.
        running_var: An array (C,), or None; updated in place when ``training``.
        weight: $\gamma$, a Tensor (C,), or None (then 1).
        bias: $\beta$, a Tensor (C,), or None (then 0).
        training: Normalise by the batch's statistics and move the running ones (else use
            the running ones). Without running statistics the batch's are used in both modes.
        momentum: How far the running statistics move towards the batch's.
        eps: $\epsilon$, added to the variance.

    Returns:
        The normalised output (N, C, H, W).

    Raises:
        TypeError: The arguments are not Tensors of one dtype.
        ValueError: A shape does not fit, only one running statistic is given, or
            training has a single value per channel.
    """
    return _batch_norm("batch_norm", x, running_mean, running_var, weight, bias, training,
                       momentum, eps, relu6=False)


def batch_norm_relu6(x, running_mean, running_var, weight=None, bias=None, training=False,
                     momentum=0.1, eps=1e-5) -> Tensor:
    r"""``relu6(batch_norm(x, ...))`` as one fused op.

    The same values and gradients as the two ops (the tests compare them with
    PyTorch), with one pass over the activations fewer in each direction and no
    ReLU6 mask saved for the backward (see the module docstring). The arguments are
    [batch_norm][tinymbv2.functional.batchnorm.batch_norm]'s.

    Args:
        x: The input (N, C, H, W).
        running_mean: An array (C,), or None; updated in place when ``training``.
        running_var: An array (C,), or None; updated in place when ``training``.
        weight: $\gamma$, a Tensor (C,), or None (then 1).
        bias: $\beta$, a Tensor (C,), or None (then 0).
        training: Normalise by the batch's statistics and move the running ones (else use
            the running ones). Without running statistics the batch's are used in both modes.
        momentum: How far the running statistics move towards the batch's.
        eps: $\epsilon$, added to the variance.

    Returns:
        The normalised output (N, C, H, W).

    Raises:
        TypeError: The arguments are not Tensors of one dtype.
        ValueError: A shape does not fit, only one running statistic is given, or
            training has a single value per channel.
    """
    return _batch_norm("batch_norm_relu6", x, running_mean, running_var, weight, bias,
                       training, momentum, eps, relu6=True)


def batch_norm_relu(x, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5) -> Tensor:
    r"""``relu(batch_norm(x, ...))`` as one fused op: the segmentation heads' BN and ReLU.

    ``batch_norm_relu6``'s kernels with the clamp's upper bound at infinity: the same
    values and gradients as the two ops, one pass fewer each way, no ReLU mask saved. In
    eval mode (running statistics) it is the two ops. The arguments are
    [batch_norm][tinymbv2.functional.batchnorm.batch_norm]'s.

    Args:
        x: The input (N, C, H, W).
        running_mean: An array (C,), or None; updated in place when ``training``.
        running_var: An array (C,), or None; updated in place when ``training``.
        weight: $\gamma$, a Tensor (C,), or None (then 1).
        bias: $\beta$, a Tensor (C,), or None (then 0).
        training: Normalise by the batch's statistics and move the running ones (else use
            the running ones). Without running statistics the batch's are used in both modes.
        momentum: How far the running statistics move towards the batch's.
        eps: $\epsilon$, added to the variance.

    Returns:
        The normalised output (N, C, H, W), at least 0.

    Raises:
        TypeError: The arguments are not Tensors of one dtype.
        ValueError: A shape does not fit, only one running statistic is given, or
            training has a single value per channel.
    """
    return _batch_norm("batch_norm_relu", x, running_mean, running_var, weight, bias,
                       training, momentum, eps, relu6=False, relu=True)


def _batch_norm(fn, x, running_mean, running_var, weight, bias, training, momentum, eps,
                relu6, relu=False) -> Tensor:
    check_tensor(x, fn, "input", ndim=4)
    c = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(t, fn, name, ndim=1)
            if t.shape != (c,):
                raise ValueError(f"{fn}: expected {name} of shape ({c},), got {t.shape}")
    check_same_dtype(fn, input=x, weight=weight, bias=bias)
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None and tuple(r.shape) != (c,):
            raise ValueError(f"{fn}: expected {name} of shape ({c},), got {tuple(r.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: expected both running_mean and running_var, or neither")
    check_same_device(fn, input=x, weight=weight, bias=bias, running_mean=running_mean,
                      running_var=running_var)

    xp = get_array_module(x.data)
    if weight is None:
        weight = Tensor(xp.ones(c, dtype=x.dtype))
    if bias is None:
        bias = Tensor(xp.zeros(c, dtype=x.dtype))

    if not training and running_mean is not None:
        mean = xp.asarray(running_mean, dtype=x.dtype)
        var = xp.asarray(running_var, dtype=x.dtype)
        y = BatchNormEval.apply(x, weight, bias, mean, var, eps, relu6)
        return ReLU.apply(y) if relu else y

    m = x.shape[0] * x.shape[2] * x.shape[3]
    if training and m <= 1:
        raise ValueError(
            f"{fn}: expected more than 1 value per channel when training, got input {x.shape}"
        )
    stats = {}
    y = BatchNormTrain.apply(x, weight, bias, eps, stats, relu6, relu)
    if training and running_mean is not None:
        update_running_stats(running_mean, running_var, stats, eps, momentum, m)
    return y


def update_running_stats(running_mean, running_var, stats, eps, momentum, m):
    r"""Move the running statistics towards a training batch's, in place.

    Args:
        running_mean: The running mean (C,), updated in place.
        running_var: The running variance (C,), updated in place (with the unbiased
            batch variance).
        stats: The batch's ``{"mean": (C,), "invstd": (C,)}``, with
            $\text{invstd} = 1/\sqrt{\sigma^2 + \epsilon}$ of the biased variance.
        eps: The $\epsilon$ in ``invstd``.
        momentum: How far the running statistics move.
        m: The number of values per channel, $M = N H W$.
    """
    invstd = stats["invstd"].astype(np.float64)
    var = 1.0 / (invstd * invstd) - eps  # the biased batch variance
    running_mean *= 1.0 - momentum
    running_mean += momentum * stats["mean"].astype(running_mean.dtype)
    running_var *= 1.0 - momentum
    running_var += (momentum * var * m / (m - 1)).astype(running_var.dtype)
