"""The numba set's size-dependent paths, each forced or reached on purpose, and empty batches.

The numba kernels choose their algorithm by size (``numba_bn.FLAT_MAX``,
``SMALL_PLANE``, ``numba_pointwise.SUM_GATHERED_BELOW``); the hypothesis draws in
``test_kernels.py`` are small, so they would reach only one of the paths. Here every
path is checked against PyTorch in float64, and every conv kernel of both sets on a
batch of zero images.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given

from kernel_cases import EPS
from test_kernels import FEW, KSETS, TOL64, assert_close, bn_cases, t, torch_conv
from tinymbv2.kernels import numba_cpu


@pytest.mark.parametrize("n,ci,co", [(5, 7, 9), (64, 3, 2)])
def test_numba_pointwise_weight_gradient_of_1x1_planes_matches_torch(n, ci, co):
    """1x1 planes take one GEMM over all images (numba_pointwise.SUM_GATHERED_BELOW)."""
    rng = np.random.default_rng(n)
    x, wt = rng.standard_normal((n, ci, 1, 1)), rng.standard_normal((co, ci, 1, 1))
    y, gy, gx, gw = torch_conv(x, wt, 1, 0, 1, rng)
    assert_close(numba_cpu.pointwise_conv2d_backward_weight(gy, x), gw, TOL64, "backward_weight")


@pytest.mark.parametrize("path", ["flat", "small", "channels"])
@pytest.mark.parametrize("relu6", [False, True])
@FEW
@given(case=bn_cases())
def test_numba_batch_norm_train_paths_match_torch(path, relu6, case):
    """Each of the numba set's three BatchNorm training paths, forced whatever the size:
    contiguous rows (numba_bn_flat, small tensors), channel-vectorised (small planes),
    per channel (the rest)."""
    from tinymbv2.kernels import numba_bn

    x, weight, bias, rng = case
    bias = bias + 2  # so that the fused ReLU6 passes some values and clamps others
    xt, wt, bt = t(x, True), t(weight, True), t(bias, True)
    y = F.batch_norm(xt, None, None, wt, bt, training=True, eps=EPS)
    y = F.relu6(y) if relu6 else y
    gy = rng.standard_normal(x.shape)
    gx, gw, gb = torch.autograd.grad(y, (xt, wt, bt), t(gy))
    saved = numba_bn.FLAT_MAX, numba_bn.SMALL_PLANE, numba_bn.SMALL_PLANE_FORWARD
    try:
        numba_bn.FLAT_MAX = 10**9 if path == "flat" else 0
        small = 10**9 if path == "small" else 0
        numba_bn.SMALL_PLANE = numba_bn.SMALL_PLANE_FORWARD = small
        out, mean, invstd = numba_cpu.batch_norm_forward_train(x, weight, bias, EPS, relu6)
        grads = numba_cpu.batch_norm_backward_train(gy, x, mean, invstd, weight, bias, relu6)
    finally:
        numba_bn.FLAT_MAX, numba_bn.SMALL_PLANE, numba_bn.SMALL_PLANE_FORWARD = saved
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
