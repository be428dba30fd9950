"""Chapter 4's checks answer common wrong answers with the hint meant for them."""
import numpy as np

from tinymbv2.exercises import check_bn_relu6_backward, check_lost_rank_fraction, check_relu6_backward

AXES = (0, 2, 3)


def test_relu6_backward_hints():
    assert check_relu6_backward(lambda x, g: g * ((x > 0) & (x < 6))).message == "correct (2 cases)"
    at_zero = check_relu6_backward(lambda x, g: g * ((x >= 0) & (x < 6)))
    assert "at x = 0 exactly (a kink) the gradient is 0" in at_zero.message
    at_six = check_relu6_backward(lambda x, g: g * ((x > 0) & (x <= 6)))
    assert "at x = 6 exactly (a kink)" in at_six.message
    relu = check_relu6_backward(lambda x, g: g * (x > 0))
    assert "that is ReLU's gradient; above 6 ReLU6 is constant" in relu.message
    mask = check_relu6_backward(lambda x, g: ((x > 0) & (x < 6)).astype(float))
    assert "you return the mask; multiply it by the upstream gradient g" in mask.message


def fused_backward(g, x, gamma, beta, eps=1e-5, mask_from="z", mask_after=False):
    c = lambda v: v.reshape(1, -1, 1, 1)  # noqa: E731
    mean = x.mean(axis=AXES, keepdims=True)
    invstd = 1 / np.sqrt(x.var(axis=AXES, keepdims=True) + eps)
    xhat = (x - mean) * invstd
    z = c(gamma) * xhat + c(beta)
    source = {"z": z, "x": x, "none": np.full_like(x, 3.0)}[mask_from]
    mask = (source > 0) & (source < 6)
    if not mask_after:
        g = g * mask
    dbeta, dgamma = g.sum(axis=AXES), (g * xhat).sum(axis=AXES)
    dx = c(gamma) * invstd * (g - g.mean(axis=AXES, keepdims=True)
                              - xhat * (g * xhat).mean(axis=AXES, keepdims=True))
    return (dx * mask if mask_after else dx), dgamma, dbeta


def test_bn_relu6_backward_hints():
    assert check_bn_relu6_backward(fused_backward).message == "correct (3 cases)"
    from_x = check_bn_relu6_backward(lambda *a: fused_backward(*a, mask_from="x"))
    assert "the mask comes from z = gamma * xhat + beta, the input of ReLU6, not from x" in from_x.message
    after = check_bn_relu6_backward(lambda *a: fused_backward(*a, mask_after=True))
    assert "mask g first: ReLU6 comes after BatchNorm" in after.message
    none = check_bn_relu6_backward(lambda *a: fused_backward(*a, mask_from="none"))
    assert "ReLU6 passes the gradient only where 0 < z < 6" in none.message


def test_lost_rank_fraction_hints():
    def right(T, points):
        ranks = [np.linalg.matrix_rank(T[a]) if a.any() else 0 for a in (T @ points > 0).T]
        return float(np.mean(np.array(ranks) < points.shape[0]))

    assert check_lost_rank_fraction(right).message == "correct (3 cases)"
    units = check_lost_rank_fraction(lambda T, p: np.mean((T @ p > 0).sum(axis=0) < p.shape[0]))
    assert "you counted active units; two parallel rows are two active units of rank 1" in units.message
    two_d = check_lost_rank_fraction(
        lambda T, p: np.mean([np.linalg.matrix_rank(T[a]) < 2 if a.any() else True for a in (T @ p > 0).T]))
    assert "the points are 3-D" in two_d.message
    per_point = check_lost_rank_fraction(lambda T, p: (T @ p > 0).sum(axis=0) < 2)
    assert "return one number (a fraction), got shape (300,)" in per_point.message
