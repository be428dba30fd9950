"""One int32 sum requantized as onnxruntime's CPU kernels (MLAS) do it, for the numba int8 kernels.

$q_y = \\mathrm{round}(\\mathrm{clamp}(\\mathrm{float32}(acc) \\cdot m, lo, hi)) + z_y$: the
same float32 operations in the same order as ``int8_reference.requantize`` (the order
matters for the same bits), inlined into every kernel's epilogue.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always")
def requant(acc, m, zp, lo, hi):
    """One output of a quantized product.

    Args:
        acc: The int32 sum (bias included).
        m: The float32 multiplier $s_x s_w / s_y$ of its channel.
        zp: The output's zero point (int32).
        lo: The float32 lower bound of ``acc * m`` (``q_min - zp``).
        hi: The float32 upper bound (``q_max - zp``).

    Returns:
        The output integer (int32), within ``[q_min, q_max]``.
    """
    f = np.float32(acc) * m
    f = min(max(f, lo), hi)
    return np.int32(np.rint(f)) + zp
