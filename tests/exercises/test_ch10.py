"""Chapter 10's checks answer common wrong answers with the hint meant for them."""
import numpy as np

from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.exercises import (check_confusion_matrix, check_precision_recall, check_seed_spread,
                                check_train_step)


def step(model, optimizer, images, labels, order=("zero_grad", "backward", "step")):
    loss = F.cross_entropy(model(Tensor(images)), labels)
    calls = {"zero_grad": optimizer.zero_grad, "backward": loss.backward, "step": optimizer.step}
    for name in order:
        calls[name]()
    return loss.item()


def confusion(predictions, labels, k):
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, predictions), 1)
    return cm


def precision_recall(cm):
    hits = np.diag(cm).astype(float)
    predicted, present = cm.sum(axis=0), cm.sum(axis=1)
    return (np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0),
            np.divide(hits, present, out=np.zeros_like(hits), where=present > 0))


def test_train_step_hints():
    assert check_train_step(step).message == "correct (3 cases)"
    no_zero = check_train_step(lambda *a: step(*a, order=("backward", "step")))
    assert no_zero.message == ("not yet: step 2: the gradients of the previous step were added to "
                               "this one's; call optimizer.zero_grad() before loss.backward()")
    for order in (("zero_grad", "backward"), ("backward", "zero_grad", "step")):
        stuck = check_train_step(lambda *a, order=order: step(*a, order=order))
        assert stuck.message.startswith("not yet: step 1: the weights did not move")

    def returns_tensor(model, optimizer, images, labels):
        loss = F.cross_entropy(model(Tensor(images)), labels)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        return loss
    assert "return the loss as a number (loss.item()), got Tensor" in check_train_step(returns_tensor).message

    def loss_after(model, optimizer, images, labels):
        step(model, optimizer, images, labels)
        return F.cross_entropy(model(Tensor(images)), labels).item()
    assert "step 1: the loss returned (the batch's, before the step)" in check_train_step(loss_after).message

    def mse(model, optimizer, images, labels):      # another loss: the weights go elsewhere
        out = model(Tensor(images))
        loss = ((out - Tensor(np.eye(4)[labels])) ** 2).mean()
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        return F.cross_entropy(out, labels).item()
    assert "step 1: weight 0.weight after the step at index" in check_train_step(mse).message


def test_confusion_matrix_hints():
    assert check_confusion_matrix(confusion).message == "correct (5 cases)"
    assert "your matrix is transposed" in check_confusion_matrix(lambda p, t, k: confusion(p, t, k).T).message

    def fancy_index(predictions, labels, k):
        cm = np.zeros((k, k), dtype=np.int64)
        cm[labels, predictions] += 1
        return cm
    assert "C[labels, predictions] += 1 does not add twice" in check_confusion_matrix(fancy_index).message
    from_data = check_confusion_matrix(lambda p, t, k: confusion(p, t, max(p.max(), t.max()) + 1))
    assert from_data.message == ("not yet: case 3 (50 samples, 5 classes): shape (4, 4), expected (5, 5); "
                                 "size the matrix with num_classes (a class may never occur in the data)")
    off_by_one = check_confusion_matrix(lambda p, t, k: confusion(p, t, k) + np.eye(k, dtype=np.int64))
    assert "C[0, 0] (true 0, predicted 0): you gave" in off_by_one.message


def test_precision_recall_hints():
    assert check_precision_recall(precision_recall).message == "correct (5 cases)"
    assert "precision and recall are swapped" in check_precision_recall(lambda cm: precision_recall(cm)[::-1]).message
    nan = check_precision_recall(lambda cm: (np.diag(cm) / cm.sum(axis=0), np.diag(cm) / cm.sum(axis=1)))
    assert nan.message == ("not yet: confusion matrix 3 (4 classes): your precision of class 2 is NaN; "
                           "class 2 is never predicted, so it is 0/0: report 0")
    assert "return a pair (precision, recall)" in check_precision_recall(lambda cm: np.diag(cm)).message


def seed_spread(accuracies, ddof=1, factor=2 * np.sqrt(2)):
    a = np.asarray(accuracies)
    return a.mean(), a.std(ddof=ddof), factor * a.std(ddof=ddof)


def test_seed_spread_hints():
    assert check_seed_spread(seed_spread).message == "correct (4 cases)"
    population = check_seed_spread(lambda a: seed_spread(a, ddof=0))
    assert population.message.startswith("not yet: case 1 (2 runs): your standard deviation divides "
                                         "by k = 2; the sample standard deviation divides by k - 1 = 1")
    one_run = check_seed_spread(lambda a: seed_spread(a, factor=2))
    assert one_run.message.startswith("not yet: case 1 (2 runs): 2 sigma is the spread of one run")
    assert "return a triple (mean, std, threshold)" in check_seed_spread(lambda a: np.mean(a)).message
    off = check_seed_spread(lambda a: seed_spread(a, factor=3))
    assert off.message.startswith("not yet: case 1 (2 runs): threshold")
    shifted = check_seed_spread(lambda a: (np.mean(a) + 0.01, *seed_spread(a)[1:]))
    assert shifted.message.startswith("not yet: case 1 (2 runs): mean")
