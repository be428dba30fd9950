"""Checks for the exercises of chapter 7. Losses: cross-entropy, focal, Dice.

* [check_smoothed_cross_entropy][tinymbv2.exercises.ch07_losses.check_smoothed_cross_entropy]:
  the mean cross-entropy with label smoothing, against ``F.cross_entropy``;
* [check_cross_entropy_grad][tinymbv2.exercises.ch07_losses.check_cross_entropy_grad]: its
  gradient with respect to the logits, against the library's backward pass;
* [check_focal_loss][tinymbv2.exercises.ch07_losses.check_focal_loss]: the mean focal loss,
  against ``F.focal_loss``.

The hidden cases are seeded random logits of several shapes (one sample, two classes, ten),
some of magnitude 1000, where a softmax written with ``exp(z)`` overflows. The usual slips
(softmax over the wrong axis, a sum for the mean, smoothing over K - 1 classes, a missing 1/N,
the gradient's sign, the focal factor on the wrong probability) get a hint of their own.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..functional import cross_entropy, focal_loss
from .checking import Hint, exercise, expect_close

__all__ = ["check_smoothed_cross_entropy", "check_cross_entropy_grad", "check_focal_loss"]


def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    """log softmax along ``axis``, from the shifted logits (no overflow)."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _cases():
    """[(logits (N, K), target (N,), description)]: seeded random logits; the last has
    entries of magnitude 1000."""
    rng = np.random.default_rng(7)
    cases = []
    for n, k, scale in ((4, 3, 2.0), (8, 10, 3.0), (1, 5, 1.0), (5, 2, 2.0), (6, 10, 1000.0)):
        z = rng.standard_normal((n, k)) * scale
        cases.append((z, rng.integers(0, k, size=n), f"logits {n}x{k}" + (
            f" of magnitude {scale:g}" if scale > 10 else "")))
    return cases


def _number(value, what: str) -> float:
    try:
        number = float(np.asarray(getattr(value, "data", value)))
    except (TypeError, ValueError):
        raise Hint(f"{what}: expected one number (the mean loss), got {type(value).__name__} "
                   f"{np.shape(getattr(value, 'data', value))}") from None
    if not np.isfinite(number):
        raise Hint(f"{what}: you gave {number}; exp of a large logit overflows: subtract each "
                   "row's max before exp (log p = z - max - log sum exp(z - max))")
    return number


def _first_slip(got, slips: dict, what: str, expected, otherwise: str = "") -> None:
    """Raise the hint of the first slip whose value ``got`` matches (a slip that happens to
    give the right value is skipped), else ``otherwise``, else the plain mismatch."""
    right = lambda value: np.allclose(value, expected, rtol=1e-6, atol=1e-9)
    if np.shape(got) == np.shape(expected) and right(got):
        return
    given = f"you gave {float(got):.6g}, expected {float(expected):.6g}: " if np.ndim(got) == 0 else ""
    for hint, value in slips.items():
        if np.shape(value) == np.shape(got) and np.allclose(got, value, rtol=1e-6, atol=1e-9) \
                and not right(value):
            raise Hint(f"{what}: {given}{hint}")
    if otherwise:
        raise Hint(f"{what}: {given}{otherwise}")
    expect_close(got, expected, what, rtol=1e-6, atol=1e-9)


