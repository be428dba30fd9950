"""Argument checks shared by the ops: Tensors, ranks, one dtype, one device, int pairs."""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module


def pair(value, name: str, fn: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(1, 2) -> (1, 2)``; anything else is an error.

    Args:
        value: An int or a pair of ints.
        name: The argument's name, for the error.
        fn: The op's name, for the error.

    Returns:
        The pair.

    Raises:
        TypeError: ``value`` is neither an int nor a pair of ints.
    """
    if isinstance(value, numbers.Integral):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) for v in value
    ):
        return int(value[0]), int(value[1])
    raise TypeError(f"{fn}: expected {name} as an int or a pair of ints, got {value!r}")


def check_tensor(x, fn: str, name: str = "input", ndim: int | None = None) -> Tensor:
    """``x`` must be a floating Tensor (of rank ``ndim`` if given).

    Args:
        x: The value checked.
        fn: The op's name, for the error.
        name: The argument's name, for the error.
        ndim: The rank required; None: any.

    Returns:
        ``x``.

    Raises:
        TypeError: ``x`` is not a Tensor, or not floating.
        ValueError: ``x`` has another rank.
    """
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
    """All given tensors (None skipped) share one dtype; mixing is an error, never a cast.

    Args:
        fn: The op's name, for the error.
        **tensors: The Tensors by argument name (None for absent ones).

    Raises:
        TypeError: Two dtypes differ.
    """
    present = {k: v for k, v in tensors.items() if v is not None}
    dtypes = {np.dtype(v.dtype) for v in present.values()}
    if len(dtypes) > 1:
        found = ", ".join(f"{k}={v.dtype}" for k, v in present.items())
        raise TypeError(f"{fn}: expected one floating dtype for all inputs, got {found}")


def device_of(value) -> str:
    """The device of ``value``, a Tensor or an array: "cpu" for NumPy data, "cuda" for CuPy."""
    data = value.data if isinstance(value, Tensor) else value
    return "cpu" if get_array_module(data) is np else "cuda"


def check_same_device(fn: str, **tensors) -> None:
    """All given tensors or arrays (None skipped) live on one device, "cpu" or "cuda".

    An op never moves data behind the user's back: mixing a NumPy-backed tensor with
    a CuPy-backed one is an error that says how to fix it.

    Args:
        fn: The op's name, for the error.
        **tensors: The Tensors or arrays by argument name (None for absent ones).

    Raises:
        TypeError: Two devices differ.
    """
    present = {k: device_of(v) for k, v in tensors.items() if v is not None}
    if len(set(present.values())) > 1:
        found = ", ".join(f"{k} on {d}" for k, d in present.items())
        raise TypeError(
            f"{fn}: expected all inputs on one device, got {found} "
            "(move them first: tensor.to('cuda') / .cpu(), model.to('cuda'))"
        )
