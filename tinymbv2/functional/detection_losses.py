r"""The two losses of a detector: smooth L1 on box offsets, sigmoid focal on class scores.

SSD (and SSDLite) regresses the four offsets of each matched default box with the smooth L1
(Huber) loss of Fast R-CNN, and RetinaNet scores every class of every anchor with the
sigmoid focal loss. Both are elementwise over inputs of any shape; each is one
[Function][tinymbv2.autograd.Function] with its backward derived in the docstring.

readable: the Functions in this module (NumPy or CuPy, no kernel).
"""
from __future__ import annotations

from numbers import Real

from ..autograd import Function, Tensor
from ..backend import get_array_module
from .checks import check_same_device, check_same_dtype, check_tensor
from .losses import REDUCTIONS, reduce_losses

__all__ = ["smooth_l1_loss", "sigmoid_focal_loss"]



def _check_pair(fn: str, x, target, reduction: str):
    """``x`` and ``target``: floating Tensors of one shape, dtype and device; a known reduction."""
    check_tensor(x, fn, "input")
    if not isinstance(target, Tensor):
        raise TypeError(f"{fn}: expected target as a Tensor, got {type(target).__name__}")
    check_tensor(target, fn, "target")
    if x.shape != target.shape:
        raise ValueError(f"{fn}: input and target must have the same shape, got "
                         f"{tuple(x.shape)} and {tuple(target.shape)}")
    check_same_dtype(fn, input=x, target=target)
    check_same_device(fn, input=x, target=target)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _upstream(grad, reduction: str, size: int):
    """What each element's local gradient is multiplied by: the upstream gradient, per element
    for ``"none"``, divided by the element count for ``"mean"``."""
    return grad / size if reduction == "mean" else grad


# -- smooth L1 ---------------------------------------------------------------------
class SmoothL1Loss(Function):
    r"""Elementwise smooth L1 of $d = x - y$ with threshold $\beta$, as ``F.smooth_l1_loss``:

    $$
    \ell(d) = \begin{cases} \tfrac12 d^2 / \beta & |d| < \beta \\ |d| - \tfrac12 \beta & \text{otherwise}
    \end{cases}
    \qquad
    \frac{\partial \ell}{\partial d} = \begin{cases} d / \beta & |d| < \beta \\ \operatorname{sign}(d)
    & \text{otherwise} \end{cases}
    $$

    quadratic near 0 (a gradient that shrinks as the box fits) and linear beyond $\beta$ (an
    outlier's gradient is bounded, unlike the squared error's). $\beta = 0$ is the L1 loss.
    $\partial / \partial y = -\partial / \partial x$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, y, beta=1.0, reduction="mean"):
        xp = get_array_module(x)
        d = x - y
        small = xp.abs(d) < beta
        losses = xp.where(small, 0.5 * d * d / (beta if beta > 0 else 1.0), xp.abs(d) - 0.5 * beta)
        ctx.save_for_backward(d, small)
        ctx.beta, ctx.reduction = beta, reduction
        return reduce_losses(xp, losses, reduction)

    @staticmethod
    def backward(ctx, grad):
        d, small = ctx.saved_tensors
        xp = get_array_module(d)
        local = xp.where(small, d / (ctx.beta if ctx.beta > 0 else 1.0), xp.sign(d))
        dx = local * _upstream(grad, ctx.reduction, d.size)
        return dx, -dx


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    r"""Smooth L1 (Huber-like) loss between ``input`` and ``target``, as ``torch.nn.functional``'s.

    Args:
        input: $x$, a floating Tensor of any shape (e.g. the (A, 4) offsets of A matched boxes).
        target: $y$, a Tensor of the same shape, dtype and device (gradients flow to it too).
        reduction: ``"mean"`` (over every element), ``"sum"`` (SSD's choice) or ``"none"``.
        beta: $\beta \ge 0$, where the loss turns from quadratic to linear (0: the L1 loss).

    Returns:
        A scalar Tensor (``"mean"``, ``"sum"``) or a Tensor shaped as ``input`` (``"none"``).

    Raises:
        TypeError: An input or target that is not a floating Tensor.
        ValueError: Shapes, dtypes or devices that differ, ``beta < 0`` or an unknown reduction.
    """
    _check_pair("smooth_l1_loss", input, target, reduction)
    if not isinstance(beta, Real) or not beta >= 0:
        raise ValueError(f"smooth_l1_loss: beta must be a number >= 0, got {beta!r}")
    return SmoothL1Loss.apply(input, target, beta=float(beta), reduction=reduction)


# -- sigmoid focal loss -------------------------------------------------------------
class SigmoidFocalLoss(Function):
    r"""Sigmoid focal loss (Lin et al. 2017), as ``torchvision.ops.sigmoid_focal_loss``.

    Per element, with $p = \sigma(x)$ and a target $t \in [0, 1]$:

    $$
    \text{ce} = -t \log p - (1 - t) \log (1 - p), \quad
    q = 1 - p_t, \quad p_t = p t + (1 - p)(1 - t), \quad
    \ell = a_t \, \text{ce} \, q^\gamma, \quad a_t = \alpha t + (1 - \alpha)(1 - t)
    $$

    ($a_t = 1$ when $\alpha = -1$). $\text{ce}$ is computed as
    $\max(x, 0) - t x + \log(1 + e^{-|x|})$, finite for any $x$.

    Backward: $\partial \text{ce} / \partial x = p - t$ and
    $\partial q / \partial x = (1 - 2t)\, p (1 - p)$, so

    $$
    \frac{\partial \ell}{\partial x} = a_t \left[ (p - t)\, q^\gamma
    + \gamma\, \text{ce}\, q^{\gamma - 1} (1 - 2t)\, p (1 - p) \right],
    $$

    the second term taken as 0 where $q = 0$ (its limit: $\text{ce}$ vanishes there too).
    The targets are constants (no gradient flows to them).

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, t, alpha=0.25, gamma=2.0, reduction="none"):
        xp = get_array_module(x)
        e = xp.exp(-xp.abs(x))                      # in (0, 1]: no overflow for any x
        p = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        ce = xp.maximum(x, 0) - x * t + xp.log1p(e)
        q = 1 - (p * t + (1 - p) * (1 - t))
        a = 1.0 if alpha < 0 else alpha * t + (1 - alpha) * (1 - t)
        losses = a * ce * q ** gamma
        ctx.save_for_backward(x, t, p, ce, q)
        ctx.alpha, ctx.gamma, ctx.reduction = alpha, gamma, reduction
        return reduce_losses(xp, losses, reduction)

    @staticmethod
    def backward(ctx, grad):
        x, t, p, ce, q = ctx.saved_tensors
        xp = get_array_module(x)
        alpha, gamma = ctx.alpha, ctx.gamma
        a = 1.0 if alpha < 0 else alpha * t + (1 - alpha) * (1 - t)
        if gamma == 0:
            second = 0.0
        else:
            safe_q = xp.where(q > 0, q, 1.0)
            second = xp.where(q > 0, gamma * ce * safe_q ** (gamma - 1) * (1 - 2 * t) * p * (1 - p), 0.0)
        local = a * ((p - t) * q ** gamma + second)
        return local * _upstream(grad, ctx.reduction, x.size), None


