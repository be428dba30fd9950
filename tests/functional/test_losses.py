"""Losses: forward values and gradients against PyTorch in float64, with random upstream gradients."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from tinymbv2 import optim
from tinymbv2.autograd import Tensor
from tinymbv2.functional.losses import (cross_entropy, dice_loss, focal_loss, l2_penalty,
                                        log_softmax, multi_margin_loss, softmax)

RTOL, ATOL = 1e-10, 1e-12


def _case(n, k, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * scale
    t = rng.integers(0, k, size=n)
    return z, t


def _ours(fn, z, t, upstream=None, **kw):
    x = Tensor(z.copy(), requires_grad=True)
    out = fn(x, t, **kw)
    out.backward(upstream)
    return out.data, x.grad


def _torch(fn, z, t, upstream=None, **kw):
    x = torch.tensor(z, requires_grad=True)
    out = fn(x, torch.tensor(t), **kw)
    out.backward(None if upstream is None else torch.tensor(upstream))
    return out.detach().numpy(), x.grad.numpy()


def _upstream(reduction, n, seed=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n) if reduction == "none" else np.array(rng.standard_normal())


def _compare(ours, ref):
    for a, b in zip(ours, ref):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


# -- softmax -----------------------------------------------------------------------
@pytest.mark.parametrize("shape,axis", [((4, 7), -1), ((4, 7), 0), ((2, 3, 5), 1), ((6,), 0)])
@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_softmax_forward_and_backward_match_torch(shape, axis, which):
    rng = np.random.default_rng(1)
    z, g = rng.standard_normal(shape) * 4, rng.standard_normal(shape)
    ours_fn = {"softmax": softmax, "log_softmax": log_softmax}[which]
    torch_fn = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}[which]
    x = Tensor(z.copy(), requires_grad=True)
    y = ours_fn(x, axis=axis)
    y.backward(g)
    xt = torch.tensor(z, requires_grad=True)
    yt = torch_fn(xt, dim=axis)
    yt.backward(torch.tensor(g))
    _compare((y.data, x.grad), (yt.detach().numpy(), xt.grad.numpy()))


def test_softmax_is_stable_and_checks_axis():
    z = np.array([[1e4, 0.0, -1e4]])
    np.testing.assert_allclose(softmax(Tensor(z)).data, [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(log_softmax(Tensor(z)).data, [[0.0, -1e4, -2e4]])
    with pytest.raises(ValueError, match="softmax: axis must be an int in"):
        softmax(Tensor(z), axis=2)
    with pytest.raises(TypeError, match="log_softmax: x must be floating point"):
        log_softmax(Tensor(np.arange(3)))


# -- cross-entropy ---------------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(1, 2), (5, 3), (16, 10), (33, 7)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(n, k, smoothing, reduction):
    z, t = _case(n, k, seed=n * k)
    up = _upstream(reduction, n)
    kw = dict(label_smoothing=smoothing, reduction=reduction)
    _compare(_ours(cross_entropy, z, t, up, **kw), _torch(TF.cross_entropy, z, t, up, **kw))


def test_cross_entropy_accepts_tensor_target_and_keeps_float32():
    z, t = _case(8, 4)
    out = cross_entropy(Tensor(z.astype(np.float32)), Tensor(t))
    assert out.dtype == np.float32 and out.shape == ()
    ref = TF.cross_entropy(torch.tensor(z), torch.tensor(t)).item()
    assert out.item() == pytest.approx(ref, rel=1e-6)
    assert cross_entropy(Tensor(z), t).dtype == np.float64  # float64 stays float64
    assert cross_entropy(Tensor(z), list(t)).item() == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_stable_at_1e4(smoothing):
    rng = np.random.default_rng(3)
    z = rng.choice([-1e4, 1e4], size=(6, 5)) + rng.standard_normal((6, 5))
    t = rng.integers(0, 5, size=6)
    up = _upstream("none", 6)
    kw = dict(label_smoothing=smoothing, reduction="none")
    ours = _ours(cross_entropy, z, t, up, **kw)
    assert np.all(np.isfinite(ours[0])) and np.all(np.isfinite(ours[1]))
    assert ours[0].max() > 1e3  # large losses, not inf/nan
    _compare(ours, _torch(TF.cross_entropy, z, t, up, **kw))


# -- focal loss ------------------------------------------------------------------------
def _torch_focal(x, t, gamma=2.0, alpha=None, reduction="mean"):
    logp = torch.log_softmax(x, dim=1).gather(1, t[:, None])[:, 0]
    pt = logp.exp()
    if alpha is None:
        a = torch.ones_like(logp)
    elif isinstance(alpha, float):
        a = torch.full_like(logp, alpha)
    else:
        a = torch.tensor(np.asarray(alpha, dtype=np.float64))[t]
    loss = -a * (1 - pt) ** gamma * logp
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25, "per-class"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_matches_torch_formula(gamma, alpha, reduction):
    n, k = 12, 4
    z, t = _case(n, k, seed=7)
    if alpha == "per-class":
        alpha = [0.1, 0.2, 0.3, 0.4]
    up = _upstream(reduction, n)
    kw = dict(gamma=gamma, alpha=alpha, reduction=reduction)
    _compare(_ours(focal_loss, z, t, up, **kw), _torch(_torch_focal, z, t, up, **kw))


def test_focal_with_gamma_0_is_cross_entropy_and_handles_certain_predictions():
    z, t = _case(9, 5)
    np.testing.assert_allclose(focal_loss(Tensor(z), t, gamma=0.0).data,
                               cross_entropy(Tensor(z), t).data, rtol=1e-14)
    z = np.array([[100.0, -100.0], [-100.0, 100.0]])  # p_t == 1.0 exactly in float64
    loss, grad = _ours(focal_loss, z, np.array([0, 1]), gamma=0.5)
    assert loss == 0.0 and np.all(grad == 0.0)  # torch's autograd gives nan (0 * inf) here


def test_focal_stable_at_1e4():
    z = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4], [-1e4, 0.0, 1e4]])
    t = np.array([1, 1, 0])
    ours = _ours(focal_loss, z, t, _upstream("none", 3), reduction="none")
    _compare(ours, _torch(_torch_focal, z, t, _upstream("none", 3), reduction="none"))


# -- Dice loss -------------------------------------------------------------------------
def _torch_dice(x, t, smooth=1.0):
    p = torch.softmax(x, dim=1)
    g = TF.one_hot(t, x.shape[1]).to(x.dtype)
    dice = (2 * (p * g).sum(0) + smooth) / (p.sum(0) + g.sum(0) + smooth)
    return 1 - dice.mean()


@pytest.mark.parametrize("n,k", [(4, 3), (20, 10), (50, 5)])
@pytest.mark.parametrize("smooth", [1.0, 1e-3, 0.0])
def test_dice_matches_torch_formula(n, k, smooth):
    z, t = _case(n, k, seed=n + k)
    up = _upstream("mean", n)
    _compare(_ours(dice_loss, z, t, up, smooth=smooth), _torch(_torch_dice, z, t, up, smooth=smooth))


@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_dice_with_absent_class_has_no_nan(smooth):
    z, _ = _case(6, 4, seed=2)
    t = np.array([0, 1, 0, 1, 1, 0])  # classes 2 and 3 absent
    up = _upstream("mean", 6)
    ours = _ours(dice_loss, z, t, up, smooth=smooth)
    _compare(ours, _torch(_torch_dice, z, t, up, smooth=smooth))
    # with huge logits the absent class's probabilities underflow to 0: 0/0 without care
    z = np.array([[1e4, 0, 0, 0], [0, 1e4, 0, 0]], dtype=float) - 5e3
    loss, grad = _ours(dice_loss, z, np.array([0, 1]), smooth=0.0)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    # classes 0, 1 match exactly; 2, 3 are empty in both p and g, which counts as dice 1
    assert loss == 0.0


def test_dice_stable_at_1e4():
    z = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4], [-1e4, 0.0, 1e4], [3.0, 1.0, 1e4]])
    t = np.array([0, 2, 2, 1])
    up = _upstream("mean", 4)
    _compare(_ours(dice_loss, z, t, up), _torch(_torch_dice, z, t, up))


# -- errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [cross_entropy, focal_loss, dice_loss])
def test_bad_inputs_raise_clear_errors(fn):
    name = fn.__name__
    z, t = _case(4, 3)
    with pytest.raises(ValueError, match=rf"{name}: target values must be in \[0, 3\) for 3 classes, got 3"):
        fn(Tensor(z), np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=rf"{name}: target values .* got -1"):
        fn(Tensor(z), np.array([0, -1, 2, 1]))
    with pytest.raises(TypeError, match=rf"{name}: target must hold integer class indices, got dtype float64"):
        fn(Tensor(z), t.astype(float))
    with pytest.raises(ValueError, match=rf"{name}: target must have shape \(4,\) .* got \(3,\)"):
        fn(Tensor(z), t[:3])
    with pytest.raises(ValueError, match=rf"{name}: target must have shape"):
        fn(Tensor(z), t[:, None])
    with pytest.raises(ValueError, match=rf"{name}: logits must be 2-D.*, got shape \(12,\)"):
        fn(Tensor(z.ravel()), t)
    with pytest.raises(TypeError, match=rf"{name}: logits must be floating point, got dtype int64"):
        fn(Tensor(np.zeros((4, 3), dtype=np.int64)), t)
    with pytest.raises(TypeError, match=rf"{name}: target must be an integer array"):
        fn(Tensor(z), 3)


def test_bad_options_raise_value_error():
    z, t = _case(4, 3)
    with pytest.raises(ValueError, match="cross_entropy: reduction must be one of"):
        cross_entropy(Tensor(z), t, reduction="avg")
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\]"):
        cross_entropy(Tensor(z), t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="focal_loss: alpha must be .* 3 per-class weights, got shape"):
        focal_loss(Tensor(z), t, alpha=[0.5, 0.5])
    with pytest.raises(ValueError, match="focal_loss: gamma must be a number >= 0"):
        focal_loss(Tensor(z), t, gamma=-1)
    with pytest.raises(ValueError, match="dice_loss: smooth must be a number >= 0"):
        dice_loss(Tensor(z), t, smooth=-1)


# -- L2 penalty --------------------------------------------------------------------------
def test_l2_penalty_value_and_gradient():
    rng = np.random.default_rng(0)
    ws = [Tensor(rng.standard_normal(s), requires_grad=True) for s in [(3, 4), (5,)]]
    out = l2_penalty(ws, 0.01)
    assert out.item() == pytest.approx(0.01 * sum(np.sum(w.data ** 2) for w in ws), rel=1e-14)
    out.backward(np.array(2.0))
    for w in ws:
        np.testing.assert_allclose(w.grad, 2.0 * 2 * 0.01 * w.data, rtol=1e-14)
    with pytest.raises(ValueError, match="l2_penalty: lam must be a number >= 0"):
        l2_penalty(ws, -1.0)
    with pytest.raises(ValueError, match="l2_penalty: got an empty list"):
        l2_penalty([], 0.1)
    with pytest.raises(TypeError, match=r"l2_penalty: params\[0\] must be a Tensor"):
        l2_penalty([np.ones(3)], 0.1)


def _train_with_penalty(opt_cls, lam, wd, steps=20, **kw):
    """Same data gradients; the decay comes from l2_penalty(lam) and/or the optimizer's weight_decay."""
    rng = np.random.default_rng(4)
    w0, gs = rng.standard_normal(6), rng.standard_normal((steps, 6))
    w = Tensor(w0.copy(), requires_grad=True)
    opt = opt_cls([w], weight_decay=wd, **kw)
    for g in gs:
        w.grad = None
        if lam:
            l2_penalty([w], lam).backward()
            w.grad = w.grad + g
        else:
            w.grad = g.copy()
        opt.step()
    return w.data


