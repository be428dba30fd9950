r"""Checks for the exercises of chapter 18. Deployment: ONNX and int8.

* ``check_qparams``: the scale and zero point of a float range, int8 or uint8, symmetric or
  affine (``tinymbv2.quant.choose_qparams``);
* ``check_fake_quant``: quantize then dequantize, $\hat x = (\mathrm{clamp}(\mathrm{round}(x / s)
  + z) - z)\, s$ (``tinymbv2.quant.fake_quantize``);
* ``check_ste_grad``: the straight-through estimator's gradient of the fake quantization
  (``fake_quantize``'s backward).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..quant import choose_qparams, fake_quantize
from .checking import Hint, exercise, expect_close

__all__ = ["check_qparams", "check_fake_quant", "check_ste_grad"]


def _pair(value, what: str):
    """``(scale, zero_point)`` as two floats, or a Hint naming what came."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise Hint(f"{what}: expected a pair (scale, zero_point), got {value!r}")
    try:
        return float(np.asarray(value[0])), float(np.asarray(value[1]))
    except (TypeError, ValueError):
        raise Hint(f"{what}: expected two numbers (scale, zero_point), got {value!r}") from None


@exercise
def check_qparams(answer) -> int:
    """``qparams(min_val, max_val, dtype, symmetric)`` must give ``(scale, zero_point)`` as
    ``tinymbv2.quant.choose_qparams`` computes them (PyTorch's observers' formulas).

    Cases: ranges on both sides of 0, ranges on one side only (the widening to 0 matters),
    int8 and uint8, symmetric and affine. Hints for: the range not widened to hold 0, the
    symmetric scale over 127 or 255 instead of 127.5, and the affine zero point not rounded.

    Args:
        answer: your function, ``qparams(min_val, max_val, dtype, symmetric)`` -> (scale, zero).

    Returns:
        The number of cases run.
    """
    cases = [(-1.3, 2.2, "int8", True), (-1.3, 2.2, "uint8", False), (0.0, 6.0, "uint8", False),
             (0.5, 2.0, "uint8", False), (0.5, 2.0, "int8", True), (-3.0, -0.25, "uint8", False),
             (-0.7, 0.3, "int8", False), (-2.0, 5.0, "uint8", True), (-0.41, 0.9, "uint8", False)]
    for lo, hi, dtype, symmetric in cases:
        case = f"qparams({lo}, {hi}, {dtype!r}, symmetric={symmetric})"
        scale, zero = (float(v) for v in choose_qparams(lo, hi, dtype, symmetric))
        got_scale, got_zero = _pair(answer(lo, hi, dtype, symmetric), case)
        if np.isclose(got_scale, scale, rtol=1e-6) and got_zero == zero:
            continue
        a, b = (lo, hi)
        qmin, qmax = (-128, 127) if dtype == "int8" else (0, 255)
        if (lo > 0 or hi < 0) and (symmetric and np.isclose(got_scale, max(-a, b) / ((qmax - qmin) / 2))
                                   or not symmetric and np.isclose(got_scale, (b - a) / (qmax - qmin))):
            raise Hint(f"{case}: you gave scale {got_scale:.6g}, expected {scale:.6g}: widen the range "
                       f"to hold 0 first (min(a, 0), max(b, 0)), so that 0 is stored exactly")
        if symmetric and any(np.isclose(got_scale, scale * 127.5 / d) for d in (127, 255, 128)):
            raise Hint(f"{case}: you gave scale {got_scale:.6g}, expected {scale:.6g}: symmetric "
                       f"spreads max(-a, b) over half the integer range, (qmax - qmin) / 2 = 127.5")
        if not symmetric and np.isclose(got_scale, scale, rtol=1e-6) and got_zero != round(got_zero):
            raise Hint(f"{case}: zero point {got_zero!r}: it is an integer, qmin - round(a / s), clamped")
        if np.isclose(got_scale, scale, rtol=1e-6):
            raise Hint(f"{case}: the scale is right; the zero point {got_zero:g} should be {zero:g}")
        raise Hint(f"{case}: you gave ({got_scale:.6g}, {got_zero:g}), expected ({scale:.6g}, {zero:g})")
    return len(cases)


