"""Helpers shared by the ops: argument checks, dtype rules, broadcasting."""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module


def pair(value, name: str, fn: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(1, 2) -> (1, 2)``; anything else is an error."""
    if isinstance(value, numbers.Integral):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) for v in value
    ):
        return int(value[0]), int(value[1])
    raise TypeError(f"{fn}: expected {name} as an int or a pair of ints, got {value!r}")


def check_tensor(x, fn: str, name: str = "input", ndim: int | None = None) -> Tensor:
    """``x`` must be a floating Tensor (of rank ``ndim`` if given)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected {name} to be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{fn}: expected {name} with a floating dtype, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"{fn}: expected {name} of rank {ndim}, got rank {x.ndim} with shape {x.shape}"
        )
    return x


def check_same_dtype(fn: str, **tensors) -> None:
    """All given tensors (None skipped) share one dtype; mixing is an error, never a cast."""
    present = {k: v for k, v in tensors.items() if v is not None}
    dtypes = {np.dtype(v.dtype) for v in present.values()}
    if len(dtypes) > 1:
        found = ", ".join(f"{k}={v.dtype}" for k, v in present.items())
        raise TypeError(f"{fn}: expected one floating dtype for all inputs, got {found}")


def _device_of(value) -> str:
    data = value.data if isinstance(value, Tensor) else value
    return "cpu" if get_array_module(data) is np else "cuda"


def check_same_device(fn: str, **tensors) -> None:
    """All given tensors or arrays (None skipped) live on one device, "cpu" or "cuda".

    An op never moves data behind the user's back: mixing a NumPy-backed tensor with
    a CuPy-backed one is an error that says how to fix it.
    """
    present = {k: _device_of(v) for k, v in tensors.items() if v is not None}
    if len(set(present.values())) > 1:
        found = ", ".join(f"{k} on {d}" for k, d in present.items())
        raise TypeError(
            f"{fn}: expected all inputs on one device, got {found} "
            "(move them first: tensor.to('cuda') / .cpu(), model.to('cuda'))"
        )


def _has_device(value) -> bool:
    """Tensors and arrays with elements are bound to a device; numbers (and 0-d arrays) go anywhere."""
    return isinstance(value, Tensor) or getattr(value, "ndim", 0) > 0


def as_operand(value, like: Tensor, fn: str):
    """Bring the other operand of a binary op to ``like``'s dtype, by an explicit rule.

    * a Tensor must already have the same dtype (float32 + float64 is an error);
    * Python numbers, and integer or boolean arrays, take ``like``'s dtype;
    * a floating array of another dtype is an error, like a Tensor;
    * a Tensor or (non-scalar) array on another device is an error.
    """
    if _has_device(value):
        check_same_device(fn, tensor=like, other=value)
    if isinstance(value, Tensor):
        if value.dtype != like.dtype:
            raise TypeError(
                f"{fn}: expected operands of one dtype, got {like.dtype} and {value.dtype} "
                "(convert one explicitly)"
            )
        return value
    xp = get_array_module(like.data)
    if isinstance(value, numbers.Number):
        return Tensor(xp.asarray(value, dtype=like.dtype))
    arr = xp.asarray(value)
    if arr.dtype.kind == "f" and arr.dtype != like.dtype:
        raise TypeError(
            f"{fn}: expected operands of one dtype, got {like.dtype} and {arr.dtype} "
            "(convert one explicitly)"
        )
    return Tensor(arr.astype(like.dtype, copy=False))


def binary_operands(a, b, fn: str) -> tuple[Tensor, Tensor]:
    """Both operands as Tensors of one dtype on one device (see :func:`as_operand`)."""
    if _has_device(a) and _has_device(b):
        check_same_device(fn, a=a, b=b)
    if isinstance(a, Tensor):
        return a, as_operand(b, a, fn)
    if isinstance(b, Tensor):
        return as_operand(a, b, fn), b
    raise TypeError(f"{fn}: expected at least one Tensor, got {type(a).__name__}, {type(b).__name__}")


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting stretched, back to ``shape``.

    If y = x + b with b of shape (C,) broadcast to (N, C), each b_c was used N
    times, so dL/db_c = sum_n dL/dy_nc.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad
