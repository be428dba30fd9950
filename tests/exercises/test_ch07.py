"""Chapter 7's checks answer common wrong answers with the hint meant for them."""
import numpy as np

from tinymbv2.exercises import check_cross_entropy_grad, check_focal_loss, check_smoothed_cross_entropy


def log_softmax(z, axis=1):
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def smoothed(z, t, eps, *, axis=1, others=False, reduce=np.mean):
    n, k = z.shape
    onehot = np.eye(k)[t]
    q = (1 - eps) * onehot + (eps / (k - 1) * (1 - onehot) if others else eps / k)
    return reduce(-(q * log_softmax(z, axis)).sum(axis=1))


def naive(z, t, eps):   # softmax from exp(z): overflows on large logits
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return -((1 - eps) * np.log(p[np.arange(len(t)), t]) + eps * np.log(p).mean(axis=1)).mean()


def test_smoothed_cross_entropy_hints():
    assert check_smoothed_cross_entropy(smoothed).message == "correct (15 cases)"
    assert "not over the K - 1 others" in check_smoothed_cross_entropy(
        lambda z, t, e: smoothed(z, t, e, others=True)).message
    assert "you computed plain cross-entropy" in check_smoothed_cross_entropy(
        lambda z, t, e: smoothed(z, t, 0.0)).message
    assert "that is the sum over the 4 samples" in check_smoothed_cross_entropy(
        lambda z, t, e: smoothed(z, t, e, reduce=np.sum)).message
    assert "not each column" in check_smoothed_cross_entropy(
        lambda z, t, e: smoothed(z, t, e, axis=0)).message
    overflow = check_smoothed_cross_entropy(naive).message
    assert overflow.startswith("not yet: logits 6x10 of magnitude 1000") and "subtract each row's max" in overflow
    assert "expected one number (the mean loss), got ndarray (4,)" in check_smoothed_cross_entropy(
        lambda z, t, e: smoothed(z, t, e, reduce=lambda x: x)).message


def grad(z, t, *, axis=1, scale=None, sign=1):
    n, k = z.shape
    p = np.exp(log_softmax(z, axis))
    return sign * (p - np.eye(k)[t]) / (n if scale is None else scale)


def test_cross_entropy_grad_hints():
    assert check_cross_entropy_grad(grad).message == "correct (5 cases)"
    assert "missing the 1/N" in check_cross_entropy_grad(lambda z, t: grad(z, t, scale=1)).message
    assert "the sign is flipped" in check_cross_entropy_grad(lambda z, t: grad(z, t, sign=-1)).message
    assert "not each column" in check_cross_entropy_grad(lambda z, t: grad(z, t, axis=0)).message
    assert "shape (3, 4), expected (4, 3)" in check_cross_entropy_grad(lambda z, t: grad(z, t).T).message

    def overflowing(z, t):
        with np.errstate(over="ignore", invalid="ignore"):
            p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return (p - np.eye(z.shape[1])[t]) / len(t)
    assert "non-finite values; exp of a large logit overflows" in check_cross_entropy_grad(overflowing).message


def focal(z, t, gamma, *, factor=lambda pt, g: (1 - pt) ** g, reduce=np.mean):
    logpt = log_softmax(z)[np.arange(len(t)), t]
    return reduce(-factor(np.exp(logpt), gamma) * logpt)


def test_focal_loss_hints():
    assert check_focal_loss(focal).message == "correct (20 cases)"
    assert "not p_t^gamma" in check_focal_loss(lambda z, t, g: focal(z, t, g, factor=lambda pt, g: pt ** g)).message
    assert "that is the sum over the 4 samples" in check_focal_loss(
        lambda z, t, g: focal(z, t, g, reduce=np.sum)).message

    def all_classes(z, t, gamma):
        logp = log_softmax(z)
        return (-(1 - np.exp(logp)) ** gamma * logp).sum(axis=1).mean()
    assert "you summed over all classes" in check_focal_loss(all_classes).message
    times_gamma = check_focal_loss(lambda z, t, g: focal(z, t, g, factor=lambda pt, g: (1 - pt) * g)).message
    assert "gamma = 0.0: you gave 0, expected" in times_gamma and "focal loss is plain cross-entropy" in times_gamma
