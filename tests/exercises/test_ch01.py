"""Chapter 1's checks answer common wrong answers with the hint meant for them."""
import numpy as np

import tinymbv2
from tinymbv2.exercises import (check_backward_order, check_central_difference, check_matmul_backward,
                                check_sin_function)


def depth_first(root):
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._prev)
    return order[::-1]


def test_backward_order_hints():
    assert check_backward_order(depth_first).message == "correct (4 cases)"

    def recursive(root):
        order, seen = [], set()

        def visit(node):
            if id(node) not in seen:
                seen.add(id(node))
                for p in node._prev:
                    visit(p)
                order.append(node)
        visit(root)
        return order[::-1]

    assert "a chain of 5,000 nodes: RecursionError; walk the graph with an explicit stack" in \
        check_backward_order(recursive).message

    def breadth_first(root):  # visits x1 right after L, before the tanh that also uses it
        order, queue, seen = [], [root], {id(root)}
        while queue:
            node = queue.pop(0)
            order.append(node)
            for p in node._prev:
                if id(p) not in seen:
                    seen.add(id(p))
                    queue.append(p)
        return order

    assert "x1 comes before w1*x1, which uses it" in check_backward_order(breadth_first).message

    def no_seen_set(root):
        order, queue = [], [root]
        while queue:
            node = queue.pop(0)
            order.append(node)
            queue.extend(node._prev)
        return order

    assert "node x1 appears more than once" in check_backward_order(no_seen_set).message
    leaves_first = check_backward_order(lambda root: depth_first(root)[::-1])
    assert "the first node must be the root L=tanh(z)*x1 (you start with x1)" in leaves_first.message


def sin_class(backward):
    class Sin(tinymbv2.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return np.sin(x)

    Sin.backward = staticmethod(backward)
    return Sin


def test_sin_function_hints():
    right = sin_class(lambda ctx, g: g * np.cos(ctx.saved_tensors[0]))
    assert check_sin_function(right).message == "correct (3 cases)"
    local_only = check_sin_function(sin_class(lambda ctx, g: np.cos(ctx.saved_tensors[0])))
    assert "returns cos(x), the local derivative; multiply it by the upstream gradient g" in local_only.message
    sign = check_sin_function(sin_class(lambda ctx, g: -g * np.cos(ctx.saved_tensors[0])))
    assert "the wrong sign" in sign.message
    other = check_sin_function(sin_class(lambda ctx, g: g * np.sin(ctx.saved_tensors[0])))
    assert other.message.startswith("not yet: Sin on shape (5,), dL/dx at index (0,)")


def test_matmul_backward_hints():
    assert check_matmul_backward(lambda X, W, G: (G @ W.T, X.T @ G)).message == "correct (4 cases)"
    no_transpose = check_matmul_backward(lambda X, W, G: (G @ W, X.T @ G))
    assert "dL/dX is G W (no transpose); the chain rule gives G W^T" in no_transpose.message
    transposed = check_matmul_backward(lambda X, W, G: (G @ W.T, G.T @ X))
    assert "your dL/dW is G^T X, the transpose of X^T G" in transposed.message
    wrong_shape = check_matmul_backward(lambda X, W, G: (W @ G.T, X.T @ G))
    assert "dL/dX has shape (6, 6)" not in wrong_shape.message  # square: shapes agree, values not
    assert "X (6, 6) @ W (6, 6): dL/dX" in wrong_shape.message
    averaged = check_matmul_backward(lambda X, W, G: (G @ W.T, X.T @ G / len(X)))
    assert "dL/dW at index (0, 0)" in averaged.message


def central(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for j in np.ndindex(x.shape):
        old = x[j]
        x[j] = old + h
        up = f(x)
        x[j] = old - h
        down = f(x)
        x[j] = old
        grad[j] = (up - down) / (2 * h)
    return grad


def test_central_difference_hints():
    assert check_central_difference(central).message == "correct (3 cases)"

    def one_sided(f, x, h=1e-5):
        grad, f0 = np.zeros_like(x), f(x)
        for j in np.ndindex(x.shape):
            old = x[j]
            x[j] = old + h
            grad[j] = (f(x) - f0) / h
            x[j] = old
        return grad

    assert "that is the one-sided difference" in check_central_difference(one_sided).message

    def not_restored(f, x, h=1e-5):
        grad = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            old = x[j]
            x[j] = old + h
            up = f(x)
            x[j] = old - h
            grad[j] = (up - f(x)) / (2 * h)
        return grad

    assert "x was changed by your function" in check_central_difference(not_restored).message
    twice = check_central_difference(lambda f, x, h=1e-5: 2 * central(f, x, h))
    assert "twice the gradient; divide by 2h" in twice.message
    flat = check_central_difference(lambda f, x, h=1e-5: central(f, x, h).ravel())
    assert "the gradient has shape (12,), expected x's shape (3, 4)" in flat.message
