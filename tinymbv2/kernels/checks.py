"""Input checks shared by the kernel sets (reference, numba and CuPy).

A kernel called with the wrong shapes must fail here with a message naming
the kernel, what it expected and what it got, not deep inside NumPy or Numba
with a broadcasting error (or, worse, return a silently wrong answer).
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def pair(value, what: str, fn: str) -> tuple[int, int]:
    """``(a, b)`` from an int or a pair of ints.

    Args:
        value: An int or a pair.
        what: The argument's name, for the message.
        fn: The kernel's name, for the message.

    Returns:
        The pair of ints.

    Raises:
        TypeError: Neither an int nor a pair.
    """
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        a, b = value
        return int(a), int(b)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {what} must be an int or a pair of ints, got {value!r}") from None


def same_float_dtype(fn: str, **arrays) -> np.dtype:
    """The common dtype of ``arrays``; float32 or float64, all alike (no silent upcast).

    Args:
        fn: The kernel's name, for the message.
        **arrays: The arrays by name.

    Returns:
        The dtype.

    Raises:
        TypeError: A dtype other than float32 or float64, or two that differ.
    """
    dtypes = {name: np.asarray(a).dtype for name, a in arrays.items()}
    first = next(iter(dtypes.values()))
    for name, dt in dtypes.items():
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"{fn}: {name} must be float32 or float64, got {dt}")
        if dt != first:
            raise TypeError(f"{fn}: all arrays must share one dtype, got {dtypes}")
    return first


def ndim(fn: str, name: str, a, n: int) -> None:
    """Raise unless ``a`` has ``n`` dimensions.

    Args:
        fn: The kernel's name, for the message.
        name: The array's name, for the message.
        a: The array.
        n: The rank required.

    Raises:
        ValueError: Another rank.
    """
    if np.ndim(a) != n:
        raise ValueError(f"{fn}: {name} must be {n}-D, got shape {np.shape(a)}")


def dilation_pair(fn, dilation) -> tuple[int, int]:
    """``(dh, dw)`` from an int or a pair, each >= 1: the spacing between a kernel's taps.

    Args:
        fn: The kernel's name, for the message.
        dilation: An int or (dh, dw).

    Returns:
        The pair of ints.

    Raises:
        TypeError: Neither an int nor a pair of ints.
        ValueError: A value below 1.
    """
    dh, dw = pair(dilation, "dilation", fn)
    if dh < 1 or dw < 1:
        raise ValueError(f"{fn}: dilation must be >= 1, got {(dh, dw)}")
    return dh, dw


def undilated(dilation) -> bool:
    """Whether ``dilation`` (an int or a pair) is 1 along both axes: the usual convolution.

    Args:
        dilation: An int or (dh, dw).

    Returns:
        True for 1 and (1, 1).
    """
    if isinstance(dilation, (int, np.integer)):
        return dilation == 1
    return tuple(dilation) == (1, 1)


def conv_geometry(fn, x_shape, w_shape, stride, padding, depthwise=False, dilation=1):
    r"""Validate a convolution and return ``(sh, sw), (ph, pw), (Ho, Wo)``.

    With dilation $d$ a kernel of $k$ taps spans $d (k - 1) + 1$ input pixels, so
    $H_o = \lfloor (H + 2 p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1$ (PyTorch's).

    Args:
        fn: The kernel's name, for the message.
        x_shape: (N, C, H, W).
        w_shape: (Co, C, kh, kw) for a dense convolution, (C, 1, kh, kw) for a depthwise one.
        stride: An int or (sh, sw), >= 1.
        padding: An int or (ph, pw), >= 0.
        depthwise: The convolution is depthwise.
        dilation: An int or (dh, dw), >= 1 (1: taps side by side).

    Returns:
        ``((sh, sw), (ph, pw), (Ho, Wo))``.

    Raises:
        TypeError: A stride or padding that is neither an int nor a pair.
        ValueError: Shapes that do not fit, or a stride, padding or kernel out of range.
    """
    if len(x_shape) != 4:
        raise ValueError(f"{fn}: x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"{fn}: w must be 4-D (Co, Ci, kh, kw), got shape {tuple(w_shape)}")
    n, c, h, w = x_shape
    co, ci, kh, kw = w_shape
    if depthwise and (ci != 1 or co != c):
        raise ValueError(f"{fn}: depthwise w must be ({c}, 1, kh, kw) for {c} channels, got {tuple(w_shape)}")
    if not depthwise and ci != c:
        raise ValueError(f"{fn}: w expects {ci} input channels, x has {c} (x {tuple(x_shape)}, w {tuple(w_shape)})")
    sh, sw = pair(stride, "stride", fn)
    ph, pw = pair(padding, "padding", fn)
    if sh < 1 or sw < 1:
        raise ValueError(f"{fn}: stride must be >= 1, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got {(ph, pw)}")
    if kh < 1 or kw < 1:
        raise ValueError(f"{fn}: kernel must be at least 1x1, got {(kh, kw)}")
    dh, dw = dilation_pair(fn, dilation)
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # input pixels a dilated kernel covers
    ho = (h + 2 * ph - span_h) // sh + 1
    wo = (w + 2 * pw - span_w) // sw + 1
    if ho < 1 or wo < 1:
        spans = "" if (dh, dw) == (1, 1) else f" (spanning {(span_h, span_w)} at dilation {(dh, dw)})"
        raise ValueError(
            f"{fn}: kernel {(kh, kw)}{spans} does not fit the padded input "
            f"{(h + 2 * ph, w + 2 * pw)} (input {(h, w)}, padding {(ph, pw)})"
        )
    return (sh, sw), (ph, pw), (ho, wo)


def grad_out_shape(fn, gy_shape, expected) -> None:
    """Raise unless the output gradient has the output's shape.

    Args:
        fn: The kernel's name, for the message.
        gy_shape: The gradient's shape.
        expected: The output's shape.

    Raises:
        ValueError: Another shape.
    """
    if tuple(gy_shape) != tuple(expected):
        raise ValueError(f"{fn}: gy must have shape {tuple(expected)}, got {tuple(gy_shape)}")


def batch_norm_args(fn, x, train=False, **per_channel) -> None:
    """Raise unless ``x`` is 4-D and every per-channel array has one value per channel.

    Args:
        fn: The kernel's name, for the message.
        x: The input (N, C, H, W).
        train: Training mode: the batch must have values to take statistics of.
        **per_channel: The (C,) arrays by name (weight, bias, mean, ...).

    Raises:
        ValueError: Another shape, or an empty batch in training mode.
    """
    ndim(fn, "x", x, 4)
    c = x.shape[1]
    if train and x.shape[0] * x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"{fn}: no values per channel to take statistics of, x has shape {x.shape}")
    for name, a in per_channel.items():
        if np.shape(a) != (c,):
            raise ValueError(f"{fn}: {name} must have shape ({c},) for {c} channels, got {np.shape(a)}")


def relu6_bias(fn, relu6, bias, weight, relu=False):
    """The bias a BatchNorm backward needs: required with ``relu6`` (or ``relu``), else
    zeros if absent.

    The fused ReLU6's (or ReLU's) mask is recomputed from the BatchNorm output, which needs
    the bias.

    Args:
        fn: The kernel's name, for the message.
        relu6: The forward applied ReLU6.
        bias: The bias, or None.
        weight: The weight, whose shape and dtype the zeros take.
        relu: The forward applied ReLU.

    Returns:
        The bias.

    Raises:
        ValueError: ``relu6`` or ``relu`` without a bias.
    """
    if bias is None:
        if relu6 or relu:
            flag = "relu6" if relu6 else "relu"
            raise ValueError(f"{fn}: {flag}=True needs the bias, to recompute the BatchNorm output")
        return np.zeros_like(weight)
    return bias


def clamp_bound(fn, relu6, relu):
    """The clamp a fused BatchNorm applies: ``(clamp, top)``, y clamped to [0, top] if clamp.

    ReLU6 is the clamp to [0, 6], ReLU the clamp to [0, inf): one kernel serves both
    with the upper bound as an argument.

    Args:
        fn: The kernel's name, for the message.
        relu6: Fuse ReLU6.
        relu: Fuse ReLU.

    Returns:
        ``(bool, float)``: whether to clamp, and the upper bound (6.0 or inf).

    Raises:
        ValueError: both asked for.
    """
    if relu6 and relu:
        raise ValueError(f"{fn}: expected at most one of relu6 and relu, got both True")
    return bool(relu6 or relu), (6.0 if relu6 else np.inf)


def matmul_args(fn, a, b) -> None:
    """Raise unless ``a @ b`` is a product of matrices: a (M, K), b (K, N).

    Args:
        fn: The kernel's name, for the message.
        a: The left matrix.
        b: The right matrix.

    Raises:
        ValueError: Another rank, or inner dimensions that differ.
    """
    ndim(fn, "a", a, 2)
    ndim(fn, "b", b, 2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"{fn}: inner dimensions differ, a {tuple(a.shape)} @ b {tuple(b.shape)}")


def pointwise_args(fn, a, a_name, w, axis) -> None:
    """Raise unless ``a`` is 4-D and ``w`` is (Co, Ci, 1, 1) with ``w.shape[axis]`` = a's channels.

    Args:
        fn: The kernel's name, for the message.
        a: The activation (N, C, H, W), an input or an output gradient.
        a_name: Its name, for the message.
        w: The 1x1 weight.
        axis: The weight axis that matches ``a``'s channels (1: Ci, 0: Co).

    Raises:
        ValueError: Another shape.
    """
    ndim(fn, a_name, a, 4)
    if w.ndim != 4 or w.shape[2:] != (1, 1) or w.shape[axis] != a.shape[1]:
        want = f"(Co, {a.shape[1]}, 1, 1)" if axis == 1 else f"({a.shape[1]}, Ci, 1, 1)"
        raise ValueError(f"{fn}: w must have shape {want} for {a_name} {a.shape}, got {w.shape}")


def pointwise_weight_args(fn, gy, x) -> None:
    """Raise unless gy (N, Co, H, W) and x (N, Ci, H, W) are both 4-D, sharing N, H and W.

    They are the arguments of a 1x1 convolution's weight gradient.

    Args:
        fn: The kernel's name, for the message.
        gy: The output gradient.
        x: The input.

    Raises:
        ValueError: Another rank, or N, H or W that differ.
    """
    ndim(fn, "gy", gy, 4)
    ndim(fn, "x", x, 4)
    if x.shape[0] != gy.shape[0] or x.shape[2:] != gy.shape[2:]:
        raise ValueError(f"{fn}: x {x.shape} and gy {gy.shape} must share N, H, W")


def interpolate_args(fn, x, size, x_shape=None):
    """Check a resize's array (4-D, float32 or float64) and, for the backward, its shape.

    Args:
        fn: The kernel's name, for the message.
        x: The input (forward) or the output's gradient (backward).
        size: The output plane (Ho, Wo) the array must have (backward) or will have.
        x_shape: The input's shape (backward), or None (forward).

    Returns:
        The dtype.

    Raises:
        TypeError: A dtype other than float32 or float64.
        ValueError: An array that is not 4-D, or a gradient whose shape does not fit.
    """
    dtype = same_float_dtype(fn, x=np.empty(0, x.dtype))
    name = "x" if x_shape is None else "gy"
    if len(x.shape) != 4:
        raise ValueError(f"{fn}: {name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x_shape is not None:
        want = tuple(x_shape[:2]) + tuple(size)
        if len(x_shape) != 4 or tuple(x.shape) != want:
            raise ValueError(f"{fn}: gy must have shape {want} for x {tuple(x_shape)}, "
                             f"got {tuple(x.shape)}")
    return dtype
