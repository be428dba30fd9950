"""The int8 depthwise 3x3 on the bytes (``numba.int8_filter``) against the reference
``QLinearConv``: the same integers for uint8 and int8 inputs, zero points at both ends,
strides 1 and 2, padding 0 and 1, planes narrower than a vector and several vectors wide,
one row and one column; a band of output rows from a buffer that starts at a later image
row is the plane's rows; ``zero_point_sums`` is exact."""

import numpy as np
import pytest

from tinymbv2.kernels import int8_reference
from tinymbv2.kernels.numba.int8_dot import VNNI
from tinymbv2.kernels.numba.int8_filter import depthwise3x3_rows, filter_rows_q, zero_point_sums
from numba import njit

pytestmark = pytest.mark.skipif(not VNNI, reason="the filter's intrinsics are AVX-512 code; "
                                                 "without VNNI the numba set keeps "
                                                 "int8_depthwise")


def _case(rng, n, c, h, w, s, p, dtype, zp=None):
    info = np.iinfo(dtype)
    xq = rng.integers(info.min, info.max + 1, (n, c, h, w)).astype(dtype)
    zp = dtype(rng.integers(info.min, info.max + 1) if zp is None else zp)
    wq = rng.integers(-128, 128, (c, 1, 3, 3)).astype(np.int8)
    return dict(xq=xq, x_scale=np.float32(0.02), x_zero_point=zp, wq=wq,
                w_scale=rng.uniform(0.001, 0.02, c).astype(np.float32),
                bias_q=rng.integers(-5000, 5000, c).astype(np.int32),
                y_scale=np.float32(rng.uniform(0.01, 0.4)),
                y_zero_point=np.uint8(rng.integers(0, 256)), stride=s, padding=p)


def _reference(c, relu6=False):
    return int8_reference.qlinear_conv2d(
        c["xq"], c["x_scale"], c["x_zero_point"], c["wq"], c["w_scale"], np.int8(0), c["bias_q"],
        c["y_scale"], c["y_zero_point"], c["stride"], c["padding"], c["wq"].shape[0],
        relu6=relu6)


def _ours(c, relu6=False):
    xq, wq = c["xq"], c["wq"]
    n, ch, h, w = xq.shape
    s, p = c["stride"], c["padding"]
    w9 = wq.reshape(ch, 9).astype(np.float32)
    m = (np.float32(c["x_scale"]) * c["w_scale"] / np.float32(c["y_scale"])).astype(np.float32)
    zy = int(c["y_zero_point"])
    q_min, q_max = int8_reference.output_range(np.dtype(np.uint8), zy, c["y_scale"], relu6)
    ho, wo = (h + 2 * p - 3) // s + 1, (w + 2 * p - 3) // s + 1
    out = np.full((n, ch, ho, wo), 77, np.uint8)
    zp = c["x_zero_point"]
    return depthwise3x3_rows(xq, w9, zp, s, p, p, c["bias_q"], m, zero_point_sums(w9, zp),
                             np.int32(zy), np.float32(q_min - zy), np.float32(q_max - zy), out)


SHAPES = [(2, 3, 9, 11), (1, 5, 1, 1), (1, 4, 1, 40), (2, 2, 33, 1), (1, 3, 17, 16),
          (1, 2, 40, 37), (3, 1, 7, 7), (1, 6, 2, 31)]


CASES = [(shape, stride, padding) for shape in SHAPES for stride in (1, 2) for padding in (0, 1)
         if padding == 1 or min(shape[2:]) >= 3]  # no padding: 3 rows and columns at least


@pytest.mark.parametrize("k", range(len(CASES)), ids=lambda k: "{}x{}x{}x{}-s{}-p{}".format(
    *CASES[k][0], *CASES[k][1:]))
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_the_filter_is_the_references_qlinear_conv(k, dtype):
    (n, c, h, w), stride, padding = CASES[k]
    rng = np.random.default_rng([k, np.dtype(dtype).itemsize, int(dtype == np.int8)])
    case = _case(rng, n, c, h, w, stride, padding, dtype)
    np.testing.assert_array_equal(_ours(case), _reference(case))


@pytest.mark.parametrize("zp", ["min", "max"])
def test_zero_points_at_both_ends_and_relu6(zp):
    rng = np.random.default_rng(5)
    for dtype in (np.uint8, np.int8):
        info = np.iinfo(dtype)
        case = _case(rng, 2, 4, 13, 21, 1, 1, dtype, getattr(info, zp))
        want = _reference(case, relu6=True)
        np.testing.assert_array_equal(_ours(case, relu6=True), want)
        assert want.min() < want.max()


@njit
def _band(src, first, h, w9, s, wd, wo, r0, r1, bias, m, zsum, zp, yzp, lo, hi, dst):
    filter_rows_q(src, first, h, w9, 0, s, 1, 1, wd, wo, r0, r1, bias, m, zsum, zp, yzp, lo, hi,
                  dst, 0)


@pytest.mark.parametrize("stride", [1, 2])
def test_a_band_from_a_later_row_is_the_planes_rows(stride):
    """Output rows r0 .. r1 - 1 read from a buffer holding only image rows ``first`` on (as
    ``int8_block``'s band of E does): the rows of the whole plane's output."""
    rng = np.random.default_rng(stride)
    h, wd = 23, 29
    case = _case(rng, 1, 1, h, wd, stride, 1, np.uint8)
    whole = _ours(case)[0, 0]
    ho, wo = whole.shape
    w9 = case["wq"].reshape(1, 9).astype(np.float32)
    zp = case["x_zero_point"]
    m = np.float32(np.float32(case["x_scale"]) * case["w_scale"][0] / case["y_scale"])
    zy = int(case["y_zero_point"])
    lo, hi = np.float32(-zy), np.float32(255 - zy)
    for r0, r1 in [(0, 3), (4, 9), (ho - 2, ho), (5, 6)]:
        first = max(0, r0 * stride - 1)
        src = np.ascontiguousarray(case["xq"][0, 0, first:].reshape(-1))
        dst = np.zeros((r1 - r0) * wo, np.uint8)
        _band(src, first, h, w9, stride, wd, wo, r0, r1, case["bias_q"][0], m,
              zero_point_sums(w9, zp)[0], zp, np.int32(zy), lo, hi, dst)
        np.testing.assert_array_equal(dst.reshape(r1 - r0, wo), whole[r0:r1])


def test_zero_point_sums_are_exact():
    w9 = np.full((2, 9), -128, np.float32)
    w9[1] = 127
    np.testing.assert_array_equal(zero_point_sums(w9, 255), [255 * 9 * -128, 255 * 9 * 127])
    np.testing.assert_array_equal(zero_point_sums(w9, -128), [128 * 9 * 128, -128 * 9 * 127])
    assert zero_point_sums(w9, 3).dtype == np.float32
