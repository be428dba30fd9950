r"""Quantization parameters: which integers, and the scale and zero point onto them.

An 8-bit quantized tensor stores integers $q \in [q_\min, q_\max]$ and one float scale $s$
and integer zero point $z$ (per tensor, or per output channel for weights); the value it
stands for is $(q - z)\, s$. Choosing $s$ and $z$ for a float range $[a, b]$:

* the range is first widened to hold 0, $a \leftarrow \min(a, 0)$, $b \leftarrow \max(b, 0)$,
  so that 0 (the zero padding of a convolution, a ReLU's output) is stored exactly;
* **symmetric**: $s = \max(-a, b) / ((q_\max - q_\min) / 2)$ and $z = 0$ for int8 (128 for
  uint8): weights, whose values lie around 0;
* **affine**: $s = (b - a) / (q_\max - q_\min)$ and $z = q_\min - \text{round}(a / s)$, clamped
  to the range: activations such as ReLU6's, all on one side of 0, use every integer;
* $s$ is at least float32's machine epsilon, so a constant-zero tensor still divides.

These are the formulas of PyTorch's observers (``torch.ao.quantization.observer``,
``_calculate_qparams``), checked against them in tests/quant.
"""
from __future__ import annotations

import numpy as np

QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
"""$(q_\\min, q_\\max)$ of each storage type."""

EPS = float(np.finfo(np.float32).eps)
"""The smallest scale (PyTorch's observers' ``eps``)."""


def quant_range(dtype: str) -> tuple[int, int]:
    """$(q_\\min, q_\\max)$ of ``"int8"`` or ``"uint8"``.

    Args:
        dtype: The storage type's name.

    Returns:
        The two integers.

    Raises:
        ValueError: Another name.
    """
    if dtype not in QUANT_RANGES:
        raise ValueError(f"quant_range: expected dtype 'int8' or 'uint8', got {dtype!r}")
    return QUANT_RANGES[dtype]


def choose_qparams(min_val, max_val, dtype: str = "int8", symmetric: bool = True):
    """The scale and zero point that store the float range ``[min_val, max_val]``.

    Per tensor (two numbers) or per channel (two arrays of one length). The formulas are in
    the module's docstring.

    Args:
        min_val: The smallest value (or one per channel).
        max_val: The largest value (or one per channel), at least ``min_val``.
        dtype: ``"int8"`` or ``"uint8"``.
        symmetric: The symmetric scheme (else affine).

    Returns:
        ``(scale, zero_point)``: float64 and int64 arrays of ``min_val``'s shape (0-d for
        numbers).

    Raises:
        ValueError: An unknown dtype, shapes that differ, a NaN or infinite bound, or
            ``min_val > max_val``.
    """
    qmin, qmax = quant_range(dtype)
    lo, hi = np.asarray(min_val, np.float64), np.asarray(max_val, np.float64)
    if lo.shape != hi.shape:
        raise ValueError(f"choose_qparams: min_val and max_val must have one shape, got "
                         f"{lo.shape} and {hi.shape}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("choose_qparams: expected finite bounds, got an inf or a NaN "
                         "(a diverged activation?)")
    if np.any(lo > hi):
        raise ValueError(f"choose_qparams: expected min_val <= max_val, got {lo} > {hi}")
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / ((qmax - qmin) / 2), EPS)
        zero_point = np.full(lo.shape, 0 if dtype == "int8" else 128, np.int64)
    else:
        scale = np.maximum((hi - lo) / (qmax - qmin), EPS)
        zero_point = np.clip(qmin - np.round(lo / scale).astype(np.int64), qmin, qmax)
    return scale, zero_point