def _cases(rng):
    """(x, scale, zero_point, qmin, qmax) with values inside, at the edges and outside."""
    x = rng.uniform(-3, 3, (4, 5))
    return [(np.array([-1.3, -0.41, 0.0, 0.07, 0.5, 0.9999, 2.2]), 2.2 / 127.5, 0, -128, 127),
            (np.array([0.0, 0.125, 0.375, 0.625, 10.0, -1.0]), 0.25, 0, 0, 255),   # ties and clamps
            (x, 0.02, 10, 0, 255), (x, 0.05, 0, -128, 127), (x, 0.01, 200, 0, 255)]


@exercise
def check_fake_quant(answer) -> int:
    """``fake_quant(x, scale, zero_point, qmin, qmax)`` must give $\\hat x$ as ``fake_quantize``
    computes it (per tensor).

    Cases: values inside the range, exact ties (half to even), values clamped on both sides,
    non-zero zero points. Hints for: the clamp left out, the zero point not subtracted back,
    ``floor`` for the rounding, and the integers returned instead of the values.

    Args:
        answer: your function, ``fake_quant(x, scale, zero_point, qmin, qmax)`` -> an array.

    Returns:
        The number of cases run.
    """
    cases = _cases(np.random.default_rng(18))
    for x, s, z, qmin, qmax in cases:
        case = f"fake_quant(x, scale={s:.4g}, zero_point={z}, qmin={qmin}, qmax={qmax}) on x = {np.round(x.ravel()[:4], 3).tolist()}..."
        expected = fake_quantize(Tensor(x), s, z, qmin, qmax).numpy().astype(np.float64)
        got = np.asarray(answer(x.copy(), s, z, qmin, qmax), dtype=np.float64)
        if got.shape == expected.shape and np.allclose(got, expected, atol=1e-6):
            continue
        if got.shape == expected.shape:
            q = np.rint(x / s) + z
            if np.allclose(got, (q - z) * s, atol=1e-6):
                raise Hint(f"{case}: values outside the range must be clamped: clip the integers "
                           f"to [qmin, qmax] before dequantizing")
            if np.allclose(got, np.clip(q, qmin, qmax) * s, atol=1e-6):
                raise Hint(f"{case}: subtract the zero point back before multiplying by the scale")
            if np.allclose(got, np.clip(q, qmin, qmax), atol=1e-6):
                raise Hint(f"{case}: those are the integers q; return the values (q - z) * scale")
            if np.allclose(got, (np.clip(np.floor(x / s) + z, qmin, qmax) - z) * s, atol=1e-6):
                raise Hint(f"{case}: round to the nearest integer (np.rint), not down (floor)")
        expect_close(got, expected, case, rtol=1e-6, atol=1e-6)
    return len(cases)


@exercise
def check_ste_grad(answer) -> int:
    """``ste_grad(x, grad, scale, zero_point, qmin, qmax)`` must give the straight-through
    gradient, as ``fake_quantize``'s backward (and PyTorch's ``fake_quantize_per_tensor_affine``).

    Hints for: the gradient passed everywhere (the clipped values too), the true gradient of
    the rounding (zero everywhere), and the test made on the clamped integer (which is
    always inside).

    Args:
        answer: your function, ``ste_grad(x, grad, scale, zero_point, qmin, qmax)`` -> an array.

    Returns:
        The number of cases run.
    """
    rng = np.random.default_rng(81)
    cases = _cases(rng)
    for x, s, z, qmin, qmax in cases:
        case = f"ste_grad(x, grad, scale={s:.4g}, zero_point={z}, qmin={qmin}, qmax={qmax})"
        grad = rng.standard_normal(x.shape)
        t = Tensor(x, requires_grad=True)
        fake_quantize(t, s, z, qmin, qmax).backward(grad)
        expected = np.asarray(t.grad, dtype=np.float64)
        got = np.asarray(answer(x.copy(), grad.copy(), s, z, qmin, qmax), dtype=np.float64)
        if got.shape == expected.shape and np.allclose(got, expected, atol=1e-12):
            continue
        if got.shape == expected.shape:
            if np.allclose(got, grad) and not np.allclose(expected, grad):
                raise Hint(f"{case}: where x was clipped (round(x / s) + z outside [qmin, qmax]) "
                           f"the gradient is 0; it passes only where x was inside")
            if np.allclose(got, 0) and not np.allclose(expected, 0):
                raise Hint(f"{case}: that is the rounding's true derivative (0); the estimator "
                           f"passes grad straight through where x was inside the range")
        expect_close(got, expected, case, rtol=1e-9, atol=1e-12)
    return len(cases)
