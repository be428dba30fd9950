"""F.conv2d with dilation (atrous convolution) against PyTorch in float64, in both CPU sets.

Dense, depthwise and grouped convolutions, strides 1/2, paddings, dilations 1/2/3/6, a
random upstream gradient; the argument checks; 1x1 convolutions stay pointwise; and the
fused convolution + BatchNorm for inference honours the dilation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from errors import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.functional import conv as conv_module

TOL = 1e-10


@st.composite
def cases(draw):
    """(x, w, stride, padding, dilation, groups) of a dense, depthwise or grouped convolution."""
    kind = draw(st.sampled_from(["dense", "depthwise", "grouped"]))
    groups = {"dense": 1, "depthwise": draw(st.integers(1, 4)), "grouped": 2}[kind]
    ci = groups * (1 if kind == "depthwise" else draw(st.integers(1, 3)))
    co = ci if kind == "depthwise" else groups * draw(st.integers(1, 3))
    k = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    d = draw(st.sampled_from([1, 2, 3, 6])), draw(st.sampled_from([1, 2, 3, 6]))
    s = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    p = draw(st.sampled_from([0, 1, d[0]])), draw(st.sampled_from([0, 1, d[1]]))
    h0 = [max(1, d[a] * (k[a] - 1) + 1 - 2 * p[a]) for a in (0, 1)]
    h, w = draw(st.integers(h0[0], h0[0] + 8)), draw(st.integers(h0[1], h0[1] + 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((draw(st.integers(1, 2)), ci, h, w))
    weight = rng.standard_normal((co, ci // groups) + k)
    return x, weight, s, p, d, groups


@pytest.mark.parametrize("kset", ["reference", "numba"])
@settings(max_examples=40, deadline=None)
@given(case=cases(), bias=st.booleans())
def test_dilated_conv2d_matches_torch(kset, case, bias):
    with tinymbv2.use_kernels(kset):
        compare_with_torch(case, bias)


def compare_with_torch(case, bias):
    x, w, s, p, d, groups = case
    b = np.random.default_rng(0).standard_normal(w.shape[0]) if bias else None
    arrays = [x, w] + ([b] if bias else [])
    ours = [Tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = F.conv2d(ours[0], ours[1], ours[2] if bias else None, s, p, d, groups)
    ty = torch.nn.functional.conv2d(theirs[0], theirs[1], theirs[2] if bias else None, s, p, d,
                                    groups)
    assert_close("conv2d dilated forward", y.data, ty.detach().numpy(), TOL)
    g = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    y.backward(g)
    for mine, ref in zip(ours, torch.autograd.grad(ty, theirs, torch.from_numpy(g))):
        assert_close("conv2d dilated grad", mine.grad, ref.numpy(), TOL)


def test_dilation_changes_the_answer(kernel_set):
    """The same weights at dilation 1 and 2 (padding = dilation, same shape) differ."""
    rng = np.random.default_rng(2)
    x, w = Tensor(rng.standard_normal((1, 3, 9, 9))), Tensor(rng.standard_normal((3, 1, 3, 3)))
    y1 = F.conv2d(x, w, padding=1, groups=3)
    y2 = F.conv2d(x, w, padding=2, dilation=2, groups=3)
    assert y1.shape == y2.shape and not np.allclose(y1.data, y2.data)


def test_one_by_one_ignores_dilation(monkeypatch):
    """A 1x1 kernel has no gap to widen: it stays on the pointwise path, with torch's answer."""
    applied = []
    monkeypatch.setattr(conv_module.PointwiseConv2d, "apply",
                        classmethod(lambda cls, x, w: applied.append(1) or Tensor(
                            np.einsum("oc,nchw->nohw", w.data[:, :, 0, 0], x.data))))
    x = np.random.default_rng(3).standard_normal((2, 4, 5, 5))
    w = np.random.default_rng(4).standard_normal((6, 4, 1, 1))
    y = F.conv2d(Tensor(x), Tensor(w), dilation=(3, 2))
    ty = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), dilation=(3, 2))
    assert applied == [1]
    np.testing.assert_allclose(y.data, ty.numpy(), rtol=1e-12)


@pytest.mark.parametrize("dilation, error, message", [
    (0, ValueError, r"conv2d: expected dilation >= 1, got \(0, 0\)"),
    ((2, -1), ValueError, r"conv2d: expected dilation >= 1, got \(2, -1\)"),
    ("two", TypeError, "conv2d: expected dilation as an int or a pair of ints, got 'two'"),
    (3, ValueError, r"conv2d: kernel 3x3, spread over 7x7 by dilation \(3, 3\), is larger than "
                    r"the padded input 6x6 \(input 6x6, padding \(0, 0\)\)"),
])
def test_bad_dilation_is_named(dilation, error, message):
    x, w = Tensor(np.zeros((1, 2, 6, 6))), Tensor(np.zeros((2, 2, 3, 3)))
    with pytest.raises(error, match=message):
        F.conv2d(x, w, dilation=dilation)


def test_conv2d_batch_norm_eval_honours_dilation(kernel_set):
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((2, 4, 10, 10)))
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    gamma, beta = Tensor(rng.standard_normal(4)), Tensor(rng.standard_normal(4) + 2)
    for w, groups in ((rng.standard_normal((4, 4, 3, 3)), 1), (rng.standard_normal((4, 1, 3, 3)), 4),
                      (rng.standard_normal((4, 2, 3, 3)), 2)):
        with tinymbv2.no_grad():
            fused = F.conv2d_batch_norm_eval(x, Tensor(w), 1, 3, groups, mean, var, gamma, beta,
                                             relu6=True, dilation=3)
        separate = F.relu6(F.batch_norm(F.conv2d(x, Tensor(w), None, 1, 3, 3, groups), mean, var,
                                        gamma, beta, training=False))
        assert fused.shape == (2, 4, 10, 10)
        np.testing.assert_allclose(fused.data, separate.data, rtol=1e-12, atol=1e-12)
