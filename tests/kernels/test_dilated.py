"""Atrous (dilated) convolution in the CPU kernel sets, against PyTorch in float64.

Dense and depthwise kernels, forward and both backward passes, with a random upstream
gradient, over drawn shapes, kernel sizes, strides 1/2, paddings and dilations 1/2/3/6
(and unequal pairs); the numba set's dilation-1 calls still reach its fast kernels, and
its dilated ones are deterministic and keep float32.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_cases import three_runs
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.checks import conv_geometry
from tinymbv2.kernels.numba import dense, depthwise, dilated, subgrids, tap_regions
from tinymbv2.kernels.numba.layout import as_channels_last, channels_last_plane, is_channels_last

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
KSETS = pytest.mark.parametrize("kset", [REFERENCE, NUMBA], ids=lambda m: m.name)
FEW = settings(max_examples=30, deadline=None)
TOL64 = 1e-10


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@st.composite
def dilated_cases(draw, depthwise=False):
    """(x, w, stride, padding, dilation), float64, with the dilated kernel inside the padded input."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = (draw(st.sampled_from([1, 2, 3, 6])), draw(st.sampled_from([1, 2, 3, 6])))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.sampled_from([0, 1, dilation[0]])), draw(st.sampled_from([0, 1, dilation[1]])))
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    h0, w0 = max(1, span_h - 2 * padding[0]), max(1, span_w - 2 * padding[1])
    h, w = draw(st.integers(h0, h0 + 9)), draw(st.integers(w0, w0 + 9))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    co = c if depthwise else draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((co, 1 if depthwise else c, kh, kw))
    return x, wt, stride, padding, dilation


def torch_conv(x, w, stride, padding, dilation, groups, rng):
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.conv2d(xt, wt, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = rng.standard_normal(tuple(y.shape))
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.tensor(gy))
    return y.detach().numpy(), gy, gx.numpy(), gw.numpy()


@KSETS
@FEW
@given(case=dilated_cases())
def test_dilated_conv2d_matches_torch(kset, case):
    x, w, s, p, d = case
    y, gy, gx, gw = torch_conv(x, w, s, p, d, 1, np.random.default_rng(0))
    assert rel_err(kset.conv2d_forward(x, w, s, p, d), y) < TOL64
    assert rel_err(kset.conv2d_backward_input(gy, w, x.shape, s, p, d), gx) < TOL64
    assert rel_err(kset.conv2d_backward_weight(gy, x, w.shape, s, p, d), gw) < TOL64


@KSETS
@FEW
@given(case=dilated_cases(depthwise=True))
def test_dilated_depthwise_conv2d_matches_torch(kset, case):
    x, w, s, p, d = case
    y, gy, gx, gw = torch_conv(x, w, s, p, d, x.shape[1], np.random.default_rng(1))
    assert rel_err(kset.depthwise_conv2d_forward(x, w, s, p, d), y) < TOL64
    assert rel_err(kset.depthwise_conv2d_backward_input(gy, w, x.shape, s, p, d), gx) < TOL64
    assert rel_err(kset.depthwise_conv2d_backward_weight(gy, x, w.shape, s, p, d), gw) < TOL64


@KSETS
@pytest.mark.parametrize("d", [2, 3, 6])
@pytest.mark.parametrize("s", [1, 2])
def test_deeplab_shapes_match_torch(kset, d, s):
    """The DeepLab pattern: 3x3 with padding = dilation, on a plane smaller than the field."""
    rng = np.random.default_rng(d * 10 + s)
    x, w, wd = (rng.standard_normal((2, 6, 9, 7)), rng.standard_normal((5, 6, 3, 3)),
                rng.standard_normal((6, 1, 3, 3)))
    for weight, groups in ((w, 1), (wd, 6)):
        y, gy, gx, gw = torch_conv(x, weight, (s, s), (d, d), (d, d), groups, rng)
        prefix = "" if groups == 1 else "depthwise_"
        fwd, bi, bw = (getattr(kset, f"{prefix}conv2d_{n}")
                       for n in ("forward", "backward_input", "backward_weight"))
        assert rel_err(fwd(x, weight, (s, s), (d, d), (d, d)), y) < TOL64
        assert rel_err(bi(gy, weight, x.shape, (s, s), (d, d), (d, d)), gx) < TOL64
        assert rel_err(bw(gy, x, weight.shape, (s, s), (d, d), (d, d)), gw) < TOL64


