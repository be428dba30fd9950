"""Operator sugar for :class:`~tinymbv2.autograd.Tensor`: ``a + b``, ``x.sum()``, ``x[i]``...

Each method calls the differentiable op of the same meaning in
:mod:`tinymbv2.functional`, where the forward and backward live; this file
only maps Python's operators and method names onto them (like
``torch.Tensor``'s methods). Comparisons give plain boolean arrays: they have
no gradient.
"""
from __future__ import annotations


class TensorOperators:
    """Mixed into Tensor; ``self`` is a Tensor."""

    def _f(self):
        from . import functional

        return functional

    def __add__(self, other):
        return self._f().add(self, other)

    def __radd__(self, other):
        return self._f().add(other, self)

    def __sub__(self, other):
        return self._f().sub(self, other)

    def __rsub__(self, other):
        return self._f().sub(other, self)

    def __mul__(self, other):
        return self._f().mul(self, other)

    def __rmul__(self, other):
        return self._f().mul(other, self)

    def __truediv__(self, other):
        return self._f().div(self, other)

    def __rtruediv__(self, other):
        return self._f().div(other, self)

    def __neg__(self):
        return self._f().neg(self)

    def __pow__(self, exponent):
        return self._f().pow(self, exponent)

    def __matmul__(self, other):
        return self._f().matmul(self, other)

    def __rmatmul__(self, other):
        return self._f().matmul(other, self)

    def __getitem__(self, index):
        return self._f().getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        return self._f().sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return self._f().mean(self, axis, keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self._f().reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return self._f().transpose(self, axes or None)

    @property
    def T(self):
        return self.transpose()

    def flatten(self, start_dim=0):
        return self._f().flatten(self, start_dim)

    def exp(self):
        return self._f().exp(self)

    def log(self):
        return self._f().log(self)

    def relu(self):
        return self._f().relu(self)

    def clamp(self, min=None, max=None):
        return self._f().clamp(self, min, max)

    # comparisons give plain boolean arrays: they have no gradient
    def __eq__(self, other):  # noqa: D105
        return self.data == (other.data if isinstance(other, Tensor) else other)

    def __lt__(self, other):
        return self.data < (other.data if isinstance(other, Tensor) else other)

    def __gt__(self, other):
        return self.data > (other.data if isinstance(other, Tensor) else other)

    __hash__ = object.__hash__