@exercise
def check_smoothed_cross_entropy(answer):
    """Check ``answer(logits, target, eps)`` -> the mean over the N samples of
    $-\\sum_k q_k \\log p_k$ with $q = (1-\\varepsilon)\\,\\text{onehot}(t) + \\varepsilon/K$,
    $p = \\text{softmax}(z)$ per row.

    Cases: five seeded logit arrays (one of magnitude 1000) with eps 0, 0.1 and 0.3, against
    ``F.cross_entropy(logits, target, label_smoothing=eps)``.

    Args:
        answer: the learner's ``smoothed_cross_entropy(z, t, eps)``.

    Returns:
        The number of cases checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    count = 0
    for z, t, name in _cases():
        n, k = z.shape
        for eps in (0.0, 0.1, 0.3):
            count += 1
            what = f"{name}, eps = {eps}"
            expected = cross_entropy(Tensor(z), t, label_smoothing=eps).item()
            got = _number(answer(z.copy(), t.copy(), eps), what)
            logp, logp0 = _log_softmax(z, 1), _log_softmax(z, 0)
            picked = -logp[np.arange(n), t]
            others = (-logp.sum(1) - picked) / max(k - 1, 1)
            smoothed = lambda lp: (1 - eps) * -lp[np.arange(n), t] + eps * -lp.mean(1)
            slips = {
                f"the smoothing spreads eps over all K = {k} classes (eps/K each, the true "
                "class included), not over the K - 1 others":
                    ((1 - eps) * picked + eps * others).mean(),
                f"with eps = {eps} the target is (1 - eps) onehot + eps/K; you computed plain "
                "cross-entropy": picked.mean(),
                "the eps/K part of the target counts too: add eps x the mean of -log p over "
                "the classes": ((1 - eps) * picked).mean(),
                f"that is the sum over the {n} samples; the loss is their mean":
                    smoothed(logp).sum(),
                "the softmax normalises each row (over the K classes, axis 1), not each column":
                    smoothed(logp0).mean(),
            }
            _first_slip(got, slips, what, expected)
    return count


@exercise
def check_cross_entropy_grad(answer):
    """Check ``answer(logits, target)`` -> $\\partial L / \\partial z$ for the mean
    cross-entropy (no smoothing), an (N, K) array: $(\\text{softmax}(z) - \\text{onehot}(t))/N$.

    Cases: the five seeded logit arrays (one of magnitude 1000), against the gradient the
    library's backward pass gives.

    Args:
        answer: the learner's ``cross_entropy_grad(z, t)``.

    Returns:
        The number of cases checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    cases = _cases()
    for z, t, name in cases:
        n, k = z.shape
        leaf = Tensor(z.copy(), requires_grad=True)
        cross_entropy(leaf, t).backward()
        expected = leaf.grad
        got = answer(z.copy(), t.copy())
        g = np.asarray(getattr(got, "data", got), dtype=np.float64)
        if g.shape == expected.shape and not np.all(np.isfinite(g)):
            raise Hint(f"{name}: your gradient has non-finite values; exp of a large logit "
                       "overflows: subtract each row's max before exp")
        onehot = np.eye(k)[t]
        p, p0 = np.exp(_log_softmax(z, 1)), np.exp(_log_softmax(z, 0))
        slips = {
            f"missing the 1/N: the loss is the mean over the {n} samples, so each row's "
            "gradient is (p - onehot) / N": p - onehot,
            "the sign is flipped: the gradient is p - onehot (raising the true logit lowers the "
            "loss)": (onehot - p) / n,
            "the softmax normalises each row (over the classes, axis 1), not each column":
                (p0 - onehot) / n,
        }
        _first_slip(g, slips, name, expected)
    return len(cases)


@exercise
def check_focal_loss(answer):
    """Check ``answer(logits, target, gamma)`` -> the mean over the N samples of
    $-(1 - p_t)^\\gamma \\log p_t$, with $p_t$ the softmax probability of the true class.

    Cases: the five seeded logit arrays (one of magnitude 1000) with gamma 0 (cross-entropy),
    0.5, 2 and 5, against ``F.focal_loss(logits, target, gamma=gamma)``.

    Args:
        answer: the learner's ``focal(z, t, gamma)``.

    Returns:
        The number of cases checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    count = 0
    for z, t, name in _cases():
        n, k = z.shape
        logp = _log_softmax(z, 1)
        logpt = logp[np.arange(n), t]
        pt = np.exp(logpt)
        for gamma in (0.0, 2.0, 0.5, 5.0):
            count += 1
            what = f"{name}, gamma = {gamma}"
            expected = focal_loss(Tensor(z), t, gamma=gamma).item()
            got = _number(answer(z.copy(), t.copy(), gamma), what)
            slips = {
                "the factor is (1 - p_t)^gamma, small for easy examples (p_t near 1), not "
                "p_t^gamma": (-(pt ** gamma) * logpt).mean(),
                "only the true class's term counts, -(1 - p_t)^gamma log p_t; you summed over "
                "all classes": (-((1 - np.exp(logp)) ** gamma) * logp).sum(1).mean(),
                f"that is the sum over the {n} samples; the loss is their mean":
                    (-((1 - pt) ** gamma) * logpt).sum(),
            }
            _first_slip(got, slips, what, expected, otherwise="with gamma = 0 focal loss is "
                        "plain cross-entropy, -mean(log p_t): check that case first"
                        if gamma == 0 else "")
    return count