@KSETS
@pytest.mark.parametrize("rate", [6, 12, 18])
def test_aspp_rates_on_a_small_map_match_torch(kset, rate):
    """ASPP's branches on a map smaller than their reach (the numba set's GEMM per tap skips
    the taps that fall outside): 3x3, padding = rate, stride 1 and 2, odd sizes."""
    rng = np.random.default_rng(rate)
    x, w = rng.standard_normal((3, 7, 11, 9)), rng.standard_normal((5, 7, 3, 3))
    for s, p in (((1, 1), (rate, rate)), ((2, 1), (rate, rate - 1)), ((1, 2), (rate + 2, rate + 1))):
        y, gy, gx, gw = torch_conv(x, w, s, p, (rate, rate), 1, rng)
        assert rel_err(kset.conv2d_forward(x, w, s, p, rate), y) < TOL64
        assert rel_err(kset.conv2d_backward_input(gy, w, x.shape, s, p, rate), gx) < TOL64
        assert rel_err(kset.conv2d_backward_weight(gy, x, w.shape, s, p, rate), gw) < TOL64
    if rate >= 11:  # every outer tap outside at every output: the centre tap alone, a 1x1 conv
        y = kset.conv2d_forward(x, w, (1, 1), (rate, rate), rate)
        np.testing.assert_allclose(y, np.einsum("oc,nchw->nohw", w[:, :, 1, 1], x), rtol=1e-12,
                                   atol=1e-12)
        gw = kset.conv2d_backward_weight(y, x, w.shape, (1, 1), (rate, rate), rate)
        assert (np.delete(gw.reshape(5, 7, 9), 4, axis=2) == 0).all()


def test_output_size_is_pytorchs():
    # H_o = floor((H + 2p - d(k - 1) - 1) / s) + 1
    assert conv_geometry("f", (1, 1, 17, 17), (1, 1, 3, 3), 2, 6, dilation=6)[2] == (9, 9)
    assert conv_geometry("f", (1, 1, 10, 11), (1, 1, 3, 5), (1, 2), (0, 3), dilation=(2, 3))[2] == (6, 3)


