"""Checks for the exercises of chapter 1. Autograd from scratch.

* ``check_backward_order``: the order in which a reverse-mode engine visits a graph's nodes;
* ``check_sin_function``: the backward of an elementwise op, as a library ``Function``;
* ``check_matmul_backward``: the two gradients of a matrix product;
* ``check_central_difference``: a numerical gradient by central differences.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from .checking import Hint, exercise, expect_close

__all__ = ["check_backward_order", "check_sin_function", "check_matmul_backward",
           "check_central_difference"]


class _Node:
    """A scalar node as the chapter's ``Value`` has it: its inputs in ``_prev``, and a name."""

    def __init__(self, name, *prev):
        self.name, self._prev = name, tuple(prev)

    def __repr__(self):
        return self.name


def _graphs():
    """(description, root, every node) of the hidden graphs."""
    single = _Node("x")
    x1, x2, w1, w2, b = (_Node(n) for n in ("x1", "x2", "w1", "w2", "b"))
    m1, m2 = _Node("w1*x1", w1, x1), _Node("w2*x2", w2, x2)
    s = _Node("w1*x1+w2*x2", m1, m2)
    z = _Node("z=...+b", s, b)
    t = _Node("tanh(z)", z)
    neuron = _Node("L=tanh(z)*x1", t, x1)  # x1 is used twice
    a = _Node("a")
    square = _Node("a*a", a, a)  # one node, both inputs
    diamond_top = _Node("a*a+a", square, a)
    chain = [_Node("c0")]
    for i in range(1, 5000):
        chain.append(_Node(f"c{i}", chain[-1]))
    return [("a single node", single, [single]),
            ("the neuron L = tanh(w1*x1 + w2*x2 + b) * x1", neuron, [neuron, t, z, s, m1, m2, w1, x1, w2, x2, b]),
            ("L = a*a + a (a used three times)", diamond_top, [diamond_top, square, a]),
            ("a chain of 5,000 nodes", chain[-1], chain)]


@exercise
def check_backward_order(backward_order) -> int:
    """``backward_order(root)`` must list every node reachable from ``root`` through ``_prev``
    exactly once, the root first, and every node after all the nodes that use it.

    Cases: one node; the chapter's neuron (x1 used by two nodes); ``a*a + a``; a chain of
    5,000 nodes (a recursive walk exceeds Python's recursion limit).

    Args:
        backward_order: your function, ``backward_order(root)`` -> a list of nodes.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    graphs = _graphs()
    for what, root, nodes in graphs:
        try:
            order = list(backward_order(root))
        except RecursionError:
            raise Hint(f"{what}: RecursionError; walk the graph with an explicit stack "
                       "(a list you push to and pop from) instead of recursion") from None
        names = [getattr(n, "name", repr(n)) for n in order]
        seen: set[int] = set()
        for node, name in zip(order, names):
            if id(node) in seen:
                raise Hint(f"{what}: node {name} appears more than once; remember the nodes "
                           "already visited (a set of ids)")
            seen.add(id(node))
        missing = [n.name for n in nodes if all(m is not n for m in order)]
        if missing:
            raise Hint(f"{what}: node {missing[0]} is missing ({len(missing)} of {len(nodes)} nodes)")
        extra = [names[i] for i, n in enumerate(order) if all(m is not n for m in nodes)]
        if extra:
            raise Hint(f"{what}: {extra[0]!r} is not a node of this graph")
        if order[0] is not root:
            raise Hint(f"{what}: the first node must be the root {root.name} (you start with "
                       f"{names[0]}); backward starts at the output")
        position = {id(n): i for i, n in enumerate(order)}
        for user in nodes:
            for inp in user._prev:
                if position[id(inp)] < position[id(user)]:
                    raise Hint(f"{what}: {inp.name} comes before {user.name}, which uses it; its "
                               "gradient is not complete until every user has been visited")
    return len(graphs)


@exercise
def check_sin_function(Sin) -> int:  # noqa: N803 - the learner's class
    """``Sin.apply(x)`` must give sin(x), and its backward ``g * cos(x)``: checked on random
    float64 tensors of three shapes, each with a random upstream gradient ``g`` (with
    ``g`` all ones, forgetting to multiply by it would go unnoticed).

    Args:
        Sin: your ``Function`` subclass; its ``apply`` is called on Tensors.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(11)
    shapes = [(5,), (3, 4), (2, 3, 2)]
    for shape in shapes:
        x = Tensor(rng.uniform(-3, 3, shape), requires_grad=True)
        g = rng.standard_normal(shape)
        y = Sin.apply(x)
        what = f"Sin on shape {shape}"
        expect_close(y, np.sin(x.data), f"{what}, forward")
        y.backward(g)
        if x.grad is None:
            raise Hint(f"{what}: x.grad is None after backward; backward must return the gradient for x")
        got = np.asarray(x.grad)
        if got.shape == x.shape and np.allclose(got, np.cos(x.data)):
            raise Hint(f"{what}: your backward returns cos(x), the local derivative; multiply it "
                       "by the upstream gradient g (the chain rule)")
        if got.shape == x.shape and np.allclose(got, -g * np.cos(x.data)):
            raise Hint(f"{what}: your backward has the wrong sign: d sin(x)/dx = +cos(x)")
        expect_close(got, g * np.cos(x.data), f"{what}, dL/dx")
    return len(shapes)


