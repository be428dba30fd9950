r"""Elementwise arithmetic, reductions and shape ops, each with its derivative.

Every op is a [Function][tinymbv2.autograd.Function]: ``forward`` computes the
value from arrays, ``backward`` maps $\partial L / \partial\,\text{output}$ to
$\partial L / \partial\,\text{input}$ for each input.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module
from .checks import check_same_device, check_same_dtype, check_tensor


# -- the operand rules of binary ops ---------------------------------------
def _has_device(value) -> bool:
    """Tensors and arrays with elements are bound to a device; numbers (and 0-d arrays) go anywhere."""
    return isinstance(value, Tensor) or getattr(value, "ndim", 0) > 0


def as_operand(value, like: Tensor, fn: str):
    """Bring the other operand of a binary op to ``like``'s dtype, by an explicit rule.

    * a Tensor must already have the same dtype (float32 + float64 is an error);
    * Python numbers, and integer or boolean arrays, take ``like``'s dtype;
    * a floating array of another dtype is an error, like a Tensor;
    * a Tensor or (non-scalar) array on another device is an error.

    Args:
        value: The other operand: a Tensor, a number or an array.
        like: The Tensor operand, whose dtype and device rule.
        fn: The op's name, for the errors.

    Returns:
        ``value`` as a Tensor of ``like``'s dtype.

    Raises:
        TypeError: A Tensor or floating array of another dtype.
        ValueError: A Tensor or array on another device.
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
    """Both operands as Tensors of one dtype on one device.

    The rule is [as_operand][tinymbv2.functional.basic.as_operand]'s.

    Args:
        a: The left operand: a Tensor, a number or an array.
        b: The right operand: a Tensor, a number or an array.
        fn: The op's name, for the errors.

    Returns:
        ``(a, b)`` as Tensors.

    Raises:
        TypeError: Neither is a Tensor, or their dtypes differ.
        ValueError: They live on different devices.
    """
    if _has_device(a) and _has_device(b):
        check_same_device(fn, a=a, b=b)
    if isinstance(a, Tensor):
        return a, as_operand(b, a, fn)
    if isinstance(b, Tensor):
        return as_operand(a, b, fn), b
    raise TypeError(f"{fn}: expected at least one Tensor, got {type(a).__name__}, {type(b).__name__}")


def unbroadcast(grad, shape):
    r"""Sum ``grad`` over the axes that broadcasting stretched, back to ``shape``.

    If $y = x + b$ with $b$ of shape (C,) broadcast to (N, C), each $b_c$ was used N
    times, so $\partial L / \partial b_c = \sum_n \partial L / \partial y_{nc}$.

    Args:
        grad: The gradient of the broadcast result.
        shape: The operand's shape before broadcasting.

    Returns:
        The gradient of the operand, of ``shape``.
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


# -- binary arithmetic (NumPy broadcasting; gradients summed back to shape) --
class Add(Function):
    r"""$y = a + b$;  $\partial y / \partial a = 1$, $\partial y / \partial b = 1$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), unbroadcast(g, sb)


