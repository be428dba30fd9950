"""Per-pixel losses on (N, K, H, W) logits: cross-entropy with ignore_index and class weights
against torch.nn.functional.cross_entropy, the Dice loss and CE + Dice against their formulas
written in torch here (torch has no Dice loss); float64, random shapes, a random upstream
gradient."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from tinymbv2 import Tensor
from tinymbv2.functional import ce_dice_loss, cross_entropy, dice_loss

RTOL, ATOL = 1e-10, 1e-12
IGNORE = 255  # PASCAL VOC's mark for unlabelled border pixels


def _pixels(seed, ignore=IGNORE, frac=0.2):
    """Random logits (N, K, H, W) and targets (N, H, W) with a share of ignored pixels."""
    rng = np.random.default_rng(seed)
    n, k, h, w = (int(v) for v in (rng.integers(1, 4), rng.integers(2, 7), rng.integers(1, 9),
                                   rng.integers(1, 9)))
    z = rng.standard_normal((n, k, h, w)) * 3
    t = rng.integers(0, k, (n, h, w))
    if ignore is not None:
        t[rng.random((n, h, w)) < frac] = ignore
    return z, t, rng.uniform(0.2, 3.0, k)


def _run(fn, lib, z, t, upstream, **kw):
    """Value and gradient of ``fn`` (ours on Tensors, or torch's) under ``upstream``."""
    if lib == "torch":
        x = torch.tensor(z, requires_grad=True)
        out = fn(x, torch.from_numpy(t), **kw)
        out.backward(torch.tensor(upstream))
        return out.detach().numpy(), x.grad.numpy()
    x = Tensor(z.copy(), requires_grad=True)
    out = fn(x, t, **kw)
    out.backward(upstream)
    return out.data, x.grad


def _compare(ours, theirs):
    for a, b in zip(ours, theirs):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def _upstream(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


# -- cross-entropy ----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_pixel_cross_entropy_matches_torch(seed, reduction, weighted, smoothing):
    z, t, w = _pixels(seed)
    up = _upstream(t.shape if reduction == "none" else (), seed + 50)
    kw = dict(reduction=reduction, ignore_index=IGNORE, label_smoothing=smoothing)
    ours = _run(cross_entropy, "ours", z, t, up, weight=w if weighted else None, **kw)
    theirs = _run(TF.cross_entropy, "torch", z, t, up,
                  weight=torch.from_numpy(w) if weighted else None, **kw)
    _compare(ours, theirs)
    assert np.abs(ours[1][np.broadcast_to((t == IGNORE)[:, None], z.shape)]).max(initial=0) == 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sample_cross_entropy_gets_weight_and_ignore_index_too(reduction):
    """(N, K) logits keep their behaviour and gain PyTorch's weight and ignore_index
    (the default -100 included)."""
    rng = np.random.default_rng(3)
    z, t, w = rng.standard_normal((9, 5)) * 2, rng.integers(0, 5, 9), rng.uniform(0.5, 2, 5)
    t[[1, 4]] = -100
    up = _upstream(t.shape if reduction == "none" else (), 4)
    for kw in ({}, {"weight": w}, {"weight": w, "label_smoothing": 0.1}):
        tkw = {**kw, "weight": torch.from_numpy(w)} if "weight" in kw else kw
        _compare(_run(cross_entropy, "ours", z, t, up, reduction=reduction, **kw),
                 _run(TF.cross_entropy, "torch", z, t, up, reduction=reduction, **tkw))


def test_the_weighted_mean_divides_by_the_counted_weights():
    """loss = sum_i w_{t_i} (-log p_{i, t_i}) / sum_i w_{t_i}, over counted pixels only."""
    z, t, w = _pixels(9)
    logp = torch.log_softmax(torch.from_numpy(z), 1).numpy()
    keep = t != IGNORE
    tc = np.where(keep, t, 0)
    picked = np.take_along_axis(logp, tc[:, None], 1)[:, 0]
    want = -(w[tc] * picked)[keep].sum() / w[tc][keep].sum()
    got = cross_entropy(Tensor(z), t, weight=w, ignore_index=IGNORE).item()
    assert abs(got - want) <= 1e-12 * abs(want)


def test_all_ignored_mean_is_nan_like_torch_with_zero_gradient():
    z = np.random.default_rng(1).standard_normal((2, 3, 2, 2))
    t = np.full((2, 2, 2), -100)
    x = Tensor(z, requires_grad=True)
    loss = cross_entropy(x, t)
    assert np.isnan(loss.item()) and np.isnan(TF.cross_entropy(torch.from_numpy(z), torch.from_numpy(t)).item())
    loss.backward()
    assert np.all(x.grad == 0)
    assert cross_entropy(Tensor(z), t, reduction="sum").item() == 0.0


# -- Dice ---------------------------------------------------------------------------------
def _torch_dice(x, t, smooth=1.0, ignore_index=IGNORE):
    """The soft Dice loss written out: per class over the batch's counted pixels."""
    k = x.shape[1]
    p = torch.softmax(x, dim=1).movedim(1, -1).reshape(-1, k)
    t = t.reshape(-1)
    keep = (t != ignore_index).to(x.dtype)[:, None]
    g = TF.one_hot(torch.where(t == ignore_index, 0, t), k).to(x.dtype) * keep
    p = p * keep
    dice = (2 * (p * g).sum(0) + smooth) / (p.sum(0) + g.sum(0) + smooth)
    return 1 - dice.mean()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("smooth", [1.0, 1e-2])
def test_pixel_dice_matches_its_formula(seed, smooth):
    z, t, _ = _pixels(seed + 20)
    up = _upstream((), seed)
    ours = _run(dice_loss, "ours", z, t, up, smooth=smooth, ignore_index=IGNORE)
    _compare(ours, _run(_torch_dice, "torch", z, t, up, smooth=smooth))
    assert np.abs(ours[1][np.broadcast_to((t == IGNORE)[:, None], z.shape)]).max(initial=0) == 0


def test_pixel_dice_without_ignored_pixels_is_the_sample_dice_of_the_pixels():
    """(N, K, H, W) is (N H W, K) with the class axis moved last: the same loss."""
    z, t, _ = _pixels(5, ignore=None)
    rows = z.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])
    assert abs(dice_loss(Tensor(z), t).item() - dice_loss(Tensor(rows), t.reshape(-1)).item()) < 1e-14


