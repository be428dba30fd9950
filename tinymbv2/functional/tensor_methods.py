"""Tensor's operators and methods: ``a + b``, ``x @ w``, ``x[i]``, ``x.sum()``, ``x.reshape()``...

Each one calls the differentiable op of the same meaning in this package, where the
forward and backward live (like ``torch.Tensor``'s methods). They are defined here,
not in [tinymbv2.autograd][], because the engine must not import the ops that
import it; ``tinymbv2/__init__.py`` installs them on [Tensor][tinymbv2.autograd.Tensor]
once, at package start-up
([install_tensor_methods][tinymbv2.functional.tensor_methods.install_tensor_methods]), as
DeZero's ``setup_variable()`` does. Comparisons (``==``, ``<``, ...) have no gradient
and live on the Tensor class itself.
"""
from __future__ import annotations

from . import basic


def _add(self, other):
    return basic.add(self, other)


def _radd(self, other):
    return basic.add(other, self)


def _sub(self, other):
    return basic.sub(self, other)


def _rsub(self, other):
    return basic.sub(other, self)


def _mul(self, other):
    return basic.mul(self, other)


def _rmul(self, other):
    return basic.mul(other, self)


def _truediv(self, other):
    return basic.div(self, other)


def _rtruediv(self, other):
    return basic.div(other, self)


def _matmul(self, other):
    return basic.matmul(self, other)


def _rmatmul(self, other):
    return basic.matmul(other, self)


def _reshape(self, *shape):
    """``x.reshape(2, 3)`` or ``x.reshape((2, 3))``."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return basic.reshape(self, shape)


def _transpose(self, *axes):
    """``x.transpose()`` reverses the axes; ``x.transpose(1, 0, 2)`` permutes them."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return basic.transpose(self, axes or None)


def _sum(self, axis=None, keepdims=False):
    return basic.sum(self, axis, keepdims)


def _mean(self, axis=None, keepdims=False):
    return basic.mean(self, axis, keepdims)


def _flatten(self, start_dim=0):
    return basic.flatten(self, start_dim)


def _clamp(self, min=None, max=None):  # noqa: A002 - torch's names
    return basic.clamp(self, min, max)


TENSOR_METHODS = {
    "__add__": _add, "__radd__": _radd, "__sub__": _sub, "__rsub__": _rsub,
    "__mul__": _mul, "__rmul__": _rmul, "__truediv__": _truediv, "__rtruediv__": _rtruediv,
    "__neg__": basic.neg, "__pow__": basic.pow, "__matmul__": _matmul, "__rmatmul__": _rmatmul,
    "__getitem__": basic.getitem,
    "sum": _sum, "mean": _mean, "reshape": _reshape, "transpose": _transpose,
    "T": property(_transpose), "flatten": _flatten, "exp": basic.exp, "log": basic.log,
    "relu": basic.relu, "clamp": _clamp,
}
"""Tensor attribute name -> the function installed under it (``self`` is the Tensor)."""


def install_tensor_methods(tensor_class) -> None:
    """Set every entry of ``TENSOR_METHODS`` as an attribute of ``tensor_class``."""
    for name, method in TENSOR_METHODS.items():
        setattr(tensor_class, name, method)
