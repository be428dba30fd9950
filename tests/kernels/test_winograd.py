"""Winograd's F(2x2, 3x3) for the numba set's many-channel 3x3 convolutions (``numba/dense/winograd.py``).

The three passes against PyTorch in float64 on drawn shapes (odd and one-pixel planes,
paddings 0-2, either layout) with a random upstream gradient; the numba set against the
reference set in float32, to a rounding bound measured against float64; the same bits at
any thread count; the routing (only a many-channel 3x3 at stride 1 and padding 1 on a
channels-last plane comes here); and the errors.
"""

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba.dense import winograd
from tinymbv2.kernels.numba.layout import as_channels_last, is_channels_last

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
TOL64 = 1e-12


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def maybe_channels_last(a, draw):
    return as_channels_last(a) if draw(st.booleans()) else a


@st.composite
def cases(draw):
    """(x, w, padding, rng) in float64: 1-3 images, 1-40 channels each side, planes 1-13 a
    side (odd ones leave half tiles), paddings 0-2 (a plane that padding 0 leaves empty is
    not drawn); x in either layout."""
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h, w = draw(st.integers(max(1, 3 - 2 * ph), 13)), draw(st.integers(max(1, 3 - 2 * pw), 13))
    n, ci, co = draw(st.integers(1, 3)), draw(st.integers(1, 40)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = maybe_channels_last(rng.standard_normal((n, ci, h, w)), draw)
    return x, rng.standard_normal((co, ci, 3, 3)), (ph, pw), rng, draw(st.booleans())


@settings(max_examples=40, deadline=None)
@given(case=cases())
def test_matches_torch_in_float64(case):
    x, w, padding, rng, gy_channels_last = case
    xt, wt = torch.tensor(np.ascontiguousarray(x), requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.conv2d(xt, wt, padding=padding)
    gy = rng.standard_normal(tuple(y.shape))
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.tensor(gy))
    if gy_channels_last:
        gy = as_channels_last(gy)
    got_y = winograd.conv2d_forward(x, w, padding)
    got_gx = winograd.conv2d_backward_input(gy, w, x.shape, padding)
    got_gw = winograd.conv2d_backward_weight(gy, x, w.shape, padding)
    assert is_channels_last(got_y) and is_channels_last(got_gx)
    assert rel_err(got_y, y.detach().numpy()) < TOL64
    assert rel_err(got_gx, gx.numpy()) < TOL64
    assert rel_err(got_gw, gw.numpy()) < TOL64


def head_problem(dtype, n=2, ci=96, co=72, size=9):
    """DeepLabHead's kind of 3x3: many channels, stride 1, padding 1, a channels-last plane
    (an odd one: the last tile row and column are half outside)."""
    rng = np.random.default_rng(1)
    x = as_channels_last(rng.standard_normal((n, ci, size, size)).astype(dtype))
    w = (rng.standard_normal((co, ci, 3, 3)) / np.sqrt(9 * ci)).astype(dtype)
    gy = as_channels_last(rng.standard_normal((n, co, size, size)).astype(dtype))
    return x, w, gy


def passes(kset, x, w, gy):
    args = ((1, 1), (1, 1))
    return (kset.conv2d_forward(x, w, *args), kset.conv2d_backward_input(gy, w, x.shape, *args),
            kset.conv2d_backward_weight(gy, x, w.shape, *args))


def test_numba_rounds_float32_as_closely_as_the_direct_sum():
    """Against the float64 answer, Winograd's float32 sums err by a few units of 1e-7 of the
    result's scale (measured: at most about 2.5 times the direct float32 sum's error); bound
    at 5 times the reference set's own float32 error, and 1e-5 absolutely."""
    x, w, gy = head_problem(np.float32)
    exact = passes(REFERENCE, *(a.astype(np.float64) for a in (x, w, gy)))
    direct = passes(REFERENCE, x, w, gy)
    for name, got, ref, want in zip(("y", "gx", "gw"), passes(NUMBA, x, w, gy), direct, exact):
        assert got.dtype == np.float32, name
        assert rel_err(got, want) < max(5 * rel_err(ref, want), 1e-6), name
        assert rel_err(got, ref) < 1e-5, name


def test_the_same_bits_at_any_thread_count():
    x, w, gy = head_problem(np.float32, n=3, ci=200, co=130, size=10)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = passes(NUMBA, x, w, gy)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, passes(NUMBA, x, w, gy)):
        assert a.tobytes() == b.tobytes()
    for a, b in zip(one, passes(NUMBA, x, w, gy)):  # and from run to run
        assert a.tobytes() == b.tobytes()


def test_only_many_channel_3x3_at_stride_1_and_padding_1_on_small_planes_come_here(monkeypatch):
    """DeepLabHead's 3x3 does, all three passes; a strided, dilated, unpadded, 1x1 or
    few-channel filter, a plane kept NCHW and an empty batch keep the other kernels."""
    fits = winograd.fits
    assert fits((4, 256, 16, 16), (256, 256, 3, 3), 1, 1, 1)
    assert fits((4, 64, 16, 16), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1))
    assert not fits((4, 256, 16, 16), (256, 256, 3, 3), 2, 1, 1)
    assert not fits((4, 256, 16, 16), (256, 256, 3, 3), 1, 2, 2)            # atrous: tap_regions
    assert not fits((4, 256, 16, 16), (256, 256, 3, 3), 1, 0, 1)
    assert not fits((4, 256, 16, 16), (256, 256, 1, 1), 1, 0, 1)
    assert not fits((4, 63, 16, 16), (256, 63, 3, 3), 1, 1, 1)
    assert not fits((4, 256, 16, 16), (63, 256, 3, 3), 1, 1, 1)
    assert not fits((64, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1)                 # the small-input stem
    assert not fits((4, 256, 32, 32), (256, 256, 3, 3), 1, 1, 1)            # an NCHW plane
    assert not fits((0, 256, 16, 16), (256, 256, 3, 3), 1, 1, 1)
    assert not fits((4, 256, 16, 16), (256, 256, 3, 3), "1", 1, 1)          # the kernels' error
    called = []
    for name in ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight"):
        monkeypatch.setattr(winograd, name, lambda *a, name=name: called.append(name))
    x, w, gy = head_problem(np.float32, ci=64, co=64)
    passes(NUMBA, x, w, gy)
    assert called == ["conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight"]
    called.clear()
    passes(NUMBA, x[:, :, :, :8], w[:, :, :, :2], gy)  # a 3 x 2 filter: dense's kernels
    assert called == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bad_input_gets_a_clear_error(dtype):
    x, w, gy = head_problem(dtype)
    with pytest.raises(ValueError, match=r"conv2d_backward_weight.*\(2, 72, 9, 9\)"):
        winograd.conv2d_backward_weight(gy[:, :, :-1], x, w.shape, (1, 1))
    with pytest.raises(TypeError, match="conv2d_backward_input"):
        winograd.conv2d_backward_input(gy, w.astype(np.float16), x.shape, (1, 1))
    with pytest.raises(ValueError, match="3 x 3 filter, got 3 x 2"):
        winograd.conv2d_forward(x, w[:, :, :, :2], (1, 1))
    with pytest.raises(ValueError, match=r"padding of at most 2, got \(3, 3\)"):
        winograd.conv2d_backward_input(gy, w, x.shape, (3, 3))
    with pytest.raises(ValueError, match="conv2d_forward"):
        NUMBA.conv2d_forward(x, w[:, :50], (1, 1), (1, 1))  # channels that do not match
