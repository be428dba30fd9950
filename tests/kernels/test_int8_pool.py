"""The last uint8 map's dequantized global average pool: the numba kernel
(``kernels/numba/int8_pool.py``) gives the reference's bits, in NCHW, channels-last and other
memory, at 1 and 2 threads; both are the exact mean rounded to float32 (a float64 formula);
bad arguments are refused by name."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba.int8_pool import PARALLEL_BYTES

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
KSETS = pytest.mark.parametrize("kset", [REFERENCE, NUMBA], ids=lambda m: m.name)


def _float64_mean(q, scale, zero_point):
    """The mean of the dequantized planes in float64 (its error far below float32's step)."""
    return ((q.astype(np.float64) - float(zero_point)) * float(np.float32(scale))).mean(axis=(2, 3))


def _layouts(q):
    """q in NCHW memory, channels-last memory (an NCHW view of NHWC) and a strided view."""
    nhwc = np.ascontiguousarray(q.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    strided = np.repeat(q, 2, axis=3)[..., ::2]
    return {"nchw": q, "channels_last": nhwc, "strided": strided}


def _assert_rounded_mean(got, q, scale, zero_point):
    """got is the exact mean rounded to float32: within half a float32 step of the float64
    mean (a hair more: the float64 division's own rounding before the float32 one)."""
    exact = _float64_mean(q, scale, zero_point)
    step = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got.astype(np.float64) - exact) <= 0.5001 * step)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 9), st.integers(1, 9)))
def test_numba_equals_reference_equals_the_rounded_mean(seed, shape):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, shape).astype(np.uint8)
    scale, zp = np.float32(rng.uniform(0.001, 0.2)), np.uint8(rng.integers(0, 256))
    want = REFERENCE.dequantize_global_average_pool(q, scale, zp)
    assert want.dtype == np.float32 and want.shape == shape[:2]
    _assert_rounded_mean(want, q, scale, zp)
    for layout, x in _layouts(q).items():
        got = NUMBA.dequantize_global_average_pool(x, scale, zp)
        assert got.dtype == np.float32 and got.shape == shape[:2], layout
        np.testing.assert_array_equal(got, want, err_msg=layout)


def test_the_extremes_are_exact():
    """All 255 or all 0 with the zero point at either end: the means are (255 - z) s and -z s,
    float32 products that the float64 formula gives exactly, rounded once."""
    scale = np.float32(0.0470588)
    for value, zp in ((255, 0), (0, 255), (255, 255), (0, 0), (255, 17)):
        q = np.full((2, 3, 7, 7), value, np.uint8)
        want = np.float32(np.float64(value - zp) * np.float64(scale))
        for kset in (REFERENCE, NUMBA):
            got = kset.dequantize_global_average_pool(q, scale, np.uint8(zp))
            np.testing.assert_array_equal(got, np.full((2, 3), want, np.float32))


def test_the_same_at_one_and_two_threads():
    """Maps from ``PARALLEL_BYTES`` on take the parallel loops (both layouts): the same bits
    as one thread and as the reference."""
    rng = np.random.default_rng(3)
    n = -(-PARALLEL_BYTES // (64 * 13 * 13)) + 1
    q = rng.integers(0, 256, (n, 64, 13, 13)).astype(np.uint8)
    assert q.size >= PARALLEL_BYTES
    scale, zp = np.float32(0.0231), np.uint8(101)
    want = REFERENCE.dequantize_global_average_pool(q, scale, zp)
    _assert_rounded_mean(want, q, scale, zp)
    before, outs = numba.get_num_threads(), []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            outs.append([NUMBA.dequantize_global_average_pool(x, scale, zp)
                         for x in _layouts(q).values()])
    finally:
        numba.set_num_threads(before)
    for got in outs[0] + outs[1]:
        np.testing.assert_array_equal(got, want)


@KSETS
@pytest.mark.parametrize("q, scale, zp, error, words", [
    (np.zeros((1, 2, 3, 3), np.float32), 0.1, np.uint8(0), TypeError,
     "dequantize_global_average_pool: q must be uint8, got float32"),
    (np.zeros((1, 2, 3, 3), np.int8), 0.1, np.uint8(0), TypeError, "q must be uint8, got int8"),
    (np.zeros((2, 3, 3), np.uint8), 0.1, np.uint8(0), ValueError,
     r"q must be \(N, C, H, W\) with H \* W > 0, got shape \(2, 3, 3\)"),
    (np.zeros((1, 2, 0, 3), np.uint8), 0.1, np.uint8(0), ValueError,
     r"H \* W > 0, got shape \(1, 2, 0, 3\)"),
    (np.zeros((1, 2, 3, 3), np.uint8), 0.0, np.uint8(0), ValueError, "scale must be positive"),
    (np.zeros((1, 2, 3, 3), np.uint8), np.ones(2, np.float32), np.uint8(0), ValueError,
     "scale must be a scalar"),
    (np.zeros((1, 2, 3, 3), np.uint8), 0.1, np.int8(0), TypeError, "zero_point must be uint8"),
])
def test_errors_name_what_was_expected(kset, q, scale, zp, error, words):
    with pytest.raises(error, match=words):
        kset.dequantize_global_average_pool(q, scale, zp)