class Sub(Function):
    r"""$y = a - b$;  $\partial y / \partial a = 1$, $\partial y / \partial b = -1$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), unbroadcast(-g, sb)


class Mul(Function):
    r"""$y = a b$;  $\partial y / \partial a = b$, $\partial y / \partial b = a$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = unbroadcast(g * b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(g * a, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    r"""$y = a / b$;  $\partial y / \partial a = 1/b$, $\partial y / \partial b = -a/b^2$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = unbroadcast(g / b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-g * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class MatMul(Function):
    """$Y = AB$ on (..., n, k) @ (..., k, m);  $dA = G B^T$, $dB = A^T G$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(g @ b.swapaxes(-1, -2), a.shape)
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(a.swapaxes(-1, -2) @ g, b.shape)
        return ga, gb


def add(a, b) -> Tensor:
    """$a + b$, elementwise with NumPy broadcasting (``a + b`` on Tensors).

    Args:
        a: A Tensor, or a number or array (then ``b`` is a Tensor).
        b: A Tensor, or a number or array (then ``a`` is a Tensor).

    Returns:
        The result, broadcast to the operands' common shape.

    Raises:
        TypeError: Neither is a Tensor, or they have different floating dtypes.
        ValueError: They live on different devices.
    """
    return Add.apply(*binary_operands(a, b, "add"))


def sub(a, b) -> Tensor:
    """$a - b$, elementwise with NumPy broadcasting (``a - b`` on Tensors).

    Args:
        a: A Tensor, or a number or array (then ``b`` is a Tensor).
        b: A Tensor, or a number or array (then ``a`` is a Tensor).

    Returns:
        The result, broadcast to the operands' common shape.

    Raises:
        TypeError: Neither is a Tensor, or they have different floating dtypes.
        ValueError: They live on different devices.
    """
    return Sub.apply(*binary_operands(a, b, "sub"))


def mul(a, b) -> Tensor:
    """$a b$, elementwise with NumPy broadcasting (``a * b`` on Tensors).

    Args:
        a: A Tensor, or a number or array (then ``b`` is a Tensor).
        b: A Tensor, or a number or array (then ``a`` is a Tensor).

    Returns:
        The result, broadcast to the operands' common shape.

    Raises:
        TypeError: Neither is a Tensor, or they have different floating dtypes.
        ValueError: They live on different devices.
    """
    return Mul.apply(*binary_operands(a, b, "mul"))


def div(a, b) -> Tensor:
    """$a / b$, elementwise with NumPy broadcasting (``a / b`` on Tensors).

    Args:
        a: A Tensor, or a number or array (then ``b`` is a Tensor).
        b: A Tensor, or a number or array (then ``a`` is a Tensor).

    Returns:
        The result, broadcast to the operands' common shape.

    Raises:
        TypeError: Neither is a Tensor, or they have different floating dtypes.
        ValueError: They live on different devices.
    """
    return Div.apply(*binary_operands(a, b, "div"))


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy's rules; 1-D operands are promoted and squeezed back.

    (..., n, k) @ (..., k, m) -> (..., n, m), the leading axes broadcast (``a @ b``).

    Args:
        a: The left operand, rank >= 1.
        b: The right operand, rank >= 1.

    Returns:
        The product.

    Raises:
        ValueError: An operand of rank 0, or inner dimensions that differ.
    """
    a, b = binary_operands(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: expected operands of rank >= 1, got {a.shape} and {b.shape}")
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = reshape(a, (1, a.shape[0]))
    if squeeze_b:
        b = reshape(b, (b.shape[0], 1))
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
            f"({a.shape[-1]} != {b.shape[-2]})"
        )
    out = MatMul.apply(a, b)
    if squeeze_a or squeeze_b:
        shape = out.shape[:-2] + out.shape[-2:][int(squeeze_a): 2 - int(squeeze_b)]
        out = reshape(out, shape)
    return out


# -- unary elementwise ---------------------------------------------------
class Neg(Function):
    r"""$y = -x$;  $\partial y / \partial x = -1$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Function):
    r"""$y = x^p$ for a constant $p$;  $\partial y / \partial x = p\,x^{p-1}$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, p):
        ctx.save_for_backward(x)
        ctx.p = p
        return x ** p

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        p = ctx.p
        return g * p * x ** (p - 1), None


class Exp(Function):
    r"""$y = e^x$;  $\partial y / \partial x = y$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class Log(Function):
    r"""$y = \ln x$;  $\partial y / \partial x = 1/x$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


class Clamp(Function):
    r"""$y = \min(\max(x, lo), hi)$;  $\partial y / \partial x = 1$ where $lo \le x \le hi$.

    Elsewhere it is 0; at the bounds it is 1, PyTorch's choice.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, lo, hi):
        xp = get_array_module(x)
        mask = xp.ones(x.shape, dtype=bool)
        if lo is not None:
            mask &= x >= lo
        if hi is not None:
            mask &= x <= hi
        ctx.save_for_backward(mask)
        return xp.clip(x, lo, hi).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None, None


class ReLU(Function):
    r"""$y = \max(x, 0)$;  $\partial y / \partial x = 1$ for $x > 0$, else 0.

    At $x = 0$ the derivative is 0, as PyTorch's.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x):
        mask = x > 0
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


class Sigmoid(Function):
    r"""$y = \sigma(x) = 1 / (1 + e^{-x})$;  $\partial y / \partial x = y (1 - y)$.

    Computed from $e^{-|x|} \in (0, 1]$, so no exponential overflows: $1 / (1 + e^{-x})$
    for $x \ge 0$, $e^{x} / (1 + e^{x})$ below. LR-ASPP gates its features with it.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1 - y)


