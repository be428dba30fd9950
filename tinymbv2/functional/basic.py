"""Elementwise arithmetic, reductions and shape ops, each with its derivative.

Every op is a :class:`~tinymbv2.autograd.Function`: ``forward`` computes the
value from arrays, ``backward`` maps dL/d(output) to dL/d(each input).
"""
from __future__ import annotations

import numbers

from ..autograd import Function, Tensor
from ..backend import get_array_module
from .checks import check_same_device, check_tensor


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


# -- binary arithmetic (NumPy broadcasting; gradients summed back to shape) --
class Add(Function):
    """y = a + b;  dy/da = 1, dy/db = 1.

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
    """y = a - b;  dy/da = 1, dy/db = -1.

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
    """y = a * b;  dy/da = b, dy/db = a.

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
    """y = a / b;  dy/da = 1/b, dy/db = -a/b^2.

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
    """Y = A @ B on (..., n, k) @ (..., k, m);  dA = G @ B^T, dB = A^T @ G.

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
    return Add.apply(*binary_operands(a, b, "add"))


def sub(a, b) -> Tensor:
    return Sub.apply(*binary_operands(a, b, "sub"))


def mul(a, b) -> Tensor:
    return Mul.apply(*binary_operands(a, b, "mul"))


def div(a, b) -> Tensor:
    return Div.apply(*binary_operands(a, b, "div"))


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy's rules; 1-D operands are promoted and squeezed back."""
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
    """y = -x;  dy/dx = -1.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Function):
    """y = x^p for a constant p;  dy/dx = p x^(p-1).

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
    """y = e^x;  dy/dx = y.

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
    """y = ln x;  dy/dx = 1/x.

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
    """y = min(max(x, lo), hi);  dy/dx = 1 where lo <= x <= hi, else 0 (PyTorch's choice).

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
    """y = max(x, 0);  dy/dx = 1 for x > 0, and 0 at x = 0 (as PyTorch).

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


def neg(x) -> Tensor:
    return Neg.apply(check_tensor(x, "neg"))


def pow(x, exponent) -> Tensor:  # noqa: A001 - mirrors torch.pow
    check_tensor(x, "pow")
    if not isinstance(exponent, numbers.Real):
        raise TypeError(f"pow: expected a constant real exponent, got {type(exponent).__name__}")
    return Pow.apply(x, x.dtype.type(exponent))


def exp(x) -> Tensor:
    return Exp.apply(check_tensor(x, "exp"))


def log(x) -> Tensor:
    return Log.apply(check_tensor(x, "log"))


def relu(x) -> Tensor:
    return ReLU.apply(check_tensor(x, "relu"))


def clamp(x, min=None, max=None) -> Tensor:  # noqa: A002 - torch's names
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
    """y = sum over axes;  every summed element gets the gradient of its sum.

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
    check_tensor(x, "sum")
    return Sum.apply(x, _axes(axis, x.ndim), keepdims)


def mean(x, axis=None, keepdims=False) -> Tensor:
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
    """y = x[index];  the gradient is scattered back (added, for repeated indices).

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


def reshape(x, shape) -> Tensor:
    check_tensor(x, "reshape")
    return Reshape.apply(x, tuple(shape))


def transpose(x, axes=None) -> Tensor:
    check_tensor(x, "transpose")
    return Transpose.apply(x, None if axes is None else tuple(axes))


def getitem(x, index) -> Tensor:
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(x, index)


def flatten(x, start_dim: int = 1) -> Tensor:
    """Merge every axis from ``start_dim`` on: (N, C, H, W) -> (N, C*H*W) for start_dim=1."""
    check_tensor(x, "flatten")
    start = start_dim % max(x.ndim, 1)
    rest = 1
    for s in x.shape[start:]:
        rest *= s
    return reshape(x, x.shape[:start] + (rest,))