def test_ce_dice_is_the_weighted_sum():
    z, t, w = _pixels(11)
    up = _upstream((), 12)
    ours = _run(ce_dice_loss, "ours", z, t, up, ce_weight=0.7, dice_weight=1.5, weight=w,
                ignore_index=IGNORE, smooth=0.5)

    def theirs(x, tt):
        ce = TF.cross_entropy(x, tt, weight=torch.from_numpy(w), ignore_index=IGNORE)
        return 0.7 * ce + 1.5 * _torch_dice(x, tt, smooth=0.5)

    _compare(ours, _run(theirs, "torch", z, t, up))


# -- errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [cross_entropy, dice_loss, ce_dice_loss])
def test_bad_pixel_inputs_raise_clear_errors(fn):
    name = "cross_entropy" if fn is ce_dice_loss else fn.__name__
    z = Tensor(np.zeros((2, 3, 4, 5)))
    t = np.zeros((2, 4, 5), dtype=np.int64)
    with pytest.raises(ValueError, match=rf"{name}: logits must be 2-D \(N, K\) or 4-D \(N, K, H, W\), "
                                         r"got shape \(2, 3, 4\)"):
        fn(Tensor(np.zeros((2, 3, 4))), t[:, 0])
    with pytest.raises(ValueError, match=rf"{name}: target must have shape \(2, 4, 5\) .* got \(2, 5, 4\)"):
        fn(z, np.zeros((2, 5, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=rf"{name}: target must have shape \(2, 4, 5\) .* got \(2, 3, 4, 5\)"):
        fn(z, np.zeros((2, 3, 4, 5), dtype=np.int64))
    bad = t.copy()
    bad[1, 2, 3] = 3
    with pytest.raises(ValueError, match=rf"{name}: target values must be in \[0, 3\) for 3 classes, got 3 "
                                         r"\(and it is not ignore_index=-100\)"):
        fn(z, bad)
    bad[1, 2, 3] = 255
    with pytest.raises(ValueError, match=r"got 255 \(and it is not ignore_index=-100\)"):
        fn(z, bad)
    fn(z, bad, ignore_index=255)  # the same target with 255 declared ignored is fine
    with pytest.raises(TypeError, match=rf"{name}: ignore_index must be an int"):
        fn(z, t, ignore_index=None)


def test_bad_class_weights_and_loss_weights():
    z, t = Tensor(np.zeros((2, 3, 4, 5))), np.zeros((2, 4, 5), dtype=np.int64)
    with pytest.raises(ValueError, match=r"cross_entropy: weight must have shape \(3,\), one per class .* got \(4,\)"):
        cross_entropy(z, t, weight=np.ones(4))
    with pytest.raises(TypeError, match="cross_entropy: weight must be floating point"):
        cross_entropy(z, t, weight=np.ones(3, dtype=np.int64))
    with pytest.raises(ValueError, match="ce_dice_loss: dice_weight must be a number >= 0"):
        ce_dice_loss(z, t, dice_weight=-1.0)


def test_pixel_losses_pass_gradcheck():
    from tinymbv2.gradcheck import gradcheck

    z, t, w = _pixels(13)
    x = Tensor(z, requires_grad=True)
    assert gradcheck(lambda a: cross_entropy(a, t, weight=w, ignore_index=IGNORE, label_smoothing=0.1,
                                             reduction="none"), [x])
    assert gradcheck(lambda a: ce_dice_loss(a, t, ignore_index=IGNORE, smooth=0.3), [x])