def neg(x) -> Tensor:
    """$-x$ for a Tensor ``x`` (``-x``)."""
    return Neg.apply(check_tensor(x, "neg"))


def pow(x, exponent) -> Tensor:  # noqa: A001 - mirrors torch.pow
    """$x^p$ elementwise, for a constant real exponent (``x ** p``).

    Args:
        x: The Tensor.
        exponent: $p$, a real number (not a Tensor).

    Returns:
        $x^p$, of ``x``'s shape and dtype.

    Raises:
        TypeError: The exponent is not a real number.
    """
    check_tensor(x, "pow")
    if not isinstance(exponent, numbers.Real):
        raise TypeError(f"pow: expected a constant real exponent, got {type(exponent).__name__}")
    return Pow.apply(x, x.dtype.type(exponent))


def exp(x) -> Tensor:
    """$e^x$ elementwise, for a Tensor ``x``."""
    return Exp.apply(check_tensor(x, "exp"))


def log(x) -> Tensor:
    r"""$\ln x$ elementwise, for a Tensor ``x``."""
    return Log.apply(check_tensor(x, "log"))


def relu(x) -> Tensor:
    r"""$\max(x, 0)$ elementwise, for a Tensor ``x``."""
    return ReLU.apply(check_tensor(x, "relu"))


def sigmoid(x) -> Tensor:
    r"""$1 / (1 + e^{-x})$ elementwise, for a Tensor ``x``: values in (0, 1)."""
    return Sigmoid.apply(check_tensor(x, "sigmoid"))


def clamp(x, min=None, max=None) -> Tensor:  # noqa: A002 - torch's names
    r"""$\min(\max(x, \text{min}), \text{max})$ elementwise; either bound may be left out.

    Args:
        x: The Tensor.
        min: The lower bound; None: none.
        max: The upper bound; None: none.

    Returns:
        The clamped Tensor.

    Raises:
        ValueError: Neither bound is given.
    """
    check_tensor(x, "clamp")
    if min is None and max is None:
        raise ValueError("clamp: expected at least one of min and max, got neither")
    return Clamp.apply(x, min, max)


# -- reductions ----------------------------------------------------------
def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


class Sum(Function):
    """$y$ = the sum over ``axes``;  every summed element gets the gradient of its sum.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.shape, ctx.axes, ctx.keepdims = x.shape, axes, keepdims
        return x.sum(axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        if not ctx.keepdims:
            g = xp.expand_dims(g, ctx.axes)
        return xp.broadcast_to(g, ctx.shape).copy(), None, None


def sum(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - mirrors torch.sum
    """The sum over ``axis`` (``x.sum(axis)``).

    Args:
        x: The Tensor.
        axis: An axis, a tuple of axes, or None for all of them.
        keepdims: Keep the summed axes, with size 1.

    Returns:
        The sums.
    """
    check_tensor(x, "sum")
    return Sum.apply(x, _axes(axis, x.ndim), keepdims)


def mean(x, axis=None, keepdims=False) -> Tensor:
    """The mean over ``axis`` (``x.mean(axis)``): the sum times 1 / (the number of values).

    Args:
        x: The Tensor.
        axis: An axis, a tuple of axes, or None for all of them.
        keepdims: Keep the averaged axes, with size 1.

    Returns:
        The means.
    """
    check_tensor(x, "mean")
    axes = _axes(axis, x.ndim)
    count = 1
    for a in axes:
        count *= x.shape[a]
    return Sum.apply(x, axes, keepdims) * (1.0 / count)


# -- shape ops -------------------------------------------------------------
class Reshape(Function):
    """The same values in a new shape; the gradient is reshaped back.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


