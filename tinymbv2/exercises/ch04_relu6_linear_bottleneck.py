"""Checks for the exercises of chapter 4. ReLU6 and the linear bottleneck.

* ``check_relu6_backward``: ReLU6's gradient, kinks included;
* ``check_bn_relu6_backward``: the backward of BatchNorm then ReLU6, the mask recomputed
  from x;
* ``check_lost_rank_fraction``: how many points a ReLU after an embedding squashes,
  measured by the rank of the local linear map.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..functional import batch_norm_relu6, relu6
from ..kernels import kernel_set
from .checking import Hint, exercise, expect_close

__all__ = ["check_relu6_backward", "check_bn_relu6_backward", "check_lost_rank_fraction"]


@exercise
def check_relu6_backward(relu6_backward) -> int:
    """``relu6_backward(x, g)`` must return dL/dx = g where 0 < x < 6 and 0 elsewhere, the
    kinks x = 0 and x = 6 included (PyTorch's choice). Checked against the library's autograd
    with a random g: first on values away from the kinks (some above 6), then on the kinks.

    Args:
        relu6_backward: your function, ``relu6_backward(x, g)`` -> ``dx``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(41)
    away = rng.uniform(-3, 9, (4, 5))
    away[np.isclose(away % 6, 0, atol=1e-3)] = 1.0
    kinks = np.array([-1.0, 0.0, 0.5, 3.0, 6.0, 7.5, 0.0, 6.0])
    cases = [("x away from the kinks", away), ("x with the kinks 0 and 6", kinks)]
    for what, x in cases:
        g = rng.standard_normal(x.shape)
        tx = Tensor(x.copy(), requires_grad=True)
        relu6(tx).backward(g)
        got = np.asarray(relu6_backward(x.copy(), g.copy()), dtype=np.float64)
        if got.shape == x.shape and not np.allclose(got, tx.grad):
            if np.allclose(got, (x > 0) & (x < 6)) or np.allclose(got, (x >= 0) & (x <= 6)):
                raise Hint(f"{what}: you return the mask; multiply it by the upstream gradient g")
            if np.allclose(got, g * (x > 0)):
                raise Hint(f"{what}: that is ReLU's gradient; above 6 ReLU6 is constant, so its "
                           "gradient is 0 there too")
            for kink in (0.0, 6.0):
                at = np.flatnonzero(x.reshape(-1) == kink)
                if at.size and not np.isclose(got.reshape(-1)[at[0]], 0.0):
                    raise Hint(f"{what}: at x = {kink:g} exactly (a kink) the gradient is 0 in PyTorch "
                               "and tinymbv2: use strict inequalities, 0 < x < 6")
        expect_close(got, tx.grad, what)
    return len(cases)


@exercise
def check_bn_relu6_backward(bn_relu6_backward) -> int:
    """``bn_relu6_backward(g, x, gamma, beta, eps)`` must return ``(dx, dgamma, dbeta)`` for
    y = ReLU6(z), z = BatchNorm(x) in training mode, with z recomputed from x. Checked against
    the library's fused op on three inputs whose z crosses both 0 and 6; a mask taken from x
    instead of z, a mask applied after the BatchNorm backward, or none, is named.

    Args:
        bn_relu6_backward: your function, ``bn_relu6_backward(g, x, gamma, beta, eps)`` -> ``(dx, dgamma, dbeta)``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(42)
    reference = kernel_set("reference")
    eps = 1e-5
    cases = [(4, 3, 3, 3), (2, 4, 5, 2), (8, 2, 1, 1)]
    for shape in cases:
        x = rng.standard_normal(shape) * 2
        gamma, beta = rng.uniform(2, 5, shape[1]), rng.uniform(1, 4, shape[1])
        g = rng.standard_normal(shape)
        tx, tg, tb = (Tensor(a.copy(), requires_grad=True) for a in (x, gamma, beta))
        batch_norm_relu6(tx, None, None, tg, tb, training=True, eps=eps).backward(g)
        what = f"x {shape}"
        result = bn_relu6_backward(g.copy(), x.copy(), gamma.copy(), beta.copy(), eps)
        if not isinstance(result, tuple) or len(result) != 3:
            raise Hint(f"{what}: return three arrays, (dx, dgamma, dbeta)")
        dx, dgamma, dbeta = (np.asarray(r, dtype=np.float64) for r in result)
        if dx.shape == x.shape and not np.allclose(dx, tx.grad):
            _, mean, invstd = reference.batch_norm_forward_train(x, gamma, beta, eps)
            z = reference.batch_norm_forward_train(x, gamma, beta, eps)[0]
            bn_backward = lambda gz: reference.batch_norm_backward_train(gz, x, mean, invstd, gamma)[0]  # noqa: E731
            slips = {
                "the mask comes from z = gamma * xhat + beta, the input of ReLU6, not from x":
                    bn_backward(g * ((x > 0) & (x < 6))),
                "mask g first: ReLU6 comes after BatchNorm, so backward meets its mask first, "
                "and the BatchNorm backward takes the masked gradient": bn_backward(g) * ((z > 0) & (z < 6)),
                "ReLU6 passes the gradient only where 0 < z < 6; multiply g by that mask": bn_backward(g),
            }
            for hint, slip in slips.items():
                if np.allclose(dx, slip):
                    raise Hint(f"{what}: {hint}")
        expect_close(dx, tx.grad, f"{what}: dx")
        expect_close(dgamma, tg.grad, f"{what}: dgamma (sum of the masked g times xhat)")
        expect_close(dbeta, tb.grad, f"{what}: dbeta (sum of the masked g)")
    return len(cases)


def _lost_rank_fraction(T, points) -> float:
    ranks = [np.linalg.matrix_rank(T[active]) if active.any() else 0 for active in (T @ points > 0).T]
    return float(np.mean(np.array(ranks) < points.shape[0]))


@exercise
def check_lost_rank_fraction(lost_rank_fraction) -> int:
    """``lost_rank_fraction(T, points)`` for T (n, d) and points (d, P) must return the
    fraction of points x at which x -> ReLU(T x) loses rank: the rows of T that are active
    there (T x > 0) have rank below d. Checked on a random T, on a T with two parallel rows
    (two active units, yet rank 1) and on 3-D points; counting active units instead of the
    rank, or assuming d = 2, is named.

    Args:
        lost_rank_fraction: your function, ``lost_rank_fraction(T, points)`` -> a float.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(43)
    parallel = rng.standard_normal((4, 2))
    parallel[1] = 2.5 * parallel[0]
    parallel[3] = 0.5 * parallel[2]
    cases = [("a random T (5, 2)", rng.standard_normal((5, 2)), rng.standard_normal((2, 300))),
             ("a T (4, 2) whose rows 0 and 1, and 2 and 3, are parallel", parallel, rng.standard_normal((2, 300))),
             ("3-D points and a random T (6, 3)", rng.standard_normal((6, 3)), rng.standard_normal((3, 300)))]
    for what, T, points in cases:
        expected = _lost_rank_fraction(T, points)
        got = lost_rank_fraction(T.copy(), points.copy())
        if np.ndim(got) != 0:
            raise Hint(f"{what}: return one number (a fraction), got shape {np.shape(got)}")
        got = float(got)
        active_units = (T @ points > 0).sum(axis=0)
        if not np.isclose(got, expected):
            if np.isclose(got, np.mean(active_units < points.shape[0])):
                raise Hint(f"{what}: you counted active units; two parallel rows are two active "
                           "units of rank 1: use the rank of the active rows (np.linalg.matrix_rank)")
            if points.shape[0] != 2 and np.isclose(got, np.mean(active_units < 2)):
                raise Hint(f"{what}: the points are {points.shape[0]}-D: a point keeps its "
                           "dimensions when the active rows have rank d = points.shape[0], not 2")
        expect_close(got, expected, f"{what}: the fraction", rtol=0, atol=1e-12)
    return len(cases)
