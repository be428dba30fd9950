"""The numba set's inverted residual block for inference on channels-last planes
(kernels/numba/block_channels_last.py) and its depthwise filter with BatchNorm
(kernels/numba/depthwise/rows3x3_bn.py).

Checked against PyTorch's separate layers in float64: whole images grouped or cut in bands
of any height, inputs in either layout, with and without expansion, strides 1 and 2 on
odd and even widths; the same bits for any thread count and wherever the bands fall; and
which kernel the numba set sends each plane to.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

from block_cases import CASES as BAND_CASES, block_case, torch_block
from errors import assert_close
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import block, block_channels_last as bcl, block_small
from tinymbv2.kernels.numba.batchnorm import epilogue_table
from tinymbv2.kernels.numba.depthwise.rows3x3_bn import depthwise_rows_bn
from tinymbv2.kernels.numba.layout import as_channels_last, is_channels_last

TOL64 = 1e-10
NUMBA = kernel_set("numba")

# (n, ci, h, w, expansion t, co, stride, residual): the NCHW kernel's cases and
CASES = BAND_CASES + [
    (3, 3, 12, 12, 4, 3, 1, True),     # three images: grouped, the last group short
    (5, 16, 7, 7, 6, 16, 1, True),     # 7x7, as at 224 px
    (2, 20, 1, 3, 2, 20, 1, True),     # one row: every pixel an edge above and below
    (2, 24, 3, 1, 6, 8, 2, False),     # one column, 144 channels (a part-vector at the end)
]


@pytest.fixture
def every_plane(monkeypatch):
    """This kernel on planes of any size (small ones keep the test fast)."""
    monkeypatch.setattr(bcl, "FROM", 1)
    monkeypatch.setattr(bcl, "UP_TO", 10 ** 9)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("band_bytes", [1, 3000, 2 << 20])
@pytest.mark.parametrize("case", CASES)
def test_bands_and_groups_give_the_block(every_plane, monkeypatch, layout, band_bytes, case):
    """Bands of 1 row up to groups of whole images, either input layout: PyTorch's block,
    channels-last."""
    *shape, stride, residual = case
    x, *parts = block_case(*shape, stride, residual, seed=1)
    expected = torch_block(x, *parts, stride, residual)
    monkeypatch.setattr(bcl, "BAND_BYTES", band_bytes)
    x_in = as_channels_last(x) if layout == "channels_last" else x
    assert bcl.supported(x_in, stride)
    y = bcl.inverted_residual_eval(x_in, *parts, stride, residual)
    assert_close("inverted_residual_eval", y, expected, TOL64)
    assert is_channels_last(y)
    assert y.shape == expected.shape


def _float32(parts):
    return tuple(None if p is None else (
        p[0].astype(np.float32),
        tuple(np.float32(a) if isinstance(a, np.ndarray) else a for a in p[1])) for p in parts)


def test_the_block_is_bit_identical_for_any_thread_count_and_band():
    """Float32, 14x14 as at 224 px: one thread or all, and a batch of one cut into more
    bands for the threads (``even_tasks``) or not, give the same bits."""
    x, *parts = block_case(3, 16, 14, 14, 6, 16, 1, True, seed=2)
    x, parts = x.astype(np.float32), _float32(parts)
    assert bcl.supported(x, 1) and not block.fused_planes(x, 1)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append(NUMBA.inverted_residual_eval(x, *parts, 1, True))
    finally:
        numba.set_num_threads(before)
    assert results[0].dtype == np.float32
    assert np.array_equal(results[0], results[1])
    single = []
    for below in (0, 8):
        bcl_below = bcl.EVEN_TASKS_BELOW
        try:
            bcl.EVEN_TASKS_BELOW = below
            single.append(bcl.inverted_residual_eval(x[:1], *parts, 1, True))
        finally:
            bcl.EVEN_TASKS_BELOW = bcl_below
    assert np.array_equal(single[0], single[1]) and np.array_equal(single[0], results[0][:1])


@pytest.mark.parametrize("size,stride,taken_by", [
    (14, 2, "small"),          # a 7x7 output: whole-batch passes (block_small.py)
    (7, 1, "small"),
    (28, 2, "channels_last"),  # 14x14 .. 112x112 outputs: this kernel
    (56, 1, "channels_last"),
    (112, 1, "channels_last"),
    (240, 2, "bands"),         # larger: NCHW bands (block.py)
])
def test_the_numba_set_sends_each_plane_to_its_kernel(size, stride, taken_by):
    """At 224 px the 7x7 blocks run in whole-batch passes, 14x14 to 112x112 in this kernel,
    larger in NCHW bands; each gives PyTorch's block."""
    x, *parts = block_case(2, 4, size, size, 6, 4, stride, False, seed=3)
    assert bcl.supported(x, stride) == (taken_by == "channels_last")
    assert block_small.supported(x, stride) == (taken_by == "small")
    if taken_by == "bands":
        assert block.fused_planes(x, stride)
    y = NUMBA.inverted_residual_eval(x, *parts, stride, False)
    assert_close("inverted_residual_eval", y, torch_block(x, *parts, stride, False), TOL64)
    assert y.flags.c_contiguous == (taken_by == "bands")


