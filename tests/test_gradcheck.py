"""tinymbv2.gradcheck: central differences without PyTorch, and proof it catches bugs."""
from __future__ import annotations

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F


def t64(shape, seed=0, positive=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    return Tensor(np.abs(a) + 0.5 if positive else a, requires_grad=True)


@pytest.mark.parametrize(
    "name,fn,inputs",
    [
        ("matmul", lambda a, b: a @ b, [t64((3, 4)), t64((4, 2), 1)]),
        ("div", lambda a, b: a / b, [t64((3,)), t64((3,), 1, positive=True)]),
        ("log-exp", lambda a: (a.exp() + 1.0).log(), [t64((2, 3))]),
        ("linear", F.linear, [t64((2, 3)), t64((4, 3), 1), t64((4,), 2)]),
        ("pool", lambda x: F.adaptive_avg_pool2d(x, 2), [t64((1, 2, 5, 5))]),
    ],
)
def test_gradcheck_passes_on_correct_ops(name, fn, inputs):
    assert tinymbv2.gradcheck(fn, inputs)


def test_gradcheck_passes_on_conv_and_batch_norm(kernel_set):
    x, w = t64((2, 3, 6, 6)), t64((4, 3, 3, 3), 1)
    assert tinymbv2.gradcheck(lambda x, w: F.conv2d(x, w, stride=2, padding=1), [x, w])
    dw = t64((3, 1, 3, 3), 2)
    assert tinymbv2.gradcheck(lambda x, w: F.conv2d(x, w, padding=1, groups=3), [x, dw])
    gamma, beta = t64((3,), 3), t64((3,), 4)
    assert tinymbv2.gradcheck(
        lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True), [x, gamma, beta]
    )


class WrongSquare(tinymbv2.Function):
    """x^2 with a planted bug: the backward forgets the factor 2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x


def test_gradcheck_catches_a_planted_wrong_backward():
    with pytest.raises(tinymbv2.GradcheckError, match="input 0.*analytic"):
        tinymbv2.gradcheck(WrongSquare.apply, [t64((3, 2))])
    assert tinymbv2.gradcheck(WrongSquare.apply, [t64((3, 2))], raise_exception=False) is False


def test_gradcheck_catches_a_batch_norm_backward_missing_the_mean_terms():
    """The classic BN bug (dropping -mean(g) - xhat*mean(g*xhat)) passes a .sum() check."""

    class NaiveBN(tinymbv2.Function):
        @staticmethod
        def forward(ctx, x):
            mu, var = x.mean(axis=0), x.var(axis=0)
            ctx.save_for_backward(1 / np.sqrt(var + 1e-5))
            return (x - mu) / np.sqrt(var + 1e-5)

        @staticmethod
        def backward(ctx, g):
            (invstd,) = ctx.saved_tensors
            return g * invstd

    with pytest.raises(tinymbv2.GradcheckError):
        tinymbv2.gradcheck(NaiveBN.apply, [t64((6, 3))])


def test_gradcheck_rejects_float32_and_inputs_without_grad():
    with pytest.raises(TypeError, match="float64"):
        tinymbv2.gradcheck(lambda x: x * x, [Tensor(np.ones(2, np.float32), requires_grad=True)])
    with pytest.raises(ValueError, match="requires_grad"):
        tinymbv2.gradcheck(lambda x: x * x, [Tensor(np.ones(2))])
