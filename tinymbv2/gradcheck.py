r"""Finite-difference gradient checking, no PyTorch needed.

For a function $y = f(x_1, \dots, x_k)$ and a random upstream gradient $v$ (the
same shape as $y$), the scalar $s = \langle v, f(x) \rangle$ has

$$
\frac{\partial s}{\partial x_{i,j}} \approx \frac{s(x_{i,j} + h) - s(x_{i,j} - h)}{2h}
\qquad \text{(central difference)}
$$

with error $O(h^2)$. The analytic side is one backward pass with ``grad=v``. Using a
random $v$ instead of ``y.sum()`` matters: ``sum(BatchNorm(x))`` has a zero input
gradient, so a wrong BatchNorm backward would pass a check through ``.sum()``.
"""
from __future__ import annotations

import numpy as np

from .autograd import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and the numerical gradient disagree."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, seed=0, raise_exception=True):
    r"""Compare ``fn``'s backward with central differences, in float64.

    An element passes when $|a - n| \le \text{atol} + \text{rtol}\,|n|$, with $a$ the analytic and
    $n$ the numerical derivative.

    Args:
        fn: Takes the tensors in ``inputs`` and returns one Tensor.
        inputs: A sequence of float64 Tensors; those with ``requires_grad`` are checked.
        eps: The step $h$ of the central difference.
        atol: The absolute tolerance.
        rtol: The relative tolerance.
        seed: Seeds the random upstream gradient $v$.
        raise_exception: Raise on a mismatch (False: return False).

    Returns:
        True when every element of every checked input passes.

    Raises:
        GradcheckError: An element does not pass; the message names the input and the worst
            element ([GradcheckError][tinymbv2.gradcheck.GradcheckError]).
    """
    inputs = list(inputs)
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: expected at least one input with requires_grad=True")
    for t in checked:
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck: expected float64 inputs, got {t.dtype} (use float64)")

    for t in checked:
        t.grad = None
    out = fn(*inputs)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(out.shape)
    out.backward(v)
    analytic = [t.grad if t.grad is not None else np.zeros_like(t.data) for t in checked]

    def objective():
        with no_grad():
            return float(np.sum(v * fn(*inputs).data))

    for index, (t, grad) in enumerate(zip(checked, analytic)):
        numeric = np.zeros_like(t.data)
        flat, num_flat = t.data.reshape(-1), numeric.reshape(-1)  # views into the data
        for j in range(flat.size):
            original = flat[j]
            flat[j] = original + eps
            plus = objective()
            flat[j] = original - eps
            minus = objective()
            flat[j] = original
            num_flat[j] = (plus - minus) / (2 * eps)
        bad = np.abs(grad - numeric) > atol + rtol * np.abs(numeric)
        if bad.any():
            worst = np.unravel_index(np.argmax(np.abs(grad - numeric)), grad.shape)
            message = (
                f"gradcheck: gradient of input {index} (shape {t.shape}) is wrong at "
                f"{bad.sum()} of {bad.size} elements; worst at {tuple(int(i) for i in worst)}: "
                f"analytic {grad[worst]:.8g} vs numeric {numeric[worst]:.8g}"
            )
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True
