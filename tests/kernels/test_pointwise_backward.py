"""numba's ``pointwise_conv2d_backward``: both gradients of a 1x1 convolution in one pass.

On NCHW planes it reads each step of gy once for dL/dx and dL/dW
(kernels/numba/pointwise: ``_backward_images``), summing dL/dW over two fixed runs of images; channels-last it
runs the two kernels. Checked against PyTorch, against the two separate kernels, for
any thread count, and through the autograd op that calls it.
"""
import numpy as np
import pytest

import tinymbv2
from kernel_cases import channels_last_max, three_runs
from test_kernels import TOL64, assert_close, torch_conv
from tinymbv2 import functional as F
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import NumbaKernels, pointwise
from tinymbv2.kernels.numba.pointwise import channels_last as pointwise_rows

NUMBA = kernel_set("numba")

CASES = [(1, 3, 5, 9), (3, 16, 96, 20), (2, 24, 7, 33), (5, 6, 4, 40)]  # n, ci, co, side


@pytest.mark.parametrize("layout", ["nchw", "channels-last", "channels-last, two threads"])
@pytest.mark.parametrize("n,ci,co,side", CASES)
def test_both_gradients_match_torch(layout, n, ci, co, side, monkeypatch):
    """NCHW; channels-last in the calling thread (small products), or on two threads
    (forced here whatever the size: _split of kernels/numba/pointwise/channels_last.py)."""
    rng = np.random.default_rng(n * side + ci)
    x, w = rng.standard_normal((n, ci, side, side)), rng.standard_normal((co, ci, 1, 1))
    _, gy, gx, gw = torch_conv(x, w, 1, 0, 1, rng)
    if layout.endswith("two threads"):
        monkeypatch.setattr(pointwise_rows, "_PARALLEL_MACS", 0)
    with channels_last_max(0 if layout == "nchw" else 10**9):
        got_gx, got_gw = NUMBA.pointwise_conv2d_backward(gy, x, w)
    assert got_gx.shape == gx.shape and got_gw.shape == gw.shape
    assert_close(got_gx, gx, TOL64, f"{layout} dL/dx")
    assert_close(got_gw, gw, TOL64, f"{layout} dL/dW")


def test_more_pixels_than_one_step_and_the_separate_kernels():
    """Planes longer than BACKWARD_PIXELS: dL/dx has the bits of backward_input (the same
    products over the same columns), dL/dW the values of backward_weight (another order)."""
    rng = np.random.default_rng(3)
    side = int(np.sqrt(pointwise.BACKWARD_PIXELS)) + 9  # 41 x 41 = 1681 pixels
    x = rng.standard_normal((3, 20, side, side)).astype(np.float32)
    gy = rng.standard_normal((3, 30, side, side)).astype(np.float32)
    w = rng.standard_normal((30, 20, 1, 1)).astype(np.float32)
    gx, gw = NUMBA.pointwise_conv2d_backward(gy, x, w)
    assert gx.tobytes() == NUMBA.pointwise_conv2d_backward_input(gy, w).tobytes()
    want = NUMBA.pointwise_conv2d_backward_weight(gy.astype(np.float64), x.astype(np.float64))
    np.testing.assert_allclose(gw, want, rtol=0, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("side", [36, 7])  # NCHW, channels-last
def test_the_same_bits_for_any_thread_count(side):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 96, side, side)).astype(np.float32)
    gy = rng.standard_normal((16, 40, side, side)).astype(np.float32)
    w = rng.standard_normal((40, 96, 1, 1)).astype(np.float32)

    def run():
        return [a.tobytes() for a in NUMBA.pointwise_conv2d_backward(gy, x, w)]

    first, again, single = three_runs(run)
    assert first == again == single


def test_the_autograd_op_takes_both_gradients_from_it(monkeypatch):
    calls = []
    both = NumbaKernels.pointwise_conv2d_backward
    monkeypatch.setattr(NumbaKernels, "pointwise_conv2d_backward",
                        staticmethod(lambda *a: calls.append(1) or both(*a)))
    rng = np.random.default_rng(5)
    x = tinymbv2.Tensor(rng.standard_normal((2, 4, 20, 20)), requires_grad=True)
    w = tinymbv2.Tensor(rng.standard_normal((6, 4, 1, 1)), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert calls == [1]
    np.testing.assert_allclose(x.grad, NUMBA.pointwise_conv2d_backward_input(
        np.ones((2, 6, 20, 20)), w.data), rtol=1e-12)


def test_bad_input_names_what_was_expected():
    x, gy, w = np.ones((2, 4, 20, 20)), np.ones((2, 6, 20, 20)), np.ones((6, 4, 1, 1))
    with pytest.raises(ValueError, match="x must have shape"):
        NUMBA.pointwise_conv2d_backward(gy, x[:, :3], w)
    with pytest.raises(ValueError, match="w must have shape"):
        NUMBA.pointwise_conv2d_backward(gy, x, np.ones((5, 4, 1, 1)))
