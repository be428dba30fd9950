"""The numba set's size-dependent paths, each forced or reached on purpose, and empty batches.

The numba kernels choose their algorithm by size: the memory layout
(``numba.layout.CHANNELS_LAST_MAX``), then ``numba.batchnorm.FLAT_MAX`` and
``ROWS_SERIAL_MAX``, and the thread split of ``numba.pointwise.channels_last``; the hypothesis draws in
``test_kernels.py`` are small, so they would reach only some of the paths. Here every
path is checked against PyTorch in float64, and every conv kernel of both sets on a
batch of zero images.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kernel_cases import EPS, channels_last_max, three_runs
from test_kernels import FEW, KSETS, TOL64, assert_close, bn_cases, conv_cases, t, torch_conv
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import batchnorm, dense
from tinymbv2.kernels.numba.dense import weight3x3_s2
from tinymbv2.kernels.numba.pointwise import channels_last as pointwise_rows

NUMBA = kernel_set("numba")


@st.composite
def depthwise3x3_cases(draw):
    """MobileNetV2's kind: 3x3 depthwise, up to 260 channels (two channels-last blocks)."""
    stride, p = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h0 = max(1, 3 - 2 * p)
    h, w = draw(st.integers(h0, h0 + 12)), draw(st.integers(h0, h0 + 12))
    n, c = draw(st.integers(1, 3)), draw(st.sampled_from([1, 5, 64, 70, 260]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.standard_normal((n, c, h, w)), rng.standard_normal((c, 1, 3, 3)), (stride, stride), (p, p)


@pytest.mark.parametrize("path", ["planes", "channels-last"])
@FEW
@given(case=st.one_of(conv_cases(depthwise=True), depthwise3x3_cases()))
def test_numba_depthwise_paths_match_torch(path, case):
    """numba's depthwise has two ways through (NCHW plane kernels for large planes,
    channels-last blocks for small ones, see kernels/numba/layout.py): each is checked on every shape."""
    x, w, stride, padding = case
    y, gy, gx, gw = torch_conv(x, w, stride, padding, x.shape[1], np.random.default_rng(2))
    with channels_last_max(0 if path == "planes" else 10**9):
        k = NUMBA
        assert_close(k.depthwise_conv2d_forward(x, w, stride, padding), y, TOL64, "forward")
        assert_close(k.depthwise_conv2d_backward_input(gy, w, x.shape, stride, padding), gx, TOL64,
                     "backward_input")
        assert_close(k.depthwise_conv2d_backward_weight(gy, x, w.shape, stride, padding), gw, TOL64,
                     "backward_weight")


@pytest.mark.parametrize("path", ["nchw", "serial", "row-blocks", "column-blocks"])
@pytest.mark.parametrize("n,ci,co,side", [(5, 7, 9, 1), (64, 3, 2, 1), (3, 6, 5, 4), (2, 9, 4, 7)])
def test_numba_pointwise_paths_match_torch(path, n, ci, co, side):
    """Each way the numba pointwise kernels take, forced whatever the size: per-image GEMMs
    (NCHW), and channels-last as one GEMM in the calling thread, or cut into two blocks of
    rows, or of output columns (numba/pointwise/channels_last.py's _split)."""
    rng = np.random.default_rng(n * side)
    x, wt = rng.standard_normal((n, ci, side, side)), rng.standard_normal((co, ci, 1, 1))
    y, gy, gx, gw = torch_conv(x, wt, 1, 0, 1, rng)
    bn = (rng.standard_normal(co), rng.uniform(0.5, 2, co), rng.standard_normal(co),
          rng.standard_normal(co) + 2, EPS, True)  # the BatchNorm-eval + ReLU6 epilogue
    y_bn = F.relu6(F.batch_norm(torch.tensor(y), *(torch.tensor(a) for a in bn[:4]),
                                training=False, eps=EPS)).numpy()
    saved = (pointwise_rows._PARALLEL_ROWS, pointwise_rows._PARALLEL_MACS,
             pointwise_rows.COLUMN_SPLIT, pointwise_rows.ONE_STRIP_BY_ROWS)
    pointwise_rows._PARALLEL_ROWS = 0 if path == "row-blocks" else 10**9
    pointwise_rows._PARALLEL_MACS = 10**9 if path == "serial" else 0
    pointwise_rows.COLUMN_SPLIT = path == "column-blocks"
    pointwise_rows.ONE_STRIP_BY_ROWS = False  # one-strip outputs too: the path itself
    try:
        with channels_last_max(0 if path == "nchw" else 10**9):
            got = (NUMBA.pointwise_conv2d_forward(x, wt),
                   NUMBA.pointwise_conv2d_backward_input(gy, wt),
                   NUMBA.pointwise_conv2d_backward_weight(gy, x),
                   NUMBA.pointwise_conv2d_bn_eval(x, wt, bn))
    finally:
        (pointwise_rows._PARALLEL_ROWS, pointwise_rows._PARALLEL_MACS,
         pointwise_rows.COLUMN_SPLIT, pointwise_rows.ONE_STRIP_BY_ROWS) = saved
    names = ("forward", "backward_input", "backward_weight", "pointwise_conv2d_bn_eval")
    for name, a, b in zip(names, got, (y, gx, gw, y_bn)):
        assert_close(a, b, TOL64, f"{path} {name}")


@pytest.mark.parametrize("m,k,n,width,expected", [
    (1568, 64, 384, 64, "rows"),     # many rows (224 px, batch 8, 14x14)
    (196, 64, 384, 64, "columns"),   # batch 1, 14x14 expansion: 3 strips each
    (196, 384, 64, 64, "rows"),      # batch 1, 14x14 projection: one strip only
    (196, 576, 96, 64, "columns"),   # 64 columns against 32
    (49, 960, 160, 64, "columns"),   # batch 1, 7x7 projection: 64 against 96
    (49, 320, 1280, 64, "columns"),  # the last 1x1 conv: 10 strips each
    (8, 8192, 64, 64, "columns"),    # one strip, but too few rows for two register blocks
    (196, 16, 16, 64, "none"),       # too small to wake a second thread
    (196, 384, 64, 32, "columns"),   # float64: two strips of 32
    (196, 512, 48, 64, "rows"),      # a narrow single strip
])
def test_pointwise_products_leave_no_thread_idle(m, k, n, width, expected):
    assert pointwise_rows._split(m, k, n, width) == expected


@pytest.mark.parametrize("n,side,parts", [(1, 64, 2), (3, 33, 2), (1, 31, 1), (2, 64, 1)])
def test_dense_forward_of_an_odd_batch_in_two_parts(n, side, parts):
    """An odd batch of large planes (the stem at batch 1) cuts each image's column matrix
    and product in two (numba/dense's image_parts): PyTorch's values, and the same bits as
    the image computed whole (here: in an even batch, one task per image)."""
    rng = np.random.default_rng(n * side)
    x, w = rng.standard_normal((n, 3, 2 * side, 2 * side)), rng.standard_normal((16, 3, 3, 3))
    bn = (rng.standard_normal(16), rng.uniform(0.5, 2, 16), rng.standard_normal(16),
          rng.standard_normal(16), EPS, True)
    assert dense.image_parts(n, side * side) == parts
    got, fused = NUMBA.conv2d_forward(x, w, (2, 2), (1, 1)), NUMBA.conv2d_bn_eval(x, w, (2, 2), (1, 1), bn)
    assert_close(got, torch_conv(x, w, 2, 1, 1, rng)[0], TOL64, "forward")
    for i in range(n):
        pair = np.concatenate([x[i:i + 1]] * 2)
        assert np.array_equal(got[i], NUMBA.conv2d_forward(pair, w, (2, 2), (1, 1))[0])
        assert np.array_equal(fused[i], NUMBA.conv2d_bn_eval(pair, w, (2, 2), (1, 1), bn)[0])


BN_PATHS = ["flat", "channels", "rows-serial", "rows-parallel"]


@pytest.mark.parametrize("path", BN_PATHS)
@pytest.mark.parametrize("clamp", [None, "relu6", "relu"])
@FEW
@given(case=bn_cases())
def test_numba_batch_norm_train_paths_match_torch(path, clamp, case):
    """Each of the numba set's BatchNorm training paths, forced whatever the size. NCHW:
    contiguous rows (numba/batchnorm/flat.py, small tensors), per channel (the rest);
    channels-last (numba/batchnorm/channels_last.py): in the calling thread or in parallel."""
    x, weight, bias, rng = case
    bias = bias + 2  # so that the fused ReLU6 passes some values and clamps others
    xt, wt, bt = t(x, True), t(weight, True), t(bias, True)
    y = F.batch_norm(xt, None, None, wt, bt, training=True, eps=EPS)
    y = getattr(F, clamp)(y) if clamp else y
    gy = rng.standard_normal(x.shape)
    gx, gw, gb = torch.autograd.grad(y, (xt, wt, bt), t(gy))
    saved = batchnorm.FLAT_MAX, batchnorm.FLAT_PLANE_MAX, batchnorm._rows_layout, batchnorm.ROWS_SERIAL_MAX
    try:
        batchnorm.FLAT_MAX = batchnorm.FLAT_PLANE_MAX = 10**9 if path == "flat" else 0
        batchnorm.ROWS_SERIAL_MAX = 10**9 if path == "rows-serial" else 0
        batchnorm._rows_layout = lambda a: path.startswith("rows")  # 1x1 planes too
        kw = {clamp: True} if clamp else {}
        out, mean, invstd = NUMBA.batch_norm_forward_train(x, weight, bias, EPS, **kw)
        grads = NUMBA.batch_norm_backward_train(gy, x, mean, invstd, weight, bias, **kw)
    finally:
        (batchnorm.FLAT_MAX, batchnorm.FLAT_PLANE_MAX, batchnorm._rows_layout,
         batchnorm.ROWS_SERIAL_MAX) = saved
    assert_close(out, y.detach().numpy(), TOL64, f"{path} y")
    for name, got, want in zip(("gx", "gweight", "gbias"), grads, (gx, gw, gb)):
        assert_close(got, want.numpy(), TOL64, f"{path} {name}")


@KSETS
@pytest.mark.parametrize("plane,stride", [(9, 1), (9, 2), (3, 1), (30, 2)])
def test_conv_kernels_take_an_empty_batch(kset, plane, stride):
    """N = 0 (the last batch of a split can be empty): outputs of the right shape, and
    zero weight gradients, from every conv kernel of both sets."""
    rng = np.random.default_rng(0)
    c = 70 if plane == 3 else 5
    x = np.empty((0, c, plane, plane))
    wd, wp = rng.standard_normal((c, 1, 3, 3)), rng.standard_normal((4, c, 1, 1))
    w = rng.standard_normal((4, c, 3, 3))
    s, pad = (stride, stride), (1, 1)
    ho = (plane - 1) // stride + 1
    for forward, backward_input, backward_weight, weight, args in (
            ("depthwise_conv2d_forward", "depthwise_conv2d_backward_input",
             "depthwise_conv2d_backward_weight", wd, (s, pad)),
            ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", w, (s, pad))):
        y = getattr(kset, forward)(x, weight, *args)
        assert y.shape == (0, weight.shape[0], ho, ho)
        assert getattr(kset, backward_input)(y, weight, x.shape, *args).shape == x.shape
        gw = getattr(kset, backward_weight)(y, x, weight.shape, *args)
        assert gw.shape == weight.shape and not gw.any()
    y = kset.pointwise_conv2d_forward(x, wp)
    assert y.shape == (0, 4, plane, plane)
    assert kset.pointwise_conv2d_backward_input(y, wp).shape == x.shape
    gw = kset.pointwise_conv2d_backward_weight(y, x)
    assert gw.shape == wp.shape and not gw.any()


@pytest.mark.parametrize("h,w", [(1, 1), (2, 2), (3, 2), (2, 5), (5, 7), (8, 6), (7, 8), (17, 18)])
def test_numba_depthwise_stride2_padding1_planes_match_torch(h, w):
    """MobileNetV2's strided case has NCHW routines of its own (numba/depthwise/planes3x3_s2.py:
    correlate3x3_s2, scatter3x3_s2, weight3x3_s2), with edge columns and rows that depend
    on whether H and W are odd: every parity, forced onto the NCHW planes."""
    rng = np.random.default_rng(h * 31 + w)
    x, wt = rng.standard_normal((2, 3, h, w)), rng.standard_normal((3, 1, 3, 3))
    y, gy, gx, gw = torch_conv(x, wt, 2, 1, 3, rng)
    with channels_last_max(0):
        got = (NUMBA.depthwise_conv2d_forward(x, wt, (2, 2), (1, 1)),
               NUMBA.depthwise_conv2d_backward_input(gy, wt, x.shape, (2, 2), (1, 1)),
               NUMBA.depthwise_conv2d_backward_weight(gy, x, wt.shape, (2, 2), (1, 1)))
    for name, a, b in zip(("forward", "backward_input", "backward_weight"), got, (y, gx, gw)):
        assert_close(a, b, TOL64, f"{h}x{w} {name}")


@pytest.mark.parametrize("band_bytes", [1, 256 << 10])
@pytest.mark.parametrize("n,ci,co,h,w", [(1, 1, 1, 1, 1), (2, 3, 5, 2, 5), (1, 3, 8, 7, 8),
                                         (3, 2, 9, 17, 18), (2, 4, 4, 33, 31)])
def test_numba_stem_weight_gradient_from_tap_planes_matches_torch(band_bytes, n, ci, co, h, w,
                                                                   monkeypatch):
    """The dense 3x3 stride-2 padding-1 weight gradient on NCHW planes (MobileNetV2's stem,
    numba/dense/weight3x3_s2.py): every parity of H and W, output channels in blocks of four
    and left over, bands of one output row (a 1-byte budget) or whole planes; the same bits on
    every run and with one thread."""
    monkeypatch.setattr(weight3x3_s2, "BAND_BYTES", band_bytes)
    rng = np.random.default_rng(n * 1000 + h * 31 + w)
    x, wt = rng.standard_normal((n, ci, h, w)), rng.standard_normal((co, ci, 3, 3))
    y, gy, gx, gw = torch_conv(x, wt, 2, 1, 1, rng)
    with channels_last_max(0):
        got, again, single = three_runs(
            lambda: NUMBA.conv2d_backward_weight(gy, x, wt.shape, (2, 2), (1, 1)))
    assert_close(got, gw, TOL64, f"{n}x{ci}x{h}x{w} -> {co}")
    assert got.tobytes() == again.tobytes() == single.tobytes()  # deterministic, any threads


@pytest.mark.parametrize("n,c,h,w", [(2, 16, 5, 7), (3, 17, 1, 1), (1, 33, 2, 3), (2, 40, 14, 14),
                                     (1, 5, 16, 16), (2, 96, 7, 7), (1, 1, 3, 1), (2, 3, 1, 9)])
def test_numba_channels_last_depthwise_in_registers_matches_torch(n, c, h, w):
    """The channels-last 3x3 stride-1 padding-1 depthwise kernels that slide a window of
    vectors along each row (numba/depthwise/rows3x3.py): channel counts that leave a part
    vector, planes of one row or one column; the same bits on every run and on one thread."""
    rng = np.random.default_rng(n * 1000 + c * 10 + h)
    x, wt = rng.standard_normal((n, c, h, w)), rng.standard_normal((c, 1, 3, 3))
    y, gy, gx, gw = torch_conv(x, wt, 1, 1, c, rng)

    def run():
        return (NUMBA.depthwise_conv2d_forward(x, wt, (1, 1), (1, 1)),
                NUMBA.depthwise_conv2d_backward_input(gy, wt, x.shape, (1, 1), (1, 1)),
                NUMBA.depthwise_conv2d_backward_weight(gy, x, wt.shape, (1, 1), (1, 1)))

    with channels_last_max(10**9):
        first, again, single = three_runs(run)
    for name, a, b in zip(("forward", "backward_input", "backward_weight"), first, (y, gx, gw)):
        assert_close(a, b, TOL64, f"{n}x{c}x{h}x{w} {name}")
    for a, b, s in zip(first, again, single):
        assert a.tobytes() == b.tobytes() == s.tobytes()
