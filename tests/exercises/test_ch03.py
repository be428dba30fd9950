"""Chapter 3's checks answer common wrong answers with the hint meant for them."""
import numpy as np

from tinymbv2.exercises import check_batch_norm_backward, check_batch_norm_train, check_running_stats

AXES = (0, 2, 3)


def channel(v):
    return v.reshape(1, -1, 1, 1)


def normalise(x, gamma, beta, eps, mean, var):
    return channel(gamma) * (x - mean) / np.sqrt(var + eps) + channel(beta)


def test_batch_norm_train_hints():
    def right(x, gamma, beta, eps=1e-5):
        return normalise(x, gamma, beta, eps, x.mean(axis=AXES, keepdims=True), x.var(axis=AXES, keepdims=True))

    assert check_batch_norm_train(right).message == "correct (4 cases)"
    unbiased = check_batch_norm_train(lambda x, gamma, beta, eps=1e-5: normalise(
        x, gamma, beta, eps, x.mean(axis=AXES, keepdims=True), x.var(axis=AXES, keepdims=True, ddof=1)))
    assert "normalise with the biased variance (divide by M = N*H*W, not M - 1)" in unbiased.message
    eps_outside = check_batch_norm_train(lambda x, gamma, beta, eps=1e-5: channel(gamma) * (
        x - x.mean(axis=AXES, keepdims=True)) / (x.std(axis=AXES, keepdims=True) + eps) + channel(beta))
    assert "eps goes inside the square root" in eps_outside.message
    batch_only = check_batch_norm_train(lambda x, gamma, beta, eps=1e-5: normalise(
        x, gamma, beta, eps, x.mean(axis=0, keepdims=True), x.var(axis=0, keepdims=True)))
    assert "you used axis 0 only" in batch_only.message
    per_image = check_batch_norm_train(lambda x, gamma, beta, eps=1e-5: normalise(
        x, gamma, beta, eps, x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)))
    assert "you used each image's own (axes 2, 3)" in per_image.message
    no_affine = check_batch_norm_train(lambda x, gamma, beta, eps=1e-5: (x - x.mean(axis=AXES, keepdims=True))
                                       / np.sqrt(x.var(axis=AXES, keepdims=True) + eps))
    assert "you return xhat; the output is gamma * xhat + beta" in no_affine.message


def backward(g, x, gamma, eps=1e-5, mean_term=1.0, xhat_sign=-1.0):
    mean = x.mean(axis=AXES, keepdims=True)
    invstd = 1 / np.sqrt(x.var(axis=AXES, keepdims=True) + eps)
    xhat = (x - mean) * invstd
    dx = channel(gamma) * invstd * (g - mean_term * g.mean(axis=AXES, keepdims=True)
                                    + xhat_sign * xhat * (g * xhat).mean(axis=AXES, keepdims=True))
    return dx, (g * xhat).sum(axis=AXES), g.sum(axis=AXES)


def test_batch_norm_backward_hints():
    assert check_batch_norm_backward(backward).message == "correct (3 cases)"

    def direct_only(g, x, gamma, eps=1e-5):
        _, dgamma, dbeta = backward(g, x, gamma, eps)
        return channel(gamma) * g / np.sqrt(x.var(axis=AXES, keepdims=True) + eps), dgamma, dbeta

    assert "dx has only the direct path" in check_batch_norm_backward(direct_only).message
    sign = check_batch_norm_backward(lambda g, x, gamma, eps=1e-5: backward(g, x, gamma, eps, xhat_sign=1.0))
    assert "dx is right for g = ones (where it is exactly 0) but not for a random g" in sign.message
    no_mean = check_batch_norm_backward(lambda g, x, gamma, eps=1e-5: backward(g, x, gamma, eps, mean_term=0.0))
    assert "dx must sum to 0 there" in no_mean.message
    dbeta_axis = check_batch_norm_backward(lambda g, x, gamma, eps=1e-5: backward(g, x, gamma, eps)[:2]
                                           + (g.sum(axis=0),))
    assert "dbeta (sum g over axes 0, 2, 3): shape (3, 3, 3), expected (3,)" in dbeta_axis.message


def update(running_mean, running_var, x, momentum=0.1, unbiased=True, flipped=False):
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean, var = x.mean(axis=AXES), x.var(axis=AXES) * (m / (m - 1) if unbiased else 1)
    keep = momentum if flipped else 1 - momentum
    return keep * running_mean + (1 - keep) * mean, keep * running_var + (1 - keep) * var


def test_running_stats_hints():
    assert check_running_stats(update).message == "correct (5 cases)"
    biased = check_running_stats(lambda rm, rv, x, momentum=0.1: update(rm, rv, x, momentum, unbiased=False))
    assert "running_var keeps the unbiased variance, var * M / (M - 1) with M = N*H*W = 16" in biased.message
    flipped = check_running_stats(lambda rm, rv, x, momentum=0.1: update(rm, rv, x, momentum, flipped=True))
    assert "momentum weighs the new batch: (1 - m) * old + m * batch" in flipped.message
