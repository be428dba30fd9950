r"""RMSprop in two flavours: PyTorch's, and the TensorFlow-1 form the MobileNetV2 paper used.

Both keep a running mean of the squared gradient $v$ and divide each step by
$\sqrt{v}$, so every weight gets its own step size: large for weights whose gradients
are small, small for weights whose gradients are large (Hinton, Coursera lecture 6e).
They differ in three details that matter when you copy hyper-parameters from a
TensorFlow paper into PyTorch (see [RMSpropTF][tinymbv2.optim.rmsprop.RMSpropTF]).
"""
from __future__ import annotations

from ..kernels import kernels_for
from .optimizer import Optimizer, check_hyper


def _check_rmsprop(owner: str, group: dict) -> None:
    for key in ("lr", "eps", "weight_decay"):
        check_hyper(owner, key, group[key])
    check_hyper(owner, "momentum", group["momentum"], 0.0, 1.0, high_open=True)
    check_hyper(owner, "alpha", group["alpha"], 0.0, 1.0)


class RMSprop(Optimizer):
    """RMSprop exactly as ``torch.optim.RMSprop``.

    Per parameter ``p`` with gradient ``g`` (same shape), per step:

        g   <- g + weight_decay * p
        v   <- alpha * v + (1 - alpha) * g^2             v starts at 0
        c   <- alpha * c + (1 - alpha) * g               (centered only; c starts at 0)
        d   <- sqrt(v) + eps          or   sqrt(v - c^2) + eps   when centered
        if momentum > 0:  buf <- momentum * buf + g / d;  p <- p - lr * buf
        else:             p <- p - lr * g / d

    The arithmetic runs in the kernel set's ``rmsprop_update`` (readable: NumPy in
    ``kernels/reference.py``); the numba set runs the non-centered update as one fused
    pass, bit for bit the NumPy code.

    Args:
        params: An iterable of tensors, or of dicts defining parameter groups.
        lr: The learning rate, a finite number >= 0.
        alpha: The decay of $v$, in [0, 1].
        eps: Added *outside* the square root, a finite number >= 0.
        weight_decay: The L2 coefficient added to the gradient, a finite number >= 0.
        momentum: The momentum factor, in [0, 1).
        centered: Divide by the gradient's running standard deviation instead of its root
            mean square.

    Raises:
        ValueError: An option out of its range.
    """

    defining = ("centered",)

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered)
        super().__init__(params, defaults)

    def _check_group(self, group):
        _check_rmsprop("RMSprop", group)

    def _update(self, p, grad, state, group, xp):
        alpha, wd, mu = group["alpha"], group["weight_decay"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            if mu > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        if mu > 0 and "momentum_buffer" not in state:  # momentum switched on later (a schedule)
            state["momentum_buffer"] = xp.zeros_like(p.data)
        if group["centered"] and "grad_avg" not in state:  # centered switched on later
            state["grad_avg"] = xp.zeros_like(p.data)
        # the update in the class docstring, on arrays, in place; readable: kernels/reference.py,
        # ReferenceKernels.rmsprop_update (the numba set runs it as one fused pass)
        kernels_for(p.data).rmsprop_update(p.data, grad, state["square_avg"],
                                           state.get("momentum_buffer"), group["lr"], alpha,
                                           group["eps"], wd, mu,
                                           state["grad_avg"] if group["centered"] else None)


class RMSpropTF(Optimizer):
    r"""RMSprop as TensorFlow 1 computes it (``tf.train.RMSPropOptimizer``), as timm's.

    This is the optimizer of the MobileNetV2 paper (section 6.1: decay 0.9, momentum 0.9,
    lr 0.045; the TF-slim recipe uses eps 1.0). Per parameter ``p`` with gradient ``g``:

        g   <- g + weight_decay * p         (or, decoupled_decay: p <- p * (1 - lr * wd))
        ms  <- ms + (1 - alpha) * (g^2 - ms)       = alpha * ms + (1 - alpha) * g^2,  ms starts at 1
        mg  <- mg + (1 - alpha) * (g - mg)         (centered only; starts at 0)
        d   <- sqrt(ms + eps)       or   sqrt(ms - mg^2 + eps)  when centered
        if momentum > 0:
            lr_in_momentum (TF):  mom <- momentum * mom + lr * g / d;   p <- p - mom
            otherwise (torch):    mom <- momentum * mom + g / d;        p <- p - lr * mom
        else:  p <- p - lr * g / d

    How it differs from [RMSprop][tinymbv2.optim.rmsprop.RMSprop] (PyTorch), and why it
    matters:

    1. **ms starts at 1, not 0.** PyTorch's $v$ starts at 0, so after the first step
       $v = (1 - \alpha) g^2$ and the first updates are $1 / \sqrt{1 - \alpha}$ times
       larger than ``lr`` (about 3.2x for $\alpha = 0.9$, 10x for 0.99): a burst at the
       start of training. TF's ``ms = 1`` makes the first steps about ``lr * g``, plain SGD,
       and they turn adaptive as ``ms`` forgets its start (time constant $1/(1 - \alpha)$).
    2. **eps inside the sqrt.** ``sqrt(ms + eps)`` vs ``sqrt(v) + eps``: the same eps means
       very different things. TF-slim's eps = 1.0 caps the step at about ``lr * g`` for
       small gradients (a big damping); the PyTorch equivalent is about $\sqrt{\epsilon}$,
       which is why torchvision's recipes turn TF's eps = 1e-3 into PyTorch's 0.0316.
    3. **lr inside the momentum buffer.** TF accumulates ``lr * g / d``; when a schedule
       lowers lr, the velocity already built keeps its old size and decays with momentum.
       PyTorch multiplies the whole buffer by the *current* lr, so an lr drop instantly
       shrinks the step. With a constant lr the two are identical.

    Also the default ``alpha`` is 0.9 (TF's decay) instead of PyTorch's 0.99.

    Args:
        params: An iterable of tensors, or of dicts defining parameter groups.
        lr: The learning rate, a finite number >= 0.
        alpha: The decay of ``ms``, in [0, 1].
        eps: Added *inside* the square root, a finite number >= 0.
        weight_decay: The L2 coefficient, a finite number >= 0.
        momentum: The momentum factor, in [0, 1).
        centered: Divide by the gradient's running standard deviation.
        lr_in_momentum: Accumulate ``lr * g / d`` in the buffer (TF's behaviour; False:
            PyTorch's).
        decoupled_decay: Weight decay shrinks ``p`` directly, AdamW-style, instead of being
            added to ``g``.

    Raises:
        ValueError: An option out of its range.
    """

    defining = ("centered", "lr_in_momentum", "decoupled_decay")

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.9, eps: float = 1e-10,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 lr_in_momentum: bool = True, decoupled_decay: bool = False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, lr_in_momentum=lr_in_momentum,
                        decoupled_decay=decoupled_decay)
        super().__init__(params, defaults)

    def _check_group(self, group):
        _check_rmsprop("RMSpropTF", group)

    def _update(self, p, grad, state, group, xp):
        alpha, wd, mu, lr = group["alpha"], group["weight_decay"], group["momentum"], group["lr"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.ones_like(p.data)  # TF: ms starts at 1
            if mu > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        if wd != 0:
            if group["decoupled_decay"]:
                p.data *= 1.0 - lr * wd
            else:
                grad = grad + wd * p.data
        ms = state["square_avg"]
        ms += (1.0 - alpha) * (grad * grad - ms)  # TF's order of operations
        if group["centered"]:
            mg = state["grad_avg"]
            mg += (1.0 - alpha) * (grad - mg)
            denom = xp.sqrt(ms - mg * mg + group["eps"])
        else:
            denom = xp.sqrt(ms + group["eps"])
        if mu > 0:
            buf = state["momentum_buffer"]
            buf *= mu
            if group["lr_in_momentum"]:
                buf += lr * grad / denom
                p.data -= buf
            else:
                buf += grad / denom
                p.data -= lr * buf
        else:
            p.data -= lr * (grad / denom)
