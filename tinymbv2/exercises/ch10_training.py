r"""Checks for the exercises of chapter 10. Training MobileNetV2 on MNIST.

* ``check_train_step``: one training step (forward, loss, ``zero_grad``, ``backward``,
  ``step``), three times in a row, against the same steps on a copy of the model;
* ``check_confusion_matrix``: ``C[i, j]`` counts the samples of true class ``i`` predicted as
  ``j``, against [confusion_matrix][tinymbv2.evaluation.metrics.confusion_matrix];
* ``check_precision_recall``: per-class precision (column sums) and recall (row sums), 0 where
  a class is never predicted or never present, against
  [precision_recall][tinymbv2.evaluation.metrics.precision_recall];
* ``check_seed_spread``: the mean, the sample standard deviation (divided by k - 1) and the
  difference $2\sqrt2\,\sigma$ two single runs must exceed, from the accuracies of k seeds.
"""
from __future__ import annotations

import copy
from numbers import Real

import numpy as np

from .. import functional as F
from .. import nn, optim
from ..autograd import Tensor
from ..evaluation import confusion_matrix, precision_recall
from .checking import Hint, exercise, expect_close, expect_equal

__all__ = ["check_train_step", "check_confusion_matrix", "check_precision_recall", "check_seed_spread"]


def _small_model(seed: int) -> nn.Module:
    """A two-layer network in float64: quick, and exact enough to compare steps."""
    gen = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(6, 16, dtype=np.float64), nn.ReLU6(),
                          nn.Linear(16, 4, dtype=np.float64))
    for layer in (model[0], model[2]):
        layer.reset_parameters(generator=gen)
    return model