def sigmoid_focal_loss(inputs, targets, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> Tensor:
    r"""RetinaNet's focal loss on independent per-class sigmoids, as torchvision's.

    Args:
        inputs: $x$, logits of any shape (e.g. (anchors, classes)).
        targets: $t$, a Tensor of the same shape: 1 for the true class, 0 otherwise (soft
            targets in [0, 1] work too). No gradient flows to it.
        alpha: The weight $\alpha \in [0, 1]$ of the positives (the negatives get
            $1 - \alpha$), or -1 for no weighting.
        gamma: $\gamma \ge 0$, how strongly easy elements are down-weighted (0: binary
            cross-entropy).
        reduction: ``"none"`` (torchvision's default), ``"mean"`` or ``"sum"``.

    Returns:
        A Tensor shaped as ``inputs`` (``"none"``) or a scalar Tensor.

    Raises:
        TypeError: Inputs or targets that are not floating Tensors.
        ValueError: Shapes, dtypes or devices that differ, ``alpha`` outside [0, 1] (other
            than -1), ``gamma < 0`` or an unknown reduction.
    """
    _check_pair("sigmoid_focal_loss", inputs, targets, reduction)
    if not isinstance(alpha, Real) or not (0 <= alpha <= 1 or alpha == -1):
        raise ValueError(f"sigmoid_focal_loss: alpha must be in [0, 1] or -1 (no weighting), got {alpha!r}")
    if not isinstance(gamma, Real) or not gamma >= 0:
        raise ValueError(f"sigmoid_focal_loss: gamma must be a number >= 0, got {gamma!r}")
    return SigmoidFocalLoss.apply(inputs, targets.data, alpha=float(alpha), gamma=float(gamma),
                                  reduction=reduction)
