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
    """One output: ``acc`` int32, ``m`` float32 multiplier, ``zp`` int32 zero point, ``lo``,
    ``hi`` float32 bounds of ``acc * m`` (``q_min - zp``, ``q_max - zp``)."""
    f = np.float32(acc) * m
    f = min(max(f, lo), hi)
    return np.int32(np.rint(f)) + zp