def _reference_step(model, optimizer, images, labels, zero_grad: bool = True) -> float:
    loss = F.cross_entropy(model(Tensor(images)), labels)
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _weights(model) -> dict:
    return {name: p.data.copy() for name, p in model.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return all(np.allclose(a[k], b[k], rtol=1e-9, atol=1e-12) for k in a)


@exercise
def check_train_step(answer) -> int:
    """``answer(model, optimizer, images, labels) -> loss``: one step of training on one batch
    with cross-entropy; returns the batch's loss (before the step) as a Python float.

    Three steps on three batches with SGD (momentum 0.9), each compared with the same step on
    a copy of the model: the loss returned and every weight after the step. Gradients left
    over from the previous step (no ``zero_grad``), weights that do not move (no ``step``, or
    ``zero_grad`` between ``backward`` and ``step``) and a loss returned as a Tensor get a hint
    saying so.

    Args:
        answer: your function, ``train_step(model, optimizer, images, labels)`` -> the loss.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(10)
    model = _small_model(10)
    twin, leaky = copy.deepcopy(model), copy.deepcopy(model)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_opt = optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    leaky_opt = optim.SGD(leaky.parameters(), lr=0.1, momentum=0.9)
    steps = 3
    for step in range(1, steps + 1):
        images, labels = rng.normal(size=(8, 6)), rng.integers(0, 4, size=8)
        what = f"step {step}"
        before = _weights(model)
        loss = answer(model, opt, images.copy(), labels.copy())
        want = _reference_step(twin, twin_opt, images, labels)
        _reference_step(leaky, leaky_opt, images, labels, zero_grad=False)
        if isinstance(loss, Tensor) or not isinstance(loss, Real):
            raise Hint(f"{what}: return the loss as a number (loss.item()), got "
                       f"{type(loss).__name__}")
        expect_close(float(loss), want, f"{what}: the loss returned (the batch's, before the step)",
                     rtol=1e-9)
        after = _weights(model)
        if _same(after, before):
            raise Hint(f"{what}: the weights did not move; the step is optimizer.zero_grad(), "
                       "loss.backward(), optimizer.step(), in that order")
        if step > 1 and not _same(after, _weights(twin)) and _same(after, _weights(leaky)):
            raise Hint(f"{what}: the gradients of the previous step were added to this one's; "
                       "call optimizer.zero_grad() before loss.backward()")
        for name, value in _weights(twin).items():
            expect_close(after[name], value, f"{what}: weight {name} after the step", rtol=1e-9)
    return steps


@exercise
def check_confusion_matrix(answer) -> int:
    """``answer(predictions, labels, num_classes) -> C``, an integer array of shape
    ``(num_classes, num_classes)`` with ``C[i, j]`` the number of samples of true class ``i``
    predicted as ``j``.

    Cases: random predictions, a class that never occurs, many repeats of the same pair.
    A transposed matrix, a size taken from the data, and repeated pairs counted once (the
    trap of ``C[labels, predictions] += 1``) get a hint saying so.

    Args:
        answer: your function, ``confusion_matrix(predictions, labels, num_classes)``
            -> ``C``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(11)
    cases = [
        (rng.integers(0, 3, 20), rng.integers(0, 3, 20), 3),
        (np.array([0, 1, 1, 2, 2, 2]), np.array([0, 2, 1, 2, 0, 2]), 3),
        (rng.integers(0, 4, 50), rng.integers(0, 4, 50), 5),  # class 4 never occurs
        (np.array([1, 1, 1, 0]), np.array([1, 1, 1, 1]), 2),
        (rng.integers(0, 10, 500), rng.integers(0, 10, 500), 10),
    ]
    for k, (predictions, labels, num_classes) in enumerate(cases, 1):
        what = f"case {k} ({len(labels)} samples, {num_classes} classes)"
        got = np.asarray(answer(predictions.copy(), labels.copy(), num_classes))
        want = confusion_matrix(predictions, labels, num_classes)
        if got.shape != want.shape:
            raise Hint(f"{what}: shape {got.shape}, expected {want.shape}; size the matrix with "
                       "num_classes (a class may never occur in the data)")
        if np.array_equal(got, want):
            continue
        if np.array_equal(got, want.T):
            raise Hint(f"{what}: your matrix is transposed; row i is the true class, column j "
                       "the predicted one")
        if np.array_equal(got, (want > 0).astype(want.dtype)):
            raise Hint(f"{what}: each (true, predicted) pair was counted once however often it "
                       "occurs; C[labels, predictions] += 1 does not add twice to the same cell: "
                       "use np.add.at, or a loop")
        i, j = (int(v) for v in np.argwhere(got != want)[0])
        expect_equal(int(got[i, j]), int(want[i, j]),
                     f"{what}: C[{i}, {j}] (true {i}, predicted {j})")
    return len(cases)


@exercise
def check_precision_recall(answer) -> int:
    """``answer(cm) -> (precision, recall)``, two float arrays of shape ``(K,)`` from a
    confusion matrix: ``precision[j] = C[j, j] / sum_i C[i, j]`` (of the samples predicted
    ``j``, the share that are ``j``), ``recall[i] = C[i, i] / sum_j C[i, j]`` (of the samples of
    class ``i``, the share found); 0, not NaN, when the sum is 0.

    Cases: random matrices, one with a class never predicted (an empty column) and one never
    present (an empty row). Swapped results and NaN for 0/0 get a hint saying so.

    Args:
        answer: your function, ``precision_recall(cm)`` -> ``(precision, recall)``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(12)
    never_predicted = rng.integers(0, 9, size=(4, 4))
    never_predicted[:, 2] = 0
    never_present = rng.integers(0, 9, size=(5, 5))
    never_present[3, :] = 0
    cases = [rng.integers(0, 20, size=(3, 3)), np.diag([5, 7]) + 1, never_predicted,
             never_present, rng.integers(0, 50, size=(10, 10))]
    for k, cm in enumerate(cases, 1):
        what = f"confusion matrix {k} ({cm.shape[0]} classes)"
        with np.errstate(divide="ignore", invalid="ignore"):
            result = answer(cm.copy())
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise Hint(f"{what}: return a pair (precision, recall), got {type(result).__name__}")
        precision, recall = (np.asarray(v, dtype=np.float64) for v in result)
        want_p, want_r = precision_recall(cm)
        for name, got in (("precision", precision), ("recall", recall)):
            if np.isnan(got).any():
                c = int(np.flatnonzero(np.isnan(got))[0])
                empty = "never predicted" if name == "precision" else "never present"
                raise Hint(f"{what}: your {name} of class {c} is NaN; class {c} is {empty}, "
                           "so it is 0/0: report 0")
        if (precision.shape == recall.shape == want_p.shape and np.allclose(precision, want_r)
                and np.allclose(recall, want_p) and not np.allclose(precision, want_p)):
            raise Hint(f"{what}: precision and recall are swapped; precision divides by the "
                       "column sum (all samples predicted as the class), recall by the row sum "
                       "(all samples of the class)")
        expect_close(precision, want_p, f"{what}: precision")
        expect_close(recall, want_r, f"{what}: recall")
    return len(cases)


@exercise
def check_seed_spread(answer) -> int:
    r"""``answer(accuracies) -> (mean, std, threshold)`` from the test accuracies of k >= 2 runs
    of one recipe that differ only in their seed: the mean $\bar a$; the sample standard
    deviation $\sigma = \sqrt{\sum_i (a_i - \bar a)^2 / (k - 1)}$; and the difference
    $2\sqrt2\,\sigma$ that two single runs of the recipe exceed only about one time in twenty
    (their difference has variance $\sigma^2 + \sigma^2$).

    Cases: two, three, five and eight runs, as a list and as an array. A standard deviation
    divided by k (NumPy's default, ``ddof=0``) and a threshold of $2\sigma$ (one run's spread,
    not a difference's) get a hint saying so.

    Args:
        answer: your function, ``seed_spread(accuracies)`` -> ``(mean, std, threshold)``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(13)
    cases = [[0.95, 0.97], list(0.9 + 0.05 * rng.random(3)), 0.96 + 0.01 * rng.standard_normal(5),
             0.8 + 0.1 * rng.random(8)]
    for k, accuracies in enumerate(cases, 1):
        a = np.asarray(accuracies, dtype=np.float64)
        what = f"case {k} ({len(a)} runs)"
        result = answer(accuracies.copy())
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            raise Hint(f"{what}: return a triple (mean, std, threshold), got {type(result).__name__}")
        mean, std, threshold = (float(v) for v in result)
        want_std = float(a.std(ddof=1))
        expect_close(mean, a.mean(), f"{what}: mean")
        if np.isclose(std, a.std(ddof=0)) and not np.isclose(std, want_std):
            raise Hint(f"{what}: your standard deviation divides by k = {len(a)}; the sample "
                       f"standard deviation divides by k - 1 = {len(a) - 1} (np.std(a, ddof=1)), "
                       "since the mean was estimated from the same runs")
        expect_close(std, want_std, f"{what}: standard deviation")
        if np.isclose(threshold, 2 * want_std):
            raise Hint(f"{what}: 2 sigma is the spread of one run around the mean; the "
                       "difference of two independent runs has variance 2 sigma^2, so its "
                       "threshold is 2 sqrt(2) sigma")
        expect_close(threshold, 2 * np.sqrt(2) * want_std, f"{what}: threshold")
    return len(cases)
