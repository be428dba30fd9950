"""Chapter 18's checks pass the solutions and answer common wrong answers with their hints."""
import numpy as np

from tinymbv2.exercises import check_fake_quant, check_qparams, check_ste_grad


def _qparams(lo, hi, dtype, symmetric, widen=True, half=127.5, round_zero=True):
    qmin, qmax = (-128, 127) if dtype == "int8" else (0, 255)
    a, b = (min(lo, 0.0), max(hi, 0.0)) if widen else (lo, hi)
    if symmetric:
        return max(-a, b) / (half if half else (qmax - qmin) / 2), 0 if dtype == "int8" else 128
    scale = (b - a) / (qmax - qmin)
    zero = qmin - a / scale
    return scale, int(np.clip(np.rint(zero), qmin, qmax)) if round_zero else zero


def test_qparams_hints():
    assert check_qparams(_qparams).passed
    assert "widen the range" in check_qparams(lambda *a: _qparams(*a, widen=False)).message
    assert "127.5" in check_qparams(lambda *a: _qparams(*a, half=127)).message
    assert "it is an integer" in check_qparams(lambda *a: _qparams(*a, round_zero=False)).message
    assert "expected a pair" in check_qparams(lambda *a: 0.1).message


def _fake(x, s, z, qmin, qmax, kind="right"):
    q = (np.floor(x / s) if kind == "floor" else np.rint(x / s)) + z
    if kind == "no clamp":
        return (q - z) * s
    q = np.clip(q, qmin, qmax)
    if kind == "integers":
        return q
    if kind == "zero kept":
        return q * s
    return (q - z) * s


def test_fake_quant_hints():
    assert check_fake_quant(_fake).passed
    assert "must be clamped" in check_fake_quant(lambda *a: _fake(*a, kind="no clamp")).message
    assert "subtract the zero point" in check_fake_quant(lambda *a: _fake(*a, kind="zero kept")).message
    assert "return the values" in check_fake_quant(lambda *a: _fake(*a, kind="integers")).message
    assert "not down (floor)" in check_fake_quant(lambda *a: _fake(*a, kind="floor")).message
    assert "shape" in check_fake_quant(lambda x, *a: _fake(x, *a).ravel()[:-1]).message


def _ste(x, grad, s, z, qmin, qmax, kind="right"):
    if kind == "everywhere":
        return grad
    if kind == "zero":
        return np.zeros_like(grad)
    q = np.rint(x / s) + z
    if kind == "clamped":
        q = np.clip(q, qmin, qmax)
    return grad * ((q >= qmin) & (q <= qmax))


def test_ste_grad_hints():
    assert check_ste_grad(_ste).passed
    assert "the gradient is 0" in check_ste_grad(lambda *a: _ste(*a, kind="everywhere")).message
    assert "true derivative" in check_ste_grad(lambda *a: _ste(*a, kind="zero")).message
    assert check_ste_grad(lambda *a: _ste(*a, kind="clamped")).message.startswith("not yet: ")
