"""Stochastic gradient descent with momentum, the same update as ``torch.optim.SGD``."""
from __future__ import annotations

from ..kernels import kernels_for
from .optimizer import Optimizer, check_hyper


class SGD(Optimizer):
    r"""SGD with optional (Nesterov) momentum and L2 weight decay.

    For each parameter ``p`` (any shape) with gradient ``g`` of the same shape, per step:

        g   <- g + weight_decay * p                     (L2 penalty, coupled)
        if momentum != 0:
            buf <- g                                    on the first step (no dampening)
            buf <- momentum * buf + (1 - dampening) * g afterwards
            g   <- g + momentum * buf   if nesterov else   buf
        p   <- p - lr * g

    The arithmetic runs in the kernel set's ``sgd_update`` (readable: NumPy in
    ``kernels/reference.py``); the numba set runs it as one fused pass, bit for bit the
    NumPy code.

    This is PyTorch's form, where the learning rate multiplies the whole velocity
    (Sutskever et al. 2013 put lr inside the buffer instead; the two agree while lr
    is constant and differ right after an lr change).

    ``weight_decay`` $= w_d$ here is the gradient of the explicit penalty
    $\frac{w_d}{2} \lVert p \rVert^2$; see [l2_penalty][tinymbv2.functional.losses.l2_penalty]
    for how it relates to $\lambda \lVert p \rVert^2$.

    Args:
        params: An iterable of tensors, or of dicts defining parameter groups.
        lr: The learning rate, a finite number >= 0.
        momentum: The momentum factor, in [0, 1).
        dampening: The dampening of the momentum, in [0, 1] (must be 0 with nesterov).
        weight_decay: The L2 coefficient, a finite number >= 0.
        nesterov: Use Nesterov momentum (needs momentum > 0 and dampening 0).

    Raises:
        ValueError: An option out of its range.
    """

    defining = ("nesterov",)

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _check_group(self, group):
        for key in ("lr", "weight_decay"):
            check_hyper("SGD", key, group[key])
        # momentum >= 1 makes the velocity grow without bound: the sum of mu^k diverges
        check_hyper("SGD", "momentum", group["momentum"], 0.0, 1.0, high_open=True)
        check_hyper("SGD", "dampening", group["dampening"], 0.0, 1.0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"SGD: nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _update(self, p, grad, state, group, xp):
        mu = group["momentum"]
        buf = state.get("momentum_buffer")
        first = mu != 0 and buf is None
        if first:
            buf = state["momentum_buffer"] = xp.empty_like(p.data)
        # the update in the class docstring, on arrays, in place; readable: kernels/reference.py,
        # ReferenceKernels.sgd_update (the numba set runs it as one fused pass)
        kernels_for(p.data).sgd_update(p.data, grad, buf, group["lr"], mu, group["dampening"],
                                       group["weight_decay"], group["nesterov"], first)
