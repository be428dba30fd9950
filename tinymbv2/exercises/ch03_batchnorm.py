"""Checks for the exercises of chapter 3. Batch normalisation.

* ``check_batch_norm_train``: the forward pass in training mode;
* ``check_batch_norm_backward``: its three gradients;
* ``check_running_stats``: one update of the running statistics.

Each case is compared with the library (its readable kernels, or ``nn.BatchNorm2d``); the
hints recognise the usual slips by computing them too (the unbiased variance where the
biased one belongs, statistics over the wrong axes, ``eps`` outside the square root, a
backward that is right only for an upstream gradient of ones).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..functional import batch_norm
from ..kernels import kernel_set
from ..nn import BatchNorm2d
from .checking import Hint, exercise, expect_close

__all__ = ["check_batch_norm_train", "check_batch_norm_backward", "check_running_stats"]


def _channel(v):
    return np.asarray(v).reshape(1, -1, 1, 1)


def _normalised(x, mean, var, gamma, beta, eps):
    return gamma.reshape(1, -1, 1, 1) * (x - mean) / np.sqrt(var + eps) + beta.reshape(1, -1, 1, 1)


def _forward_slips(x, gamma, beta, eps) -> dict[str, np.ndarray]:
    """What the usual wrong forward passes give for this input, with the hint for each."""
    axes, m = (0, 2, 3), x.shape[0] * x.shape[2] * x.shape[3]
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    g, b = gamma.reshape(1, -1, 1, 1), beta.reshape(1, -1, 1, 1)
    slips = {
        "normalise with the biased variance (divide by M = N*H*W, not M - 1); the unbiased "
        "one is only for running_var": _normalised(x, mean, var * m / (m - 1), gamma, beta, eps),
        "eps goes inside the square root: sqrt(var + eps)": g * (x - mean) / (np.sqrt(var) + eps) + b,
        "the statistics are per channel, over the batch and both spatial axes (axes 0, 2, 3); "
        "you used axis 0 only": _normalised(x, x.mean(axis=0, keepdims=True), x.var(axis=0, keepdims=True),
                                            gamma, beta, eps),
        "the statistics are per channel, over the batch and both spatial axes (axes 0, 2, 3); "
        "you used each image's own (axes 2, 3)": _normalised(x, x.mean(axis=(2, 3), keepdims=True),
                                                             x.var(axis=(2, 3), keepdims=True), gamma, beta, eps),
        "the statistics are per channel (axes 0, 2, 3), not over the whole tensor":
            _normalised(x, x.mean(), x.var(), gamma, beta, eps),
        "scale by gamma and shift by beta, in that order: gamma * xhat + beta":
            (x - mean) / np.sqrt(var + eps) * b + g,
        "you return xhat; the output is gamma * xhat + beta": (x - mean) / np.sqrt(var + eps),
    }
    return slips


@exercise
def check_batch_norm_train(batch_norm_train) -> int:
    """``batch_norm_train(x, gamma, beta, eps)`` for x (N, C, H, W) must return y, BatchNorm in
    training mode: per channel, over the ``N*H*W`` values, the biased variance, eps inside the
    square root. Checked against the library's kernel on four inputs (one with a large eps so
    that its place shows, one with a single image, one with 1x1 images).

    Args:
        batch_norm_train: your function, ``batch_norm_train(x, gamma, beta, eps)`` -> ``y``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(31)
    cases = [((4, 3, 3, 3), 1e-5), ((2, 5, 4, 3), 0.5), ((1, 2, 6, 6), 1e-5), ((8, 3, 1, 1), 1e-3)]
    reference = kernel_set("reference")
    for shape, eps in cases:
        x = rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, shape[1], 1, 1)) + rng.uniform(-2, 2, (1, shape[1], 1, 1))
        gamma, beta = rng.uniform(0.5, 2, shape[1]), rng.standard_normal(shape[1])
        expected = reference.batch_norm_forward_train(x, gamma, beta, eps)[0]
        what = f"x {shape}, eps={eps}"
        got = np.asarray(batch_norm_train(x.copy(), gamma.copy(), beta.copy(), eps), dtype=np.float64)
        if got.shape == expected.shape and not np.allclose(got, expected, rtol=1e-6, atol=1e-8):
            for hint, slip in _forward_slips(x, gamma, beta, eps).items():
                if np.allclose(got, slip, rtol=1e-6, atol=1e-8) and not np.allclose(slip, expected):
                    raise Hint(f"{what}: {hint}")
        expect_close(got, expected, what)
    return len(cases)


