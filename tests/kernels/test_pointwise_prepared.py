"""The numba set's pointwise conv + BatchNorm-eval prepared once
(``numba/pointwise/__init__.py``, ``PreparedPointwise``, what ``tinymbv2.freeze`` runs for
MobileNetV2's last convolution): the unprepared kernel's bits on channels-last planes (the
product cut by rows, by columns or not at all) and on NCHW ones, and its checks."""

import numpy as np
import pytest

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba.layout import as_channels_last, is_channels_last
from tinymbv2.kernels.numba.pointwise import PreparedPointwise

NUMBA, REFERENCE = kernel_set("numba"), kernel_set("reference")


def _case(n, ci, co, h, w, dtype, relu6=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ci, h, w)).astype(dtype)
    wt = rng.standard_normal((co, ci, 1, 1)).astype(dtype)
    bn = (rng.standard_normal(co).astype(dtype), rng.uniform(0.5, 2, co).astype(dtype),
          rng.standard_normal(co).astype(dtype), rng.standard_normal(co).astype(dtype), 1e-5,
          relu6)
    return x, wt, bn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,ci,co,h,w", [
    (1, 320, 1280, 7, 7),    # MobileNetV2's last convolution at batch 1: cut by columns
    (8, 320, 1280, 7, 7),    # batch 8: by rows
    (2, 16, 24, 3, 3),       # too small to cut
    (2, 8, 12, 40, 40),      # an NCHW plane: the kernel itself
])
def test_the_prepared_pointwise_gives_the_kernels_bits(dtype, n, ci, co, h, w):
    x, wt, bn = _case(n, ci, co, h, w, dtype)
    prepared = NUMBA.prepare_pointwise_conv2d_bn_eval(wt, bn)
    assert isinstance(prepared, PreparedPointwise)
    expected = NUMBA.pointwise_conv2d_bn_eval(x, wt, bn)
    for xin in (x, as_channels_last(x)):
        y = prepared(xin)
        assert np.array_equal(y, expected) and is_channels_last(y) == is_channels_last(expected)
    reference = REFERENCE.pointwise_conv2d_bn_eval(x, wt, bn)
    assert np.abs(y - reference).max() <= (1e-4 if dtype == np.float32 else 1e-12) * np.abs(
        reference).max()


def test_the_reference_sets_prepared_pointwise_calls_its_kernel():
    x, wt, bn = _case(2, 4, 6, 5, 5, np.float64)
    run = REFERENCE.prepare_pointwise_conv2d_bn_eval(wt, bn)
    assert np.array_equal(run(x), REFERENCE.pointwise_conv2d_bn_eval(x, wt, bn))


def test_the_prepared_pointwise_names_what_it_expected():
    x, wt, bn = _case(1, 4, 6, 5, 5, np.float64)
    with pytest.raises(ValueError, match=r"w must have shape \(Co, 4, 1, 1\), got \(6, 4, 3, 3\)"):
        NUMBA.prepare_pointwise_conv2d_bn_eval(np.zeros((6, 4, 3, 3)), bn)
    with pytest.raises(ValueError, match=r"bn_eval mean must have shape \(6,\), got \(5,\)"):
        NUMBA.prepare_pointwise_conv2d_bn_eval(wt, (bn[0][:5], *bn[1:]))
    prepared = NUMBA.prepare_pointwise_conv2d_bn_eval(wt, bn)
    with pytest.raises(ValueError, match=r"w must have shape \(Co, 5, 1, 1\), got \(6, 4, 1, 1\)"):
        prepared(np.zeros((1, 5, 5, 5)))  # the kernel's own check
    with pytest.raises(TypeError, match="share one dtype"):
        prepared(x.astype(np.float32))