@pytest.mark.parametrize("opt_cls,kw", [(optim.SGD, dict(lr=0.1)),
                                        (optim.SGD, dict(lr=0.1, momentum=0.9)),
                                        (optim.Adam, dict(lr=0.01))])
def test_l2_penalty_equals_coupled_weight_decay_of_2_lambda(opt_cls, kw):
    a = _train_with_penalty(opt_cls, lam=0.05, wd=0.0, **kw)
    b = _train_with_penalty(opt_cls, lam=0.0, wd=0.1, **kw)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_l2_penalty_differs_from_decoupled_weight_decay():
    a = _train_with_penalty(optim.Adam, lam=0.05, wd=0.0, lr=0.01)
    b = _train_with_penalty(optim.AdamW, lam=0.0, wd=0.1, lr=0.01)
    assert np.max(np.abs(a - b)) > 1e-4


# -- multi-class hinge -------------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(1, 2), (5, 3), (16, 10), (33, 7)])
@pytest.mark.parametrize("p,margin", [(1, 1.0), (2, 1.0), (1, 2.5), (2, 0.3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multi_margin_matches_torch(n, k, p, margin, reduction):
    z, t = _case(n, k, seed=n * k + p, scale=1.0)   # scale 1: some hinges active, some not
    up = _upstream(reduction, n)
    kw = dict(p=p, margin=margin, reduction=reduction)
    _compare(_ours(multi_margin_loss, z, t, up, **kw), _torch(TF.multi_margin_loss, z, t, up, **kw))


def test_multi_margin_by_hand_and_checks_arguments():
    z = np.array([[3.0, 2.5, 0.0], [0.0, 0.0, 0.0]])   # row 0: class 1 within the margin of 0
    loss, grad = _ours(multi_margin_loss, z, np.array([0, 2]))
    # row 0: max(0, 1 - 3 + 2.5) = 0.5, class 2 clears the margin (zero gradient);
    # row 1: two hinges of 1; K = 3
    np.testing.assert_allclose(loss, ((0.5) / 3 + 2.0 / 3) / 2)
    np.testing.assert_allclose(grad, np.array([[-1, 1, 0], [1, 1, -2]]) / 3 / 2)
    with pytest.raises(ValueError, match="multi_margin_loss: p must be 1 or 2"):
        multi_margin_loss(Tensor(z), np.array([0, 2]), p=3)
    with pytest.raises(ValueError, match="multi_margin_loss: margin must be a number > 0"):
        multi_margin_loss(Tensor(z), np.array([0, 2]), margin=0.0)
