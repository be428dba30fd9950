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

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.checks import conv_geometry
from tinymbv2.kernels.numba import dense, depthwise, dilated

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
    """Dilation 1 (as an int or a pair) reaches .dense and .depthwise; anything else .dilated."""
    called = []
    for module, name in ((dense, "conv2d_forward"), (depthwise, "depthwise_conv2d_forward"),
                         (dilated, "conv2d_forward"), (dilated, "depthwise_conv2d_forward")):
        def spy(*args, _module=module, _name=name):
            called.append((_module.__name__.rsplit(".", 1)[-1], _name))
        monkeypatch.setattr(module, name, spy)
    x, w, wd = np.zeros((1, 2, 8, 8)), np.zeros((2, 2, 3, 3)), np.zeros((2, 1, 3, 3))
    for dil in (1, (1, 1)):
        NUMBA.conv2d_forward(x, w, (1, 1), (1, 1), dil)
        NUMBA.depthwise_conv2d_forward(x, wd, (1, 1), (1, 1), dil)
    NUMBA.conv2d_forward(x, w, (1, 1), (2, 2), 2)
    NUMBA.depthwise_conv2d_forward(x, wd, (1, 1), (1, 2), (1, 2))
    assert called == [("dense", "conv2d_forward"), ("depthwise", "depthwise_conv2d_forward")] * 2 + [
        ("dilated", "conv2d_forward"), ("dilated", "depthwise_conv2d_forward")]


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
