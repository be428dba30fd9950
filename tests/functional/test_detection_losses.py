"""smooth_l1_loss and sigmoid_focal_loss: values and gradients against PyTorch in float64,
random shapes and random upstream gradients; bad input gets a clear error."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from tinymbv2.autograd import Tensor
from tinymbv2.functional.detection_losses import sigmoid_focal_loss, smooth_l1_loss

RTOL, ATOL = 1e-10, 1e-13


def _upstream(rng, reduction, shape):
    return rng.standard_normal(shape) if reduction == "none" else np.array(rng.standard_normal())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("beta", [1.0, 0.11, 0.0, 2.5])
def test_smooth_l1_matches_torch(seed, reduction, beta):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 7, size=rng.integers(1, 4)))
    x, y = rng.standard_normal(shape) * 2, rng.standard_normal(shape) * 2
    g = _upstream(rng, reduction, shape)
    xo, yo = Tensor(x.copy(), requires_grad=True), Tensor(y.copy(), requires_grad=True)
    out = smooth_l1_loss(xo, yo, reduction=reduction, beta=beta)
    out.backward(g)
    xt, yt = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    ref = TF.smooth_l1_loss(xt, yt, reduction=reduction, beta=beta)
    ref.backward(torch.tensor(g))
    assert out.data.dtype == np.float64 and out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(yo.grad, yt.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_smooth_l1_is_quadratic_inside_beta_and_linear_outside():
    d = np.array([-3.0, -0.5, 0.0, 0.25, 2.0])
    x = Tensor(d.copy(), requires_grad=True)
    out = smooth_l1_loss(x, Tensor(np.zeros(5)), reduction="none", beta=1.0)
    np.testing.assert_allclose(out.data, [2.5, 0.125, 0.0, 0.03125, 1.5])
    out.backward(np.ones(5))
    np.testing.assert_allclose(x.grad, [-1.0, -0.5, 0.0, 0.25, 1.0])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1, 2.0), (0.5, 0.0), (0.75, 1.5), (0.25, 0.5)])
def test_sigmoid_focal_matches_torchvision(seed, reduction, alpha, gamma):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 9)), int(rng.integers(1, 6)))
    x = rng.standard_normal(shape) * 3
    t = (rng.random(shape) < 0.3).astype(np.float64)
    if seed == 3:
        t = rng.random(shape)                      # soft targets
    g = _upstream(rng, reduction, shape)
    xo = Tensor(x.copy(), requires_grad=True)
    out = sigmoid_focal_loss(xo, Tensor(t), alpha=alpha, gamma=gamma, reduction=reduction)
    out.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    ref = tv_sigmoid_focal_loss(xt, torch.tensor(t), alpha=alpha, gamma=gamma, reduction=reduction)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_sigmoid_focal_is_finite_for_large_logits():
    x = Tensor(np.array([[-800.0, 800.0, 40.0, -40.0]]), requires_grad=True)
    t = Tensor(np.array([[0.0, 1.0, 1.0, 1.0]]))
    out = sigmoid_focal_loss(x, t, gamma=0.5, reduction="sum")
    out.backward()
    assert np.isfinite(out.data) and np.all(np.isfinite(x.grad))
    # confident and right: no loss, no gradient; confident and wrong: the loss grows as |x|
    np.testing.assert_allclose(x.grad[0, :3], 0.0, atol=1e-15)
    assert out.data == pytest.approx(0.25 * 40.0, rel=1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda: smooth_l1_loss(Tensor(np.zeros(3)), Tensor(np.zeros(4))), "same shape, got \\(3,\\) and \\(4,\\)"),
    (lambda: smooth_l1_loss(Tensor(np.zeros(3)), np.zeros(3)), "target as a Tensor, got ndarray"),
    (lambda: smooth_l1_loss(Tensor(np.zeros(3)), Tensor(np.zeros(3)), beta=-1), "beta must be a number >= 0, got -1"),
    (lambda: smooth_l1_loss(Tensor(np.zeros(3)), Tensor(np.zeros(3)), reduction="avg"), "reduction must be one of"),
    (lambda: sigmoid_focal_loss(Tensor(np.zeros(3)), Tensor(np.zeros(3)), alpha=2), "alpha must be in \\[0, 1\\] or -1"),
    (lambda: sigmoid_focal_loss(Tensor(np.zeros(3)), Tensor(np.zeros(3)), gamma=-0.5), "gamma must be a number >= 0"),
    (lambda: sigmoid_focal_loss(Tensor(np.zeros(3)), Tensor(np.zeros(3, dtype=np.float32))), "dtype"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
