"""The numba set's dense weight gradient on channels-last planes (``numba/dense/channels_last.py``).

With the forward and the input gradient (``dense``'s) around it: against PyTorch in float64
on drawn shapes with a random upstream gradient, numba against the reference set in float32,
the same bits at any thread count, and the routing: only stride-1, undilated, many-channel
convolutions on channels-last planes come here (never the small-input stem of 1-3 channels).
"""

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import dense
from tinymbv2.kernels.numba.dense import channels_last
from tinymbv2.kernels.numba.layout import as_channels_last, is_channels_last

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
TOL64 = 1e-10


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@st.composite
def cases(draw):
    """(x, w, padding) in float64 that ``channels_last.fits``: 64-80 channels each side,
    kernels 2-5 wide, paddings up to k (a row of outputs may read padding only), planes up
    to 16 x 16; x in either layout."""
    kh, kw = draw(st.integers(2, 5)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh)), draw(st.integers(0, kw))
    h = draw(st.integers(max(1, kh - 2 * ph), 16 - 2 * ph + kh - 1))
    w = draw(st.integers(max(1, kw - 2 * pw), 16 - 2 * pw + kw - 1))
    n, ci, co = draw(st.integers(1, 3)), draw(st.integers(64, 80)), draw(st.integers(64, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, ci, h, w))
    if draw(st.booleans()):
        x = as_channels_last(x)
    return x, rng.standard_normal((co, ci, kh, kw)), (ph, pw), rng


@settings(max_examples=25, deadline=None)
@given(case=cases())
def test_matches_torch_in_float64(case):
    x, w, padding, rng = case
    assert channels_last.fits(x.shape, w.shape, (1, 1), padding, True)
    xt, wt = torch.tensor(np.ascontiguousarray(x), requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.conv2d(xt, wt, padding=padding)
    gy = rng.standard_normal(tuple(y.shape))
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.tensor(gy))
    if rng.random() < 0.5:
        gy = as_channels_last(gy)
    got_y = NUMBA.conv2d_forward(x, w, (1, 1), padding)
    got_gx = NUMBA.conv2d_backward_input(gy, w, x.shape, (1, 1), padding)
    assert is_channels_last(got_y)
    assert rel_err(got_y, y.detach().numpy()) < TOL64
    assert rel_err(got_gx, gx.numpy()) < TOL64
    assert rel_err(NUMBA.conv2d_backward_weight(gy, x, w.shape, (1, 1), padding), gw.numpy()) < TOL64


def head_problem(dtype, n=2, ci=96, co=72, size=9):
    """A many-channel 3 x 2 filter at stride 1 and padding 1 (a 3x3 there goes to Winograd's
    kernels, ``test_winograd.py``): output planes size x (size + 1)."""
    rng = np.random.default_rng(1)
    x = as_channels_last(rng.standard_normal((n, ci, size, size)).astype(dtype))
    w = rng.standard_normal((co, ci, 3, 2)).astype(dtype)
    gy = as_channels_last(rng.standard_normal((n, co, size, size + 1)).astype(dtype))
    return x, w, gy


def passes(kset, x, w, gy):
    args = ((1, 1), (1, 1))
    return (kset.conv2d_forward(x, w, *args), kset.conv2d_backward_input(gy, w, x.shape, *args),
            kset.conv2d_backward_weight(gy, x, w.shape, *args))


def test_numba_matches_reference_in_float32():
    x, w, gy = head_problem(np.float32)
    for name, a, b in zip(("y", "gx", "gw"), passes(NUMBA, x, w, gy), passes(REFERENCE, x, w, gy)):
        assert a.dtype == np.float32, name
        assert rel_err(a, b) < 1e-5, name


def test_the_same_bits_at_any_thread_count():
    """gw by tap and channel run: 1 thread and all give the same bits (96 input channels:
    two runs per tap, one of them short)."""
    x, w, gy = head_problem(np.float32, n=3, size=10)
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


def test_only_many_channel_stride_1_convolutions_on_small_planes_come_here(monkeypatch):
    """A many-channel 3 x 2 filter's weight gradient does (a 3x3 at padding 1, DeepLabHead's,
    goes to Winograd's kernels before); the small-input stem (1-3 channels at stride 1
    on 28 px, or on a 16 x 16 plane), a strided or 1x1 filter, a plane kept NCHW and an empty
    batch do not, and keep ``dense``'s kernels; so do every forward and input gradient."""
    fits = channels_last.fits
    assert fits((4, 256, 16, 16), (256, 256, 3, 3), (1, 1), (1, 1), True)
    assert not fits((4, 256, 16, 16), (256, 256, 3, 3), (1, 1), (1, 1), False)   # dilated
    assert not fits((64, 1, 28, 28), (32, 1, 3, 3), (1, 1), (1, 1), True)         # the stem
    assert not fits((64, 3, 16, 16), (32, 3, 3, 3), (1, 1), (1, 1), True)
    assert not fits((4, 256, 16, 16), (256, 256, 3, 3), (2, 2), (1, 1), True)
    assert not fits((4, 256, 16, 16), (256, 256, 1, 1), (1, 1), (0, 0), True)
    assert not fits((4, 256, 32, 32), (256, 256, 3, 3), (1, 1), (1, 1), True)     # NCHW plane
    assert not fits((0, 256, 16, 16), (256, 256, 3, 3), (1, 1), (1, 1), True)
    called = []
    monkeypatch.setattr(channels_last, "conv2d_backward_weight", lambda *a: called.append(a[2]))
    x, w, gy = head_problem(np.float64)
    passes(NUMBA, x, w, gy)
    assert called == [w.shape]
    called.clear()
    stem_x, stem_w = np.zeros((2, 3, 28, 28)), np.zeros((32, 3, 3, 3))
    dense.conv2d_forward(stem_x, stem_w, (1, 1), (1, 1))
    dense.conv2d_backward_input(np.zeros((2, 32, 28, 28)), stem_w, stem_x.shape, (1, 1), (1, 1))
    dense.conv2d_backward_weight(np.zeros((2, 32, 28, 28)), stem_x, stem_w.shape, (1, 1), (1, 1))
    assert called == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bad_input_still_gets_the_kernels_errors(dtype):
    x, w, gy = head_problem(dtype)
    with pytest.raises(ValueError, match="conv2d_backward_weight"):
        NUMBA.conv2d_backward_weight(gy[:, :, :-1], x, w.shape, (1, 1), (1, 1))
    with pytest.raises(TypeError, match="conv2d_backward_weight"):
        NUMBA.conv2d_backward_weight(gy, x.astype(np.float16), w.shape, (1, 1), (1, 1))
