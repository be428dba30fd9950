"""Elementwise, reduction, shape and layer ops against PyTorch in float64.

Every check draws its shapes with hypothesis and pulls a random upstream
gradient through both libraries.
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

TOL = 1e-12
SETTINGS = settings(max_examples=25, deadline=None)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def compare(op, fn_ours, fn_torch, arrays, seed=0, tol=TOL):
    """Run both, pull the same random upstream gradient, compare value and every input grad."""
    ours = [Tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, ty = fn_ours(*ours), fn_torch(*theirs)
    assert_close(f"{op} forward", y.data, ty.detach().numpy(), tol, uses_kernels=False)
    g = np.random.default_rng(seed).standard_normal(tuple(ty.shape))
    y.backward(g)
    tgrads = torch.autograd.grad(ty, theirs, torch.from_numpy(g), allow_unused=True)
    for i, (mine, ref) in enumerate(zip(ours, tgrads)):
        expected = np.zeros_like(arrays[i]) if ref is None else ref.numpy()
        assert_close(f"{op} grad", mine.grad, expected, tol, uses_kernels=False)


def broadcast_pair(draw):
    shape = draw(shapes)
    other = tuple(draw(st.sampled_from([s, 1])) for s in shape)
    other = other[draw(st.integers(0, len(other) - 1)):]
    return shape, other


@SETTINGS
@given(data=st.data(), op=st.sampled_from(["add", "sub", "mul", "div"]))
def test_binary_ops_with_broadcasting(data, op):
    a_shape, b_shape = broadcast_pair(data.draw)
    if data.draw(st.booleans()):
        a_shape, b_shape = b_shape, a_shape
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    a = rng.standard_normal(a_shape)
    b = rng.standard_normal(b_shape) + (3.0 if op == "div" else 0.0)
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
         "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    compare(op, f, f, [a, b])


@SETTINGS
@given(n=st.integers(1, 5), k=st.integers(1, 5), m=st.integers(1, 5),
       batch=st.sampled_from([(), (2,), (3, 1)]), seed=st.integers(0, 999))
def test_matmul(n, k, m, batch, seed):
    rng = np.random.default_rng(seed)
    compare("matmul", lambda a, b: a @ b, lambda a, b: a @ b,
            [rng.standard_normal(batch + (n, k)), rng.standard_normal((k, m))])


@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4))])
def test_matmul_vectors(sa, sb):
    rng = np.random.default_rng(0)
    compare("matmul", lambda a, b: a @ b, lambda a, b: a @ b,
            [rng.standard_normal(sa), rng.standard_normal(sb)])


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 999),
       op=st.sampled_from(["exp", "log", "neg", "relu", "pow", "clamp", "relu6", "sigmoid"]))
def test_unary_ops(shape, seed, op):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 4
    if op == "log":
        x = np.abs(x) + 0.1
    ours = {"exp": lambda t: t.exp(), "log": lambda t: t.log(), "neg": lambda t: -t,
            "relu": lambda t: t.relu(), "pow": lambda t: t ** 3,
            "clamp": lambda t: t.clamp(-1.0, 2.0), "relu6": F.relu6, "sigmoid": F.sigmoid}[op]
    theirs = {"exp": torch.exp, "log": torch.log, "neg": torch.neg, "relu": torch.relu,
              "pow": lambda t: t ** 3, "clamp": lambda t: t.clamp(-1.0, 2.0),
              "relu6": torch.nn.functional.relu6, "sigmoid": torch.sigmoid}[op]
    compare(op, ours, theirs, [x], seed)


def test_relu6_gradient_is_zero_exactly_at_0_and_6():
    x = np.array([-1.0, 0.0, 0.5, 6.0, 6.5, 3.0])
    compare("relu6", F.relu6, torch.nn.functional.relu6, [x])
    t = Tensor(x, requires_grad=True)
    F.relu6(t).backward(np.ones(6))
    np.testing.assert_array_equal(t.grad, [0, 0, 1, 0, 0, 1])


def test_sigmoid_saturates_without_overflow():
    x = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    compare("sigmoid", F.sigmoid, torch.sigmoid, [x])
    with np.errstate(over="raise"):
        y = F.sigmoid(Tensor(x)).data
    np.testing.assert_array_equal(y[[0, 2, 4]], [0.0, 0.5, 1.0])
    assert y.dtype == np.float64 and F.sigmoid(Tensor(x.astype(np.float32))).dtype == np.float32


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 999), keepdims=st.booleans(), data=st.data())
def test_sum_and_mean(shape, seed, keepdims, data):
    axes = data.draw(st.one_of(st.none(), st.sets(st.integers(0, len(shape) - 1), min_size=1)))
    axis = None if axes is None else tuple(sorted(axes))
    x = np.random.default_rng(seed).standard_normal(shape)
    tdim = tuple(range(len(shape))) if axis is None else axis
    compare("sum", lambda t: t.sum(axis, keepdims), lambda t: t.sum(tdim, keepdim=keepdims), [x])
    compare("mean", lambda t: t.mean(axis, keepdims),
            lambda t: t.mean(tdim, keepdim=keepdims), [x])


def test_shape_ops_and_indexing():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    compare("reshape", lambda t: t.reshape(6, 4), lambda t: t.reshape(6, 4), [x])
    compare("transpose", lambda t: t.transpose(2, 0, 1), lambda t: t.permute(2, 0, 1), [x])
    compare("flatten", lambda t: t.flatten(1), lambda t: t.flatten(1), [x])
    compare("getitem", lambda t: t[1, :, 1:3], lambda t: t[1, :, 1:3], [x])
    idx = np.array([0, 2, 2, 1])  # repeated index: gradients must add up
    compare("getitem", lambda t: t[:, idx], lambda t: t[:, torch.from_numpy(idx)], [x])



@SETTINGS
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4), axis=st.integers(0, 2),
       seed=st.integers(0, 999))
def test_cat(sizes, axis, seed):
    rng = np.random.default_rng(seed)
    arrays = []
    for s in sizes:
        shape = [2, 3, 2]
        shape[axis] = s
        arrays.append(rng.standard_normal(shape))
    compare("cat", lambda *t: F.cat(t, axis=axis), lambda *t: torch.cat(t, dim=axis), arrays, seed)


def test_cat_errors_are_named():
    with pytest.raises(ValueError, match="at least one Tensor"):
        F.cat([])
    with pytest.raises(ValueError, match=r"equal to \(2, 3\) except along axis 1, got \(3, 3\)"):
        F.cat([Tensor(np.zeros((2, 3))), Tensor(np.zeros((3, 3)))], axis=1)


@SETTINGS
@given(n=st.integers(1, 4), fin=st.integers(1, 6), fout=st.integers(1, 6),
       bias=st.booleans(), lead=st.sampled_from([(), (3,)]), seed=st.integers(0, 999))
def test_linear(n, fin, fout, bias, lead, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(lead + (n, fin)), rng.standard_normal((fout, fin))]
    if bias:
        arrays.append(rng.standard_normal(fout))
    compare("linear", F.linear, torch.nn.functional.linear, arrays)


@SETTINGS
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
       out=st.sampled_from([1, 2, 3, (2, 1)]), seed=st.integers(0, 999))
def test_adaptive_avg_pool2d(shape, out, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    compare("adaptive_avg_pool2d", lambda t: F.adaptive_avg_pool2d(t, out),
            lambda t: torch.nn.functional.adaptive_avg_pool2d(t, out), [x])


def test_dropout_is_inverted_and_its_gradient_uses_the_same_mask():
    x = np.random.default_rng(0).standard_normal((200, 50))
    t = Tensor(x, requires_grad=True)
    y = F.dropout(t, p=0.3, training=True, generator=np.random.default_rng(1))
    kept = y.data != 0
    assert abs(kept.mean() - 0.7) < 0.01  # 10,000 draws: 4 standard deviations is 0.018
    np.testing.assert_allclose(y.data[kept], x[kept] / 0.7, rtol=1e-15)
    g = np.random.default_rng(2).standard_normal(x.shape)
    y.backward(g)
    np.testing.assert_allclose(t.grad, g * kept / 0.7, rtol=1e-15)
    assert F.dropout(t, p=0.3, training=False) is t
    assert np.all(F.dropout(t, p=1.0).data == 0)


def test_dropout_is_reproducible_with_the_global_seed():
    x = Tensor(np.ones((10, 10), dtype=np.float32))
    tinymbv2.manual_seed(5)
    a = F.dropout(x, 0.5).data
    tinymbv2.manual_seed(5)
    b = F.dropout(x, 0.5).data
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32
