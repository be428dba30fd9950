r"""Element-wise quantization in Numba: the image to uint8, and ONNX's ``QLinearAdd``.

The contracts are ``int8_reference.quantize_uint8`` and ``int8_reference.qlinear_add``
(the arguments checked there too); these loops perform the same float32 operations in the
same order, one element at a time, so the integers are the reference's:

* ``quantize_uint8``: $q = \text{clip}(\text{rint}(x \cdot \text{inv}) + z, 0, 255)$ with
  ``inv = float32(1) / s``;
* ``qlinear_add``: $(\text{float32}(a) - z_a) s_a + (\text{float32}(b) - z_b) s_b$, then the
  same quantization with the sum's scale and zero point.

One pass over the data where NumPy makes one per operation (each a full-size temporary).
On one thread: a memory pass gains little from a second one, and every parallel loop
starts by waking the pool's threads (``pool``), which a network with a residual sum in
every other block pays once per sum; the same bits at any thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .cache import CACHE
from ..int8_reference import qlinear_add_args, quantize_uint8_args

_JIT = dict(cache=CACHE, boundscheck=False, fastmath=False)


@njit(inline="always")
def quantize_value(t, inv, z):
    """float32 t to uint8: the view's float32 steps (rint is half to even); also the residual
    sum in ``int8``'s pointwise GEMM epilogue.

    Args:
        t: The float32 value.
        inv: float32 ``1 / scale``.
        z: The float32 zero point.

    Returns:
        ``uint8(clip(rint(t * inv) + z, 0, 255))``.
    """
    q = np.rint(t * inv) + z
    return np.uint8(min(max(q, np.float32(0)), np.float32(255)))


@njit(**_JIT)
def _quantize(x, inv, z, out):
    """out = quantize(x), both flat."""
    for i in range(x.shape[0]):
        out[i] = quantize_value(x[i], inv, z)
    return out


@njit(**_JIT)
def _add(a, za, sa, b, zb, sb, inv, z, out):
    """out = quantize(dequantize(a) + dequantize(b)), all flat."""
    for i in range(a.shape[0]):
        total = (np.float32(a[i]) - za) * sa + (np.float32(b[i]) - zb) * sb
        out[i] = quantize_value(total, inv, z)
    return out


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def quantize_uint8(x, scale, zero_point):
    """Float32 x to uint8; the contract is ``int8_reference.quantize_uint8``'s.

    Args:
        x: Float32 array, any shape.
        scale: Positive scalar (float32).
        zero_point: Scalar, 0 to 255.

    Returns:
        uint8 array of x's shape.
    """
    x, scale, zp = quantize_uint8_args("quantize_uint8", x, scale, zero_point)
    inv = np.float32(np.float32(1.0) / scale)
    z = np.float32(zp)
    out = np.empty(x.shape, np.uint8)
    _quantize(_flat(x), inv, z, out.reshape(-1))
    return out


def qlinear_add(aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, y_scale, y_zero_point):
    """ONNX ``QLinearAdd`` on uint8 tensors; the contract is ``int8_reference.qlinear_add``'s.

    Args:
        aq: uint8 array.
        a_scale: Its scale.
        a_zero_point: Its zero point (uint8).
        bq: uint8 array of aq's shape.
        b_scale: Its scale.
        b_zero_point: Its zero point (uint8).
        y_scale: The sum's scale.
        y_zero_point: The sum's zero point (uint8).

    Returns:
        The sum, uint8, aq's shape.
    """
    aq, sa, za, bq, sb, zb, sy, zy = qlinear_add_args(
        "qlinear_add", aq, a_scale, a_zero_point, bq, b_scale, b_zero_point, y_scale,
        y_zero_point)
    inv = np.float32(np.float32(1.0) / sy)
    za, zb, z, sa, sb = np.float32(za), np.float32(zb), np.float32(zy), np.float32(sa), np.float32(sb)
    out = np.empty(aq.shape, np.uint8)
    _add(_flat(aq), za, sa, _flat(bq), zb, sb, inv, z, out.reshape(-1))
    return out
