"""The engine's rules: reuse, deep graphs, freed graphs, no_grad, dtypes."""
from __future__ import annotations

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F


def test_a_tensor_used_twice_accumulates_both_paths():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * x + x * 3.0  # dy/dx = 2x + 3
    y.backward(np.ones(3))
    np.testing.assert_allclose(x.grad, [5.0, 7.0, 9.0])


def test_diamond_graph_and_grad_accumulates_across_backward_calls():
    x = Tensor(np.array(2.0), requires_grad=True)
    a, b = x * 3.0, x.exp()
    (a * b).backward()  # d/dx 3x e^x = 3 e^x (1 + x)
    np.testing.assert_allclose(x.grad, 3 * np.exp(2.0) * 3)
    (x * 4.0).backward()
    np.testing.assert_allclose(x.grad, 3 * np.exp(2.0) * 3 + 4.0)


def test_a_chain_of_100000_ops_does_not_hit_the_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1.0
    y.backward(np.array([2.0]))
    assert y.data[0] == 100_001.0
    assert x.grad[0] == 2.0


def test_second_backward_through_a_freed_graph_raises():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * 2 * x.data)


def test_saved_arrays_are_freed_after_backward():
    x = Tensor(np.ones((3, 3)), requires_grad=True)
    y = x * x
    node = y._node
    y.backward(np.ones((3, 3)))
    assert node.ctx.saved == () and node.ctx.freed


def test_no_grad_builds_no_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    with tinymbv2.no_grad():
        y = x * 2.0
        assert not tinymbv2.is_grad_enabled()
    assert tinymbv2.is_grad_enabled()
    assert y._node is None and not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward(np.ones(3))


def test_no_grad_restores_state_after_an_exception():
    with pytest.raises(KeyError):
        with tinymbv2.no_grad():
            raise KeyError
    assert tinymbv2.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = Tensor(np.ones(2), requires_grad=True)
    y = (x * 2.0).detach() * x
    y.backward(np.ones(2))
    np.testing.assert_allclose(x.grad, [2.0, 2.0])


def test_dtypes_float32_default_float64_kept_mixing_is_an_error():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(1.5).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64
    assert (Tensor(np.zeros(2, np.float32)) * 2.5).dtype == np.float32
    assert (Tensor(np.zeros(2)) * np.array([1, 2])).dtype == np.float64  # int array: cast
    with pytest.raises(TypeError, match="float32 and float64"):
        Tensor(np.zeros(2, np.float32)) + Tensor(np.zeros(2))
    with pytest.raises(TypeError, match="float32 and float64"):
        Tensor(np.zeros(2, np.float32)) * np.zeros(2)
    with pytest.raises(TypeError, match="floating"):
        Tensor(np.arange(3), requires_grad=True)


def test_backward_needs_a_grad_for_non_scalars_of_the_right_shape():
    y = Tensor(np.ones(3), requires_grad=True) * 2.0
    with pytest.raises(RuntimeError, match="single-element"):
        y.backward()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        y.backward(np.ones(4))


def test_gradients_are_reduced_to_each_input_shape():
    a = Tensor(np.ones((4, 3)), requires_grad=True)
    b = Tensor(np.ones((3,)), requires_grad=True)
    c = Tensor(np.ones((4, 1)), requires_grad=True)
    ((a + b) * c).backward(np.ones((4, 3)))
    assert a.grad.shape == (4, 3) and b.grad.shape == (3,) and c.grad.shape == (4, 1)
    np.testing.assert_allclose(b.grad, [4.0, 4.0, 4.0])
    np.testing.assert_allclose(c.grad, [[6.0]] * 4)


def test_numpy_array_on_the_left_uses_the_tensor_operator():
    x = Tensor(np.ones(2), requires_grad=True)
    y = np.array([2.0, 3.0]) * x
    assert isinstance(y, Tensor)
    y.backward(np.ones(2))
    np.testing.assert_allclose(x.grad, [2.0, 3.0])


def test_custom_function_with_save_for_backward():
    class Cube(tinymbv2.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * g

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    Cube.apply(x).backward(np.ones(2))
    np.testing.assert_allclose(x.grad, [3.0, 12.0])


def test_relu6_and_conv_compose_in_a_graph():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((1, 2, 5, 5)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    assert tinymbv2.gradcheck(lambda x, w: F.relu6(F.conv2d(x, w, padding=1) * 2.0), [x, w])


@pytest.mark.parametrize("other", [
    2.0,                                          # a number
    np.array([2.0, 2.0, 5.0], np.float32),        # an array
    Tensor(np.array([2.0, 2.0, 5.0], np.float32)),  # a tensor
])
def test_comparisons_give_boolean_arrays_like_numpy(other):
    """==, !=, <, <=, >, >= compare the data (no gradient) against numbers, arrays, tensors."""
    x = Tensor(np.array([1.0, 2.0, 3.0], np.float32), requires_grad=True)
    a = np.array([1.0, 2.0, 3.0], np.float32)
    b = other.data if isinstance(other, Tensor) else other
    for got, want in [(x == other, a == b), (x != other, a != b), (x < other, a < b),
                      (x <= other, a <= b), (x > other, a > b), (x >= other, a >= b)]:
        assert isinstance(got, np.ndarray) and got.dtype == np.bool_
        np.testing.assert_array_equal(got, want)
    assert (x == 2.0).tolist() == [False, True, False]
    assert (x > 1.5).tolist() == [False, True, True]
    assert (x <= Tensor([1.0, 1.0, 3.0])).tolist() == [True, False, True]


def test_tensors_stay_hashable_and_reflected_comparisons_work():
    x = Tensor([1.0, 2.0])
    assert {x: 1}[x] == 1 and len({x, Tensor([1.0, 2.0])}) == 2  # identity, as torch
    np.testing.assert_array_equal(2.0 > x, [True, False])  # number on the left: reflected
    np.testing.assert_array_equal(np.array([1.0, 3.0], np.float32) == x, [True, False])


def test_tensor_methods_are_installed_from_functional():
    """The operators come from tinymbv2.functional.tensor_methods, installed at start-up."""
    from tinymbv2.functional.tensor_methods import TENSOR_METHODS

    for name, method in TENSOR_METHODS.items():
        assert Tensor.__dict__[name] is method, name
    x = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    y = ((x * 2 - 1) / 2 + x @ x.T).sum() + (-x).mean() + (x ** 2)[0, 1]
    y.backward()
    # d/dx: 1 from (2x - 1)/2, 2 * column sums from sum(x x^T), -1/4 from the mean, 2 x01 at (0, 1)
    want = 1 + 2 * x.data.sum(axis=0) - 0.25 + np.array([[0.0, 2 * 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(x.grad, want, rtol=1e-12)
