r"""Fake quantization: quantize, then dequantize, in float, with a straight-through gradient.

For a scale $s$, zero point $z$ and integer range $[q_\min, q_\max]$:

$$q = \text{clamp}\big(\text{round}(x / s) + z,\; q_\min,\; q_\max\big), \qquad
\hat x = (q - z)\, s,$$

with rounding half to even (NumPy's ``rint``, PyTorch's ``nearbyint``), $s$ a float32 number
(as PyTorch and ONNX store scales) and $x / s$ computed as $x \cdot (1 / s)$ with $1 / s$ in
float32, and $\hat x$ a float32 number whatever x's dtype (the value an int8 tensor stands
for: ONNX's ``DequantizeLinear`` computes it in float32), as PyTorch's kernels do. $\hat x$ is what an int8 network computes with, in
float: training or evaluating through it shows what the rounding and the clipping cost
without any integer kernel (the course's simulation; the int8 kernels compute the same values
with integers).

The rounding has a zero derivative almost everywhere, so its true gradient would stop all
learning. The **straight-through estimator** (Bengio et al. 2013) passes the gradient through
unchanged where $x$ was inside the range and stops it where it was clipped:

$$\frac{\partial L}{\partial x} = \frac{\partial L}{\partial \hat x}\,
\big[q_\min \le \text{round}(x / s) + z \le q_\max\big],$$

which is what quantization-aware training trains with (PyTorch's
``fake_quantize_per_tensor_affine`` and ``fake_quantize_per_channel_affine``, checked against
them in tests/quant). The scale and zero point are not trained here.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module


def quantize_array(x, scale, zero_point, qmin: int, qmax: int, axis=None):
    r"""The integers $q$ of x, and where x was inside the range (the module's formulas).

    Args:
        x: A float array (NumPy or CuPy).
        scale: $s$: a number, or one per entry of x's axis ``axis``.
        zero_point: $z$ (or one per channel).
        qmin: $q_\min$.
        qmax: $q_\max$.
        axis: None (per tensor) or the channel axis.

    Returns:
        ``(q, inside)``: $q$ clamped to the range, as floats of x's dtype, and the boolean
        array $q_\min \le \text{round}(x / s) + z \le q_\max$.
    """
    xp = get_array_module(x)
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    s32 = xp.asarray(scale, np.float32)  # scales are stored as float32 (PyTorch, ONNX)
    z = xp.asarray(zero_point, x.dtype).reshape(shape)
    inv = (np.float32(1.0) / s32).astype(x.dtype).reshape(shape)
    q = xp.rint(x * inv) + z
    return xp.clip(q, qmin, qmax), (q >= qmin) & (q <= qmax)


class FakeQuantize(Function):
    """Quantize-dequantize per tensor or per channel; the gradient straight through (module).

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis):
        xp = get_array_module(x)
        shape = [1] * x.ndim
        if axis is not None:
            shape[axis] = -1
        q, inside = quantize_array(x, scale, zero_point, qmin, qmax, axis)
        ctx.save_for_backward(inside)
        # the dequantized value (q - z) s is a float32 number, as DequantizeLinear's output
        steps = (q - xp.asarray(zero_point, x.dtype).reshape(shape)).astype(np.float32)
        return (steps * xp.asarray(scale, np.float32).reshape(shape)).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside


def fake_quantize(x, scale, zero_point, qmin: int = -128, qmax: int = 127, axis=None) -> Tensor:
    r"""$\hat x = (\text{clamp}(\text{round}(x / s) + z, q_\min, q_\max) - z)\, s$, with the
    straight-through gradient (see the module).

    Args:
        x: A float Tensor, any shape.
        scale: $s > 0$: a number (per tensor) or one per entry of ``x``'s axis ``axis``.
        zero_point: $z$, an integer in $[q_\min, q_\max]$ (or one per channel).
        qmin: $q_\min$ (int8: -128; uint8: 0).
        qmax: $q_\max$ (int8: 127; uint8: 255).
        axis: None (per tensor), or the channel axis of per-channel ``scale`` and
            ``zero_point`` (0 for a convolution's weight (Co, Ci, kh, kw)).

    Returns:
        $\hat x$, a Tensor of ``x``'s shape and dtype.

    Raises:
        TypeError: ``x`` not a floating Tensor.
        ValueError: A scale that is not positive and finite, a zero point outside the range,
            ``qmin >= qmax``, or per-channel values that do not match ``x``'s axis.
    """
    fn = "fake_quantize"
    if not isinstance(x, Tensor) or not np.issubdtype(np.dtype(x.dtype), np.floating):
        raise TypeError(f"{fn}: expected a floating Tensor x, got {type(x).__name__}"
                        + (f" of {x.dtype}" if isinstance(x, Tensor) else ""))
    if not (isinstance(qmin, (int, np.integer)) and isinstance(qmax, (int, np.integer))
            and qmin < qmax):
        raise ValueError(f"{fn}: expected integers qmin < qmax, got {qmin!r} and {qmax!r}")
    s, z = np.asarray(scale, np.float64), np.asarray(zero_point)
    if axis is None:
        if s.ndim or z.ndim:
            raise ValueError(f"{fn}: per tensor (axis=None) takes one scale and one zero point, "
                             f"got shapes {s.shape} and {z.shape}")
    else:
        if not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
            raise ValueError(f"{fn}: axis must be an axis of x {tuple(x.shape)}, got {axis!r}")
        axis = int(axis) % x.ndim
        want = (x.shape[axis],)
        if s.shape != want or z.shape != want:
            raise ValueError(f"{fn}: per channel on axis {axis} takes {want[0]} scales and zero "
                             f"points, got shapes {s.shape} and {z.shape}")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"{fn}: expected scales > 0 and finite, got {s}")
    if not np.issubdtype(z.dtype, np.integer) or np.any(z < qmin) or np.any(z > qmax):
        raise ValueError(f"{fn}: expected integer zero points in [{qmin}, {qmax}], got {z}")
    return FakeQuantize.apply(x, s, z, int(qmin), int(qmax), axis)