@exercise
def check_matmul_backward(matmul_backward) -> int:
    """``matmul_backward(X, W, G)`` for ``Y = X @ W`` with ``G = dL/dY`` must return
    ``(dL/dX, dL/dW) = (G W^T, X^T G)``; checked against the library's autograd on random
    shapes, a square case (where a missing transpose keeps the shape) and one row.

    Args:
        matmul_backward: your function, ``matmul_backward(X, W, G)`` -> ``(dX, dW)``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(12)
    shapes = [(6, 6, 6), (4, 3, 5), (1, 7, 2), (8, 2, 3)]  # (n, k, m): X (n, k), W (k, m)
    for n, k, m in shapes:
        x, w = Tensor(rng.standard_normal((n, k)), requires_grad=True), Tensor(rng.standard_normal((k, m)), requires_grad=True)
        g = rng.standard_normal((n, m))
        (x @ w).backward(g)
        result = matmul_backward(x.data.copy(), w.data.copy(), g.copy())
        if not isinstance(result, tuple) or len(result) != 2:
            raise Hint(f"X {x.shape} @ W {w.shape}: return a pair (dL/dX, dL/dW)")
        gx, gw = (np.asarray(r, dtype=np.float64) for r in result)
        what = f"X {x.shape} @ W {w.shape}"
        if gx.shape != x.shape:
            raise Hint(f"{what}: dL/dX has shape {gx.shape}, expected X's shape {x.shape}: "
                       "a gradient has the shape of what it is the gradient of")
        if gw.shape != w.shape:
            raise Hint(f"{what}: dL/dW has shape {gw.shape}, expected W's shape {w.shape}")
        square = k == m  # only then does a missing transpose keep the right shape
        if square and not np.allclose(gx, x.grad) and np.allclose(gx, g @ w.data):
            raise Hint(f"{what}: dL/dX is G W (no transpose); the chain rule gives G W^T")
        if square and not np.allclose(gw, w.grad) and np.allclose(gw, g.T @ x.data):
            raise Hint(f"{what}: your dL/dW is G^T X, the transpose of X^T G")
        expect_close(gx, x.grad, f"{what}: dL/dX")
        expect_close(gw, w.grad, f"{what}: dL/dW")
    return len(shapes)


def _cubes(x):
    return float((x ** 3).sum())


def _tanh_times_x(x):
    return float((np.tanh(x) * x).sum())


def _weighted_exp(x):
    return float((np.exp(0.5 * x) * np.arange(1, x.size + 1).reshape(x.shape)).sum())


@exercise
def check_central_difference(central_difference) -> int:
    """``central_difference(f, x, h)`` must return the array of
    ``(f(x + h e_j) - f(x - h e_j)) / 2h`` for every element ``j`` of ``x`` (its shape), and
    leave ``x`` as it was. Checked with h = 1e-4 on three functions and shapes (1-D, 2-D and a
    single element) against their exact gradients: a one-sided difference is off by about
    h, far more than the central one's h^2, and is named in the hint.

    Args:
        central_difference: your function, ``central_difference(f, x, h)`` -> an array shaped like ``x``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(13)
    h = 1e-4
    cases = [("sum(x^3)", _cubes, lambda x: 3 * x ** 2, rng.uniform(-2, 2, 5)),
             ("sum(tanh(x) * x)", _tanh_times_x, lambda x: (1 - np.tanh(x) ** 2) * x + np.tanh(x),
              rng.uniform(-2, 2, (3, 4))),
             ("sum(exp(x/2) * weights)", _weighted_exp,
              lambda x: 0.5 * np.exp(0.5 * x) * np.arange(1, x.size + 1).reshape(x.shape), np.array([0.7]))]
    for name, f, exact, x in cases:
        what = f"f = {name} at x of shape {x.shape}"
        before = x.copy()
        got = central_difference(f, x, h)
        if not np.array_equal(x, before):
            raise Hint(f"{what}: x was changed by your function; put each x[j] back after "
                       "the two evaluations (or work on a copy)")
        got = np.asarray(got, dtype=np.float64)
        if got.shape != x.shape:
            raise Hint(f"{what}: the gradient has shape {got.shape}, expected x's shape {x.shape}")
        one_sided = np.array([(f(x + h * e) - f(x)) / h for e in np.eye(x.size).reshape(-1, *x.shape)])
        if np.allclose(got, one_sided.reshape(x.shape), rtol=1e-9, atol=1e-12):
            raise Hint(f"{what}: that is the one-sided difference (f(x+h) - f(x))/h, error ~h; "
                       "use (f(x+h) - f(x-h)) / 2h, error ~h^2")
        if np.allclose(got, 2 * exact(x), rtol=1e-6):
            raise Hint(f"{what}: your values are twice the gradient; divide by 2h, the distance "
                       "between x - h and x + h")
        expect_close(got, exact(x), what, rtol=1e-6, atol=1e-7)
    return len(cases)
