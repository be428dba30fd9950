"""The image's quantization to uint8 and ONNX's QLinearAdd: the numba kernels
(``kernels/numba/int8_quantize.py``) give the reference's integers exactly, ties included, at 1
and 2 threads; the reference is the quantized view's float32 arithmetic; bad arguments are
refused by name."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymbv2.kernels import kernel_set
from tinymbv2.quant.fake_quant import quantize_array

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
KSETS = pytest.mark.parametrize("kset", [REFERENCE, NUMBA], ids=lambda m: m.name)


@st.composite
def add_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    a, b = (rng.integers(0, 256, shape).astype(np.uint8) for _ in range(2))
    return dict(aq=a, a_scale=np.float32(rng.uniform(0.005, 0.1)),
                a_zero_point=np.uint8(rng.integers(0, 256)), bq=b,
                b_scale=np.float32(rng.uniform(0.005, 0.1)),
                b_zero_point=np.uint8(rng.integers(0, 256)),
                y_scale=np.float32(rng.uniform(0.005, 0.2)),
                y_zero_point=np.uint8(rng.integers(0, 256)))


def _view_add(c):
    """The quantized view's residual sum, written with its own functions."""
    def deq(q, s, z):
        return (q.astype(np.float32) - np.float32(z)) * np.float32(s)
    total = deq(c["aq"], c["a_scale"], c["a_zero_point"]) + deq(c["bq"], c["b_scale"],
                                                                 c["b_zero_point"])
    return quantize_array(total, c["y_scale"], c["y_zero_point"], 0, 255)[0].astype(np.uint8)


@settings(max_examples=40, deadline=None)
@given(c=add_case())
def test_qlinear_add_numba_equals_reference_equals_the_view(c):
    want = _view_add(c)
    for kset in (REFERENCE, NUMBA):
        got = kset.qlinear_add(**c)
        assert got.dtype == np.uint8 and got.shape == c["aq"].shape
        np.testing.assert_array_equal(got, want)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.lists(st.integers(1, 40), min_size=1, max_size=4))
def test_quantize_uint8_numba_equals_reference_equals_the_view(seed, shape):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 10)).astype(np.float32)
    scale, zp = np.float32(rng.uniform(0.005, 0.1)), np.uint8(rng.integers(0, 256))
    want = quantize_array(x, scale, zp, 0, 255)[0].astype(np.uint8)
    for kset in (REFERENCE, NUMBA):
        np.testing.assert_array_equal(kset.quantize_uint8(x, scale, zp), want)


def test_ties_round_half_to_even_and_the_range_saturates():
    """A scale of 0.5 (inv = 2 exactly): x = k + 0.25 gives ties 2k + 0.5, rounded to even;
    values past the range clamp to 0 and 255."""
    x = np.array([0.25, 0.75, 1.25, 1.75, -1e6, 1e6, -0.25, -0.75], np.float32)
    want = np.array([10, 12, 12, 14, 0, 255, 10, 8], np.uint8)   # rint(2x) + 10
    c = dict(aq=np.array([1, 2, 3, 4, 0, 255, 7, 8], np.uint8), a_scale=0.5,
             a_zero_point=np.uint8(1), bq=np.array([3, 3, 3, 3, 3, 3, 3, 3], np.uint8),
             b_scale=0.25, b_zero_point=np.uint8(2), y_scale=0.5, y_zero_point=np.uint8(10))
    for kset in (REFERENCE, NUMBA):
        np.testing.assert_array_equal(kset.quantize_uint8(x, np.float32(0.5), np.uint8(10)), want)
        np.testing.assert_array_equal(kset.qlinear_add(**c), _view_add(c))
    # (1 - 1) * .5 + (3 - 2) * .25 = 0.25 -> rint(0.5) = 0 (even) + 10
    assert NUMBA.qlinear_add(**c)[0] == 10


def test_the_same_at_one_and_two_threads():
    """Larger than one task's run of elements, so that two threads split it."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 40, 50, 50)).astype(np.float32)
    a, b = (rng.integers(0, 256, x.shape).astype(np.uint8) for _ in range(2))
    before, outs = numba.get_num_threads(), []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            outs.append((NUMBA.quantize_uint8(x, 0.02, np.uint8(128)),
                         NUMBA.qlinear_add(a, 0.03, np.uint8(3), b, 0.05, np.uint8(9), 0.07,
                                           np.uint8(5))))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*outs):
        np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(outs[0][0], REFERENCE.quantize_uint8(x, 0.02, np.uint8(128)))


@KSETS
@pytest.mark.parametrize("change, error, words", [
    (dict(aq=np.zeros(4, np.int8)), TypeError, "qlinear_add: aq must be uint8, got int8"),
    (dict(bq=np.zeros(4, np.float32)), TypeError, "qlinear_add: bq must be uint8, got float32"),
    (dict(bq=np.zeros(5, np.uint8)), ValueError, r"one shape, got \(4,\) and \(5,\)"),
    (dict(a_scale=0.0), ValueError, "a_scale must be positive"),
    (dict(y_scale=np.ones(2, np.float32)), ValueError, "y_scale must be a scalar"),
    (dict(b_zero_point=np.int8(0)), TypeError, "b_zero_point must be uint8"),
    (dict(y_zero_point=np.int32(0)), TypeError, "y_zero_point must be uint8"),
])
def test_qlinear_add_errors_name_what_was_expected(kset, change, error, words):
    c = dict(aq=np.zeros(4, np.uint8), a_scale=0.1, a_zero_point=np.uint8(0),
             bq=np.zeros(4, np.uint8), b_scale=0.1, b_zero_point=np.uint8(0), y_scale=0.1,
             y_zero_point=np.uint8(0))
    with pytest.raises(error, match=words):
        kset.qlinear_add(**{**c, **change})


@KSETS
def test_quantize_uint8_errors_name_what_was_expected(kset):
    with pytest.raises(TypeError, match="quantize_uint8: x must be float32, got float64"):
        kset.quantize_uint8(np.zeros(3), 0.1, np.uint8(0))
    with pytest.raises(ValueError, match="quantize_uint8: scale must be positive"):
        kset.quantize_uint8(np.zeros(3, np.float32), -1.0, np.uint8(0))
    with pytest.raises(TypeError, match="quantize_uint8: zero_point must be uint8"):
        kset.quantize_uint8(np.zeros(3, np.float32), 0.1, np.int8(0))