def test_kernels_refuse_a_bad_dilation_or_a_kernel_spread_past_the_input():
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((2, 2, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d_forward: dilation must be >= 1, got \(0, 0\)"):
        REFERENCE.conv2d_forward(x, w, (1, 1), (0, 0), 0)
    with pytest.raises(ValueError, match=r"spanning \(7, 7\) at dilation \(3, 3\)"):
        NUMBA.conv2d_forward(x, w, (1, 1), (0, 0), (3, 3))


def test_numba_sends_dilation_one_to_its_fast_kernels(monkeypatch):
    """A dense convolution dilated at stride 1 reaches .tap_regions; dense ones at dilation 1
    (as an int or a pair; the 3x3 at stride 1 too: the small-input stem) .dense, other
    dilated ones .dilated. Depthwise: dilation 1 .depthwise, at stride 1 with the padding a multiple
    of the dilation .subgrids, anything else .dilated."""
    called = []
    for module, name in ((dense, "conv2d_forward"), (depthwise, "depthwise_conv2d_forward"),
                         (dilated, "conv2d_forward"), (dilated, "depthwise_conv2d_forward"),
                         (subgrids, "depthwise_conv2d_forward"), (tap_regions, "conv2d_forward")):
        def spy(*args, _module=module, _name=name):
            called.append((_module.__name__.rsplit(".", 1)[-1], _name))
        monkeypatch.setattr(module, name, spy)
    x, w, wd, w1 = np.zeros((1, 2, 8, 8)), np.zeros((2, 2, 3, 3)), np.zeros((2, 1, 3, 3)), np.zeros((2, 2, 1, 1))
    for dil in (1, (1, 1)):
        NUMBA.conv2d_forward(x, w, (2, 2), (1, 1), dil)
        NUMBA.conv2d_forward(x, w1, (1, 1), (0, 0), dil)
        NUMBA.depthwise_conv2d_forward(x, wd, (1, 1), (1, 1), dil)
    NUMBA.conv2d_forward(x, w, (1, 1), (1, 1), 1)
    NUMBA.conv2d_forward(x, w, (1, 1), (2, 2), 2)
    NUMBA.conv2d_forward(x, w, (2, 1), (2, 2), 2)
    NUMBA.depthwise_conv2d_forward(x, wd, (1, 1), (1, 2), (1, 2))   # padding % dilation == 0
    NUMBA.depthwise_conv2d_forward(x, wd, (1, 1), (0, 4), (3, 2))   # 0 and 4: multiples too
    NUMBA.depthwise_conv2d_forward(x, wd, (1, 1), (1, 1), (2, 2))   # padding 1 at dilation 2
    NUMBA.depthwise_conv2d_forward(x, wd, (2, 2), (2, 2), (2, 2))   # stride 2
    assert called == [("dense", "conv2d_forward")] * 2 + [("depthwise", "depthwise_conv2d_forward")] + [
        ("dense", "conv2d_forward")] * 2 + [("depthwise", "depthwise_conv2d_forward")] + [
        ("dense", "conv2d_forward"), ("tap_regions", "conv2d_forward"),
        ("dilated", "conv2d_forward")] + [
        ("subgrids", "depthwise_conv2d_forward")] * 2 + [("dilated", "depthwise_conv2d_forward")] * 2


@pytest.mark.parametrize("d", [(2, 2), (2, 3), (4, 1), (3, 3)])
@pytest.mark.parametrize("k,p", [((3, 3), "same"), ((3, 3), 0), ((2, 4), "twice"), ((1, 3), 0)])
@pytest.mark.parametrize("hw", [(16, 16), (9, 7), (5, 13)])
def test_subgrid_depthwise_matches_torch(d, k, p, hw):
    """The sub-grid route (stride 1, padding a multiple of the dilation) on sizes that are
    and are not multiples of the dilation, odd kernels and paddings 0, d, 2d."""
    rng = np.random.default_rng(sum(d) * 100 + sum(k) * 10 + sum(hw))
    pad = {"same": ((k[0] - 1) // 2 * d[0], (k[1] - 1) // 2 * d[1]), 0: (0, 0),
           "twice": (2 * d[0], 2 * d[1])}[p]
    assert subgrids.fits((1, 1), pad, d)
    x, w = rng.standard_normal((3, 5, *hw)), rng.standard_normal((5, 1, *k))
    if any(s + 2 * q < dd * (kk - 1) + 1 for s, q, dd, kk in zip(hw, pad, d, k)):
        with pytest.raises(ValueError, match="depthwise_conv2d_forward: .*spanning"):
            NUMBA.depthwise_conv2d_forward(x, w, (1, 1), pad, d)   # refused as the direct loops do
        return
    y, gy, gx, gw = torch_conv(x, w, (1, 1), pad, d, 5, rng)
    assert rel_err(NUMBA.depthwise_conv2d_forward(x, w, (1, 1), pad, d), y) < TOL64
    assert rel_err(NUMBA.depthwise_conv2d_backward_input(gy, w, x.shape, (1, 1), pad, d), gx) < TOL64
    assert rel_err(NUMBA.depthwise_conv2d_backward_weight(gy, x, w.shape, (1, 1), pad, d), gw) < TOL64


@pytest.mark.parametrize("channels_last", [False, True])
def test_space_to_batch_interleaves_and_inverts(channels_last):
    x = np.arange(2 * 3 * 5 * 7, dtype=np.float64).reshape(2, 3, 5, 7)
    if channels_last:
        x = as_channels_last(x)
    grids = subgrids.space_to_batch(x, 2, 3)
    assert grids.shape == (12, 3, 3, 3) and is_channels_last(grids) == channels_last
    a, b = 1, 2                                   # image (a * dw + b) * N + n
    np.testing.assert_array_equal(grids[(a * 3 + b) * 2 + 1, :, :2, :2], x[1, :, a::2, b::3])
    assert (grids[(a * 3 + b) * 2 + 1, :, 2:, :] == 0).all()   # row 5 is padding
    for layout in (False, True):
        back = subgrids.batch_to_space(grids, 2, 3, 5, 7, layout)
        np.testing.assert_array_equal(back, x)
        assert is_channels_last(back) == layout
    assert not subgrids.fits((1, 1), (1, 1), (2, 2)) and not subgrids.fits((2, 1), (2, 2), (2, 2))
    assert not subgrids.fits("one", (2, 2), (2, 2))  # left to the direct loops to refuse


@pytest.mark.parametrize("hw", [(16, 16), (15, 16), (32, 32), (13, 31)])
def test_subgrid_route_keeps_the_layout_of_the_fast_kernels(hw):
    """On channels-last planes (the numba set's small ones) and NCHW ones alike, in float32:
    the result's layout is what .depthwise would give, its values the direct loops'."""
    rng = np.random.default_rng(sum(hw))
    x = rng.standard_normal((2, 8, *hw)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    small = channels_last_plane(*hw)
    if small:
        x = as_channels_last(x)
    args = ((1, 1), (2, 2), (2, 2))
    y = NUMBA.depthwise_conv2d_forward(x, w, *args)
    assert is_channels_last(y) == small and y.dtype == np.float32
    assert rel_err(y, dilated.depthwise_conv2d_forward(x, w, *args)) < 1e-6
    gx = NUMBA.depthwise_conv2d_backward_input(y, w, x.shape, *args)
    assert is_channels_last(gx) == small
    assert rel_err(gx, dilated.depthwise_conv2d_backward_input(y, w, x.shape, *args)) < 1e-6
    gw = NUMBA.depthwise_conv2d_backward_weight(y, x, w.shape, *args)
    assert rel_err(gw, dilated.depthwise_conv2d_backward_weight(y, x, w.shape, *args)) < 1e-5


def test_numba_dilated_keeps_float32_and_is_deterministic():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    args = ((1, 1), (2, 2), (2, 2))
    outs = [(NUMBA.depthwise_conv2d_forward(x, w, *args),
             NUMBA.depthwise_conv2d_backward_input(gy, w, x.shape, *args),
             NUMBA.depthwise_conv2d_backward_weight(gy, x, w.shape, *args)) for _ in range(2)]
    for a, b, ref in zip(outs[0], outs[1], (REFERENCE.depthwise_conv2d_forward(x, w, *args),
                                            REFERENCE.depthwise_conv2d_backward_input(gy, w, x.shape, *args),
                                            REFERENCE.depthwise_conv2d_backward_weight(gy, x, w.shape, *args))):
        assert a.dtype == np.float32 and a.tobytes() == b.tobytes()
        assert rel_err(a, ref) < 1e-5


def test_numba_dilated_dense_keeps_float32_and_is_deterministic():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 3, 11, 10)).astype(np.float32)  # 9 images: runs of unequal length
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    args = ((2, 1), (3, 3), (3, 2))
    gy = rng.standard_normal(REFERENCE.conv2d_forward(x, w, *args).shape).astype(np.float32)
    calls = (("conv2d_forward", (x, w)), ("conv2d_backward_input", (gy, w, x.shape)),
             ("conv2d_backward_weight", (gy, x, w.shape)))
    for name, head in calls:
        a, b = (getattr(NUMBA, name)(*head, *args) for _ in range(2))
        assert a.dtype == np.float32 and a.tobytes() == b.tobytes(), name
        assert rel_err(a, getattr(REFERENCE, name)(*head, *args)) < 1e-5, name


@pytest.mark.parametrize("stride,shape", [((1, 1), (3, 5, 9, 9)), ((2, 1), (3, 5, 9, 9)),
                                          ((1, 1), (3, 70, 11, 10))])
def test_numba_dilated_dense_ignores_the_thread_count(stride, shape):
    """Stride 2 (.dilated: each tap's product splits its rows in fixed runs) and stride 1
    (.tap_regions: each output summed whole by one task, its tasks shared out by cost among
    the threads; 70 input channels: two tasks of the weight gradient per tap, 2 images of
    110 outputs: several column tasks per region): one thread and all of them give the same
    bits (7 output channels)."""

    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((7, shape[1], 3, 3)).astype(np.float32)
    args = (stride, (2, 2), (2, 2))
    gy = rng.standard_normal(REFERENCE.conv2d_forward(x, w, *args).shape).astype(np.float32)

    def passes():
        return (NUMBA.conv2d_forward(x, w, *args), NUMBA.conv2d_backward_input(gy, w, x.shape, *args),
                NUMBA.conv2d_backward_weight(gy, x, w.shape, *args))

    first, _, one = three_runs(passes)
    for a, b in zip(one, first):
        assert a.tobytes() == b.tobytes()


def test_tap_regions_cut_the_outputs_where_the_taps_change():
    """Rate 6 on 16 pixels, padding 6: tap 0 reads inside from output 6 on, tap 2 up to
    output 9; rate 18: only the centre tap, everywhere; a padding past the reach (the input
    gradient's negative one) leaves outputs that read nothing."""
    np.testing.assert_array_equal(tap_regions.intervals(3, 6, 6, 16, 16),
                                  [[0, 6, 1, 3], [6, 10, 0, 3], [10, 16, 0, 2]])
    np.testing.assert_array_equal(tap_regions.intervals(3, 18, 18, 16, 16), [[0, 16, 1, 2]])
    np.testing.assert_array_equal(tap_regions.intervals(1, 1, -2, 5, 9),  # reads o + 2
                                  [[0, 3, 0, 1], [3, 9, 0, 0]])
    regs = tap_regions.regions(3, 3, 6, 12, 6, 12, 16, 16, 16, 16)
    # rate 12 across: columns 4 to 11 read the centre tap alone, in every row interval
    assert len(regs) == 9 and (regs[[1, 4, 7], 2:4] == [4, 12]).all()
    assert (regs[[1, 4, 7], 6:] == [1, 2]).all()
    w3, w1 = (5, 4, 3, 3), (5, 4, 1, 1)
    assert tap_regions.fits(1, w3, 2) and not tap_regions.fits((1, 1), w3, (1, 1))  # .dense's
    assert tap_regions.fits(1, w1, (1, 2)) and not tap_regions.fits(1, w1, 1)
    assert not tap_regions.fits((2, 1), w3, 2) and not tap_regions.fits("one", w3, 2)
    assert not tap_regions.fits(1, w3, 0) and not tap_regions.fits(1, (5, 4), 2)


def test_tap_regions_schedule_shares_every_task_once():
    costs = np.array([5.0, 1.0, 3.0, 3.0, 0.0, 8.0])
    order, starts = tap_regions.schedule(costs, 2)
    assert sorted(order.tolist()) == list(range(6)) and starts.tolist() == [0, 2, 6]
    # largest first, to the least loaded, each task counting 1 more: 8 + 3 against 5 + 3 + 1 + 0
    assert order[:2].tolist() == [3, 5] and order[2:].tolist() == [0, 1, 2, 4]  # each in task order


@pytest.mark.parametrize("hw", [(16, 16), (20, 18)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_tap_regions_take_either_layout_and_keep_the_sets(hw, channels_last):
    """NCHW or channels-last in, in float32: channels-last out on the planes the numba set keeps
    so (16x16), NCHW on larger ones; the values the reference kernels'."""
    rng = np.random.default_rng(sum(hw) + channels_last)
    x = rng.standard_normal((2, 6, *hw)).astype(np.float32)
    w = rng.standard_normal((5, 6, 3, 3)).astype(np.float32)
    args = ((1, 1), (3, 3), (3, 3))
    gy = rng.standard_normal(REFERENCE.conv2d_forward(x, w, *args).shape).astype(np.float32)
    xin, gyin = (as_channels_last(x), as_channels_last(gy)) if channels_last else (x, gy)
    small = channels_last_plane(*hw)
    y = NUMBA.conv2d_forward(xin, w, *args)
    gx = NUMBA.conv2d_backward_input(gyin, w, x.shape, *args)
    gw = NUMBA.conv2d_backward_weight(gyin, xin, w.shape, *args)
    for got, ref in ((y, REFERENCE.conv2d_forward(x, w, *args)),
                     (gx, REFERENCE.conv2d_backward_input(gy, w, x.shape, *args))):
        assert got.dtype == np.float32 and is_channels_last(got) == small
        assert small or got.flags.c_contiguous
        assert rel_err(got, ref) < 1e-5
    assert gw.dtype == np.float32 and rel_err(gw, REFERENCE.conv2d_backward_weight(gy, x, w.shape, *args)) < 1e-5


@pytest.mark.parametrize("d", [(2, 2), (2, 3), (4, 1), (3, 3), (16, 16)])
@pytest.mark.parametrize("hw", [(16, 16), (9, 7), (5, 13), (1, 1)])
def test_subgrids_read_in_place_on_channels_last_planes(d, hw, monkeypatch):
    """A 3x3 filter with padding = dilation on channels-last planes: the register kernels read
    each sub-grid where it lies (no ``space_to_batch``); against PyTorch in float64 (sub-grids
    of one pixel, and dilations past the plane, included), the same bits at 1 and 2 threads."""

    rng = np.random.default_rng(sum(d) * 10 + sum(hw))
    x, w = as_channels_last(rng.standard_normal((2, 21, *hw))), rng.standard_normal((21, 1, 3, 3))
    y, gy, gx, gw = torch_conv(x, w, (1, 1), d, d, 21, rng)
    gy = as_channels_last(gy)
    monkeypatch.setattr(subgrids, "space_to_batch", None)  # the copying route would fail

    def passes():
        return (NUMBA.depthwise_conv2d_forward(x, w, (1, 1), d, d),
                NUMBA.depthwise_conv2d_backward_input(gy, w, x.shape, (1, 1), d, d),
                NUMBA.depthwise_conv2d_backward_weight(gy, x, w.shape, (1, 1), d, d))

    got = passes()
    assert is_channels_last(got[0]) and is_channels_last(got[1])
    for a, want in zip(got, (y, gx, gw)):
        assert rel_err(a, want) < TOL64
    _, _, one = three_runs(passes)
    for a, b in zip(one, got):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("hw, rate", [((16, 16), 18), ((20, 18), 21), ((11, 9), (12, 9))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_tap_regions_send_a_lone_centre_tap_to_the_pointwise_kernels(hw, rate, channels_last,
                                                                     monkeypatch):
    """A dilation past the plane (ASPP's rate 18 on 16 x 16) leaves every output its centre
    tap alone, at its own pixel: .tap_regions runs the three passes as the 1x1 convolution
    with that tap (.pointwise), in the layouts it gives, and the other taps' gradients are 0."""
    rng = np.random.default_rng(sum(hw))
    x = rng.standard_normal((2, 6, *hw)).astype(np.float32)
    w = rng.standard_normal((5, 6, 3, 3)).astype(np.float32)
    d = (rate, rate) if isinstance(rate, int) else rate
    gy = rng.standard_normal((2, 5, *hw)).astype(np.float32)
    xin, gyin = (as_channels_last(x), as_channels_last(gy)) if channels_last else (x, gy)
    calls = []
    for name in ("pointwise_conv2d_forward", "pointwise_conv2d_backward_input",
                 "pointwise_conv2d_backward_weight"):
        real = getattr(tap_regions.pointwise, name)
        monkeypatch.setattr(tap_regions.pointwise, name,
                            lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    y = NUMBA.conv2d_forward(xin, w, 1, d, d)
    gx = NUMBA.conv2d_backward_input(gyin, w, x.shape, 1, d, d)
    gw = NUMBA.conv2d_backward_weight(gyin, xin, w.shape, 1, d, d)
    assert calls == ["pointwise_conv2d_forward", "pointwise_conv2d_backward_input",
                     "pointwise_conv2d_backward_weight"]
    small = channels_last_plane(*hw)
    centre = w[:, :, 1:2, 1:2]
    np.testing.assert_array_equal(y, NUMBA.pointwise_conv2d_forward(xin, centre))
    np.testing.assert_array_equal(gx, NUMBA.pointwise_conv2d_backward_input(gyin, centre))
    for got in (y, gx):
        assert got.dtype == np.float32 and is_channels_last(got) == small
    ref = REFERENCE.conv2d_backward_weight(gy, x, w.shape, 1, d, d)
    assert gw.dtype == np.float32 and rel_err(gw, ref) < 1e-5
    assert (np.delete(gw.reshape(5, 6, 9), 4, axis=2) == 0).all()
    assert rel_err(y, REFERENCE.conv2d_forward(x, w, 1, d, d)) < 1e-5
    assert rel_err(gx, REFERENCE.conv2d_backward_input(gy, w, x.shape, 1, d, d)) < 1e-5