def test_the_kernel_names_what_it_cannot_compute():
    x, *parts = block_case(1, 4, 6, 6, 6, 4, 2, False)
    with pytest.raises(ValueError, match=r"output planes of 3x3 are not computed by this kernel"):
        bcl.inverted_residual_eval(x, *parts, 2, False)
    with pytest.raises(ValueError, match="the residual needs stride 1 and Co = Ci, got stride 2"):
        bcl.inverted_residual_eval(x, *parts, 2, True)
    with pytest.raises(ValueError, match=r"depthwise weight must have shape \(24, 1, 3, 3\)"):
        bcl.inverted_residual_eval(x, parts[0], (parts[1][0][:, :, :2], parts[1][1]), parts[2],
                                   1, False)


def _filter_reference(e, wd, s, taps, bn, relu6, rows, wo):
    """The band filter in NumPy: e (R*W, C) with R = (rows - 1)*s + 3 rows, zero-padded left
    and right here."""
    c = e.shape[1]
    padded = np.zeros((e.shape[0] // wd, wd + 2, c))
    padded[:, 1:-1] = e.reshape(-1, wd, c)
    out = np.zeros((rows, wo, c))
    for i in range(3):
        for j in range(3):
            out += taps[3 * i + j] * padded[i:i + s * (rows - 1) + 1:s, j:j + s * (wo - 1) + 1:s]
    out = (out - bn[0]) * bn[1] + bn[2]
    return (np.clip(out, 0, 6) if relu6 else out).reshape(rows * wo, c)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows,wd,s,c,relu6", [
    (3, 7, 1, 40, True),    # 40 channels: whole vectors and a part
    (2, 8, 2, 16, True),    # stride 2, even width
    (4, 9, 2, 33, False),   # stride 2, odd width: the last window's right column is padding
    (1, 1, 1, 5, True),     # one pixel
])
def test_the_band_filter_is_the_correlation_with_its_batchnorm(dtype, rows, wd, s, c, relu6):
    rng = np.random.default_rng(5)
    wo = (wd - 1) // s + 1
    e = rng.standard_normal((((rows - 1) * s + 3) * wd, c)).astype(dtype) * 4
    taps = rng.standard_normal((9, c)).astype(dtype)
    ep = (rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype),
          rng.standard_normal(c).astype(dtype), np.array([True, relu6]))
    bn = epilogue_table(ep, c, dtype)
    d = np.full((rows * wo, c), np.nan, dtype)
    depthwise_rows_bn(e, wd, s, taps, bn, relu6, d, rows, wo)
    expected = _filter_reference(e.astype(np.float64), wd, s, taps, bn, relu6, rows, wo)
    assert_close("block filter (rows3x3_bn)", d, expected, 1e-6 if dtype == np.float32 else 1e-13)
    if relu6:
        assert d.min() == 0 and d.max() == 6  # the clamp took effect at both ends


def test_no_batchnorm_is_the_identity_table():
    ep = (np.empty(0), np.empty(0), np.empty(0), np.zeros(2, np.bool_))
    assert np.array_equal(epilogue_table(ep, 3, np.float32), [[0, 0, 0], [1, 1, 1], [0, 0, 0]])


@pytest.mark.parametrize("case", [
    (2, 16, 20, 19, 1, 8, 1, False),   # block 1's shape: no expansion, stride 1
    (3, 12, 17, 16, 1, 12, 1, True),   # with the residual
    (1, 24, 15, 13, 1, 16, 2, False),  # stride 2, odd sizes
])
def test_a_block_without_expansion_filters_x_in_place_to_the_same_bits(every_plane, monkeypatch,
                                                                         case):
    """Channels-last x, no expansion: the filter reads x's rows where they are (``DIRECT``)
    instead of a copy in the band's scratch: PyTorch's block, the copy's bits."""
    *shape, stride, residual = case
    x, *parts = block_case(*shape, stride, residual, seed=8)
    x = as_channels_last(x)
    monkeypatch.setattr(bcl, "BAND_BYTES", 3000)  # several bands: padding rows inside too
    y = bcl.inverted_residual_eval(x, *parts, stride, residual)
    assert_close("inverted_residual_eval", y, torch_block(x, *parts, stride, residual), TOL64)
    monkeypatch.setattr(bcl, "DIRECT", False)
    assert np.array_equal(y, bcl.inverted_residual_eval(x, *parts, stride, residual))
