"""Adam and AdamW, the same updates as ``torch.optim.Adam`` / ``AdamW`` (amsgrad off)."""
from __future__ import annotations

from .optimizer import Optimizer, check_hyper


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015) with coupled L2 weight decay, as ``torch.optim.Adam``.

    Per parameter ``p`` with gradient ``g`` (same shape), at step ``t = 1, 2, ...``:

        g  <- g + weight_decay * p                 (Adam; AdamW: p <- p * (1 - lr * wd))
        m  <- beta1 * m + (1 - beta1) * g          first moment, starts at 0
        v  <- beta2 * v + (1 - beta2) * g^2        second moment, starts at 0
        p  <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    The $1 - \beta^t$ factors undo the bias of starting the averages at zero.

    Args:
        params: An iterable of tensors, or of dicts defining parameter groups.
        lr: The learning rate, a finite number >= 0.
        betas: $(\beta_1, \beta_2)$, the decays of the two moments, each in [0, 1).
        eps: Added to the denominator, outside the square root; a finite number >= 0.
        weight_decay: The L2 coefficient added to the gradient, a finite number >= 0.

    Raises:
        ValueError: An option out of its range.
    """

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _check_group(self, group):
        name = type(self).__name__
        for key in ("lr", "eps", "weight_decay"):
            check_hyper(name, key, group[key])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = tuple(betas)
        for i, b in enumerate(betas):
            check_hyper(name, f"betas[{i}]", b, 0.0, 1.0, high_open=True)

    def _update(self, p, grad, state, group, xp):
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        if wd != 0:
            if self._decoupled:
                p.data *= 1.0 - lr * wd
            else:
                grad = grad + wd * p.data
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (grad - m) * (1.0 - beta1)  # torch's lerp
        v *= beta2
        v += (1.0 - beta2) * grad * grad
        step_size = lr / (1.0 - beta1 ** t)
        denom = xp.sqrt(v) / (1.0 - beta2 ** t) ** 0.5 + eps
        p.data -= step_size * (m / denom)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``.

    Identical to [Adam][tinymbv2.optim.adam.Adam] except that weight decay shrinks the
    weights directly, ``p <- p * (1 - lr * weight_decay)``, before the Adam step, instead of
    being added to the gradient. Added to the gradient (Adam), the decay is divided by
    $\sqrt{v}$ like everything else, so weights with large gradients are barely
    decayed; decoupled, every weight decays at the same rate ``lr * weight_decay``.

    Args:
        params: An iterable of tensors, or of dicts defining parameter groups.
        lr: The learning rate, a finite number >= 0.
        betas: $(\beta_1, \beta_2)$, the decays of the two moments, each in [0, 1).
        eps: Added to the denominator, outside the square root; a finite number >= 0.
        weight_decay: The decoupled decay rate, a finite number >= 0.

    Raises:
        ValueError: An option out of its range.
    """

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
