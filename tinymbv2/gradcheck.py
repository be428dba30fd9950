"""Finite-difference gradient checking, no PyTorch needed.

For a function y = f(x_1, ..., x_k) and a random upstream gradient v (the
same shape as y), the scalar s = <v, f(x)> has

    ds/dx_i[j] ~ (s(x_i[j] + h) - s(x_i[j] - h)) / (2 h)       (central difference)

with error O(h^2). The analytic side is one backward pass with grad=v. Using a
random v instead of ``y.sum()`` matters: sum(BatchNorm(x)) has a zero input
gradient, so a wrong BatchNorm backward would pass a check through ``.sum()``.
"""
from __future__ import annotations

import numpy as np

from .autograd import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and the numerical gradient disagree."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, seed=0, raise_exception=True):
    """Compare ``fn``'s backward with central differences, in float64.

    fn: takes the tensors in ``inputs`` and returns one Tensor.
    inputs: a sequence of float64 Tensors; those with requires_grad are checked.
    Returns True when every element satisfies |analytic - numeric| <= atol + rtol*|numeric|;
    otherwise raises :class:`GradcheckError` naming the input and the worst element
    (or returns False with ``raise_exception=False``).
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