class Transpose(Function):
    """Permute axes; the gradient is permuted back by the inverse permutation.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        inverse = None if ctx.axes is None else tuple(
            sorted(range(len(ctx.axes)), key=lambda i: ctx.axes[i])
        )
        return g.transpose(inverse), None


class GetItem(Function):
    r"""$y = x[\text{index}]$;  the gradient is scattered back (added, for repeated indices).

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        return x[index]

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        gx = xp.zeros(ctx.shape, dtype=ctx.dtype)
        xp.add.at(gx, ctx.index, g)
        return gx, None


class Concatenate(Function):
    """Tensors joined along an axis; the gradient is cut back into their pieces.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = get_array_module(arrays[0])
        ctx.axis = axis
        ctx.ends = [int(e) for e in np.cumsum([a.shape[axis] for a in arrays])[:-1]]
        return xp.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        return tuple(xp.split(g, ctx.ends, axis=ctx.axis))


def reshape(x, shape) -> Tensor:
    """The same values in a new shape (``x.reshape(shape)``).

    Args:
        x: The Tensor.
        shape: The new shape, with as many elements (one entry may be -1).

    Returns:
        The reshaped Tensor.
    """
    check_tensor(x, "reshape")
    return Reshape.apply(x, tuple(shape))


def transpose(x, axes=None) -> Tensor:
    """Permute the axes (``x.transpose(axes)``; ``x.T`` reverses them).

    Args:
        x: The Tensor.
        axes: The new order of the axes; None: reversed.

    Returns:
        The transposed Tensor.
    """
    check_tensor(x, "transpose")
    return Transpose.apply(x, None if axes is None else tuple(axes))


def getitem(x, index) -> Tensor:
    """``x[index]``: NumPy indexing (integers, slices, arrays, Tensors of indices).

    Args:
        x: The Tensor.
        index: The index; Tensors in it are used as index arrays.

    Returns:
        The selected values; their gradient is scattered back into ``x``'s shape.
    """
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(x, index)


def cat(tensors, axis: int = 0) -> Tensor:
    """Join Tensors along ``axis`` (``torch.cat``): shapes equal except along it.

    Args:
        tensors: A non-empty sequence of Tensors of one dtype and device.
        axis: The axis they are joined along.

    Returns:
        The joined Tensor; its gradient flows back to each piece.

    Raises:
        ValueError: No Tensors, or shapes that differ off ``axis``.
    """
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected at least one Tensor, got none")
    for i, t in enumerate(tensors):
        check_tensor(t, "cat", f"tensors[{i}]")
    first = tensors[0]
    axis = axis % first.ndim
    for i, t in enumerate(tensors):
        if t.ndim != first.ndim or any(a != b for k, (a, b) in enumerate(zip(t.shape, first.shape))
                                       if k != axis):
            raise ValueError(f"cat: expected shapes equal to {tuple(first.shape)} except along axis "
                             f"{axis}, got {tuple(t.shape)} for tensors[{i}]")
    check_same_dtype("cat", **{f"tensors[{i}]": t for i, t in enumerate(tensors)})
    return Concatenate.apply(*tensors, axis=axis)


def flatten(x, start_dim: int = 1) -> Tensor:
    """Merge every axis from ``start_dim`` on: (N, C, H, W) -> (N, C·H·W) for ``start_dim=1``.

    Args:
        x: The Tensor.
        start_dim: The first axis merged.

    Returns:
        The flattened Tensor.
    """
    check_tensor(x, "flatten")
    start = start_dim % max(x.ndim, 1)
    rest = 1
    for s in x.shape[start:]:
        rest *= s
    return reshape(x, x.shape[:start] + (rest,))