@exercise
def check_batch_norm_backward(batch_norm_backward) -> int:
    """``batch_norm_backward(g, x, gamma, eps)`` must return ``(dx, dgamma, dbeta)`` for
    y = BatchNorm(x) in training mode and upstream gradient g = dL/dy. Checked against the
    library's autograd with a random g on three inputs; a dx that is right for g = ones (where
    the true dx is zero) but wrong for a random g, or that keeps only the direct path, is
    named in the hint.

    Args:
        batch_norm_backward: your function, ``batch_norm_backward(g, x, gamma, eps)`` -> ``(dx, dgamma, dbeta)``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(32)
    cases = [(4, 3, 3, 3), (2, 5, 4, 2), (6, 2, 1, 1)]
    eps = 1e-5
    for shape in cases:
        x = rng.standard_normal(shape) * 2 + 1
        gamma, beta = rng.uniform(0.5, 2, shape[1]), rng.standard_normal(shape[1])
        g = rng.standard_normal(shape)
        tx, tg, tb = (Tensor(a.copy(), requires_grad=True) for a in (x, gamma, beta))
        batch_norm(tx, None, None, tg, tb, training=True, eps=eps).backward(g)
        what = f"x {shape}, random g"
        result = batch_norm_backward(g.copy(), x.copy(), gamma.copy(), eps)
        if not isinstance(result, tuple) or len(result) != 3:
            raise Hint(f"{what}: return three arrays, (dx, dgamma, dbeta)")
        dx, dgamma, dbeta = (np.asarray(r, dtype=np.float64) for r in result)
        expect_close(dbeta, tb.grad, f"{what}: dbeta (sum g over axes 0, 2, 3)")
        expect_close(dgamma, tg.grad, f"{what}: dgamma (sum g * xhat over axes 0, 2, 3)")
        if dx.shape == x.shape and not np.allclose(dx, tx.grad, rtol=1e-6, atol=1e-8):
            invstd = 1 / np.sqrt(x.var(axis=(0, 2, 3)) + eps)
            if np.allclose(dx, _channel(gamma * invstd) * g, rtol=1e-6):
                raise Hint(f"{what}: dx has only the direct path gamma * g / sqrt(var + eps); x also "
                           "moves the mean and the variance: subtract mean(g) and xhat * mean(g * xhat)")
            ones = np.ones(shape)
            ones_dx = batch_norm_backward(ones, x.copy(), gamma.copy(), eps)[0]
            if np.allclose(np.asarray(ones_dx, dtype=np.float64), 0, atol=1e-8):
                raise Hint(f"{what}: dx is right for g = ones (where it is exactly 0) but not for a "
                           "random g: check the term xhat * mean(g * xhat) and its sign")
            sums = dx.sum(axis=(0, 2, 3))
            if not np.allclose(sums, 0, atol=1e-8 * x.size):
                raise Hint(f"{what}: your dx sums to {sums[0]:.3g} over channel 0; shifting a channel's "
                           "input does not change BatchNorm's output, so dx must sum to 0 there "
                           "(the term through the mean, - mean(g), is missing or wrong)")
        expect_close(dx, tx.grad, f"{what}: dx")
    return len(cases)


@exercise
def check_running_stats(update_running) -> int:
    """``update_running(running_mean, running_var, x, momentum)`` must return the new
    ``(running_mean, running_var)`` after one training batch x (N, C, H, W):
    ``(1 - m) * old + m * batch statistic``, with the *unbiased* batch variance. Checked over
    five steps against ``nn.BatchNorm2d``, from its initial state (mean 0, var 1), with two
    momenta.

    Args:
        update_running: your function, ``update_running(running_mean, running_var, x, momentum)`` -> the new pair.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(33)
    steps = 0
    for momentum, count in ((0.1, 3), (0.3, 2)):
        layer = BatchNorm2d(3, momentum=momentum)
        mean, var = np.zeros(3), np.ones(3)
        for step in range(1, count + 1):
            x = rng.standard_normal((4, 3, 2, 2)) * 2 + np.array([1.0, -2.0, 0.5]).reshape(1, 3, 1, 1)
            before_mean, before_var = mean.copy(), var.copy()
            result = update_running(mean.copy(), var.copy(), x.copy(), momentum)
            layer(Tensor(x.astype(np.float32)))
            what = f"momentum {momentum}, step {step}"
            if not isinstance(result, tuple) or len(result) != 2:
                raise Hint(f"{what}: return two arrays, (running_mean, running_var)")
            got_mean, got_var = (np.asarray(r, dtype=np.float64) for r in result)
            # float32 layer: compare at its precision
            exp_mean, exp_var = layer.running_mean.data.astype(np.float64), layer.running_var.data.astype(np.float64)
            m = x.shape[0] * x.shape[2] * x.shape[3]
            batch_mean, batch_var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
            if got_mean.shape == exp_mean.shape and np.allclose(got_mean, momentum * before_mean + (1 - momentum) * batch_mean) \
                    and not np.allclose(got_mean, exp_mean, rtol=1e-5):
                raise Hint(f"{what}: momentum weighs the new batch: (1 - m) * old + m * batch, "
                           "not m * old + (1 - m) * batch")
            expect_close(got_mean, exp_mean, f"{what}: running_mean", rtol=1e-5, atol=1e-6)
            biased = (1 - momentum) * before_var + momentum * batch_var
            if got_var.shape == exp_var.shape and np.allclose(got_var, biased, rtol=1e-6) \
                    and not np.allclose(got_var, exp_var, rtol=1e-5):
                raise Hint(f"{what}: running_var keeps the unbiased variance, var * M / (M - 1) "
                           f"with M = N*H*W = {m}")
            expect_close(got_var, exp_var, f"{what}: running_var", rtol=1e-5, atol=1e-6)
            mean, var = got_mean, got_var
            steps += 1
    return steps
