"""Classification metrics and a plain-language reading of learning curves.

All functions take NumPy arrays: ``labels`` (N,) int, ``predictions`` (N,) int
or ``scores`` (N, K) logits/probabilities.
"""
from __future__ import annotations

import numpy as np


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to the label."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"accuracy: expected predictions and labels of one shape, got "
            f"{predictions.shape} and {labels.shape}"
        )
    return float(np.mean(predictions == labels)) if labels.size else 0.0


def top_k_accuracy(scores, labels, k: int = 5) -> float:
    """Fraction of samples whose label is among the k highest scores."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"top_k_accuracy: expected scores (N, K) and labels (N,), got {scores.shape} "
            f"and {labels.shape}"
        )
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(predictions, labels, num_classes: int) -> np.ndarray:
    """C[i, j] = number of samples of true class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision TP/(TP+FP) (column sums) and recall TP/(TP+FN) (row sums).

    A class never predicted has precision 0 (not NaN), one never present recall 0.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    return precision, recall


def diagnose(history: dict, chance: float | None = None) -> str:
    """Read the learning curves the way seed section 3.9 intends, but correctly.

    history: lists ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc`` per epoch.
    * under-fitting: training accuracy itself stays low (the model cannot fit the
      data: more capacity, more epochs, a higher learning rate);
    * over-fitting: training keeps improving while validation loss rises from its
      minimum, or a large train/val accuracy gap (more data, augmentation,
      weight decay, dropout, early stopping at the best epoch);
    * otherwise a good fit.
    """
    train_acc, val_acc = history.get("train_acc", []), history.get("val_acc", [])
    val_loss = history.get("val_loss", [])
    if not train_acc or not val_acc:
        return "No curves to read yet: train at least one epoch with a validation split."
    best = int(np.argmin(val_loss)) if val_loss else len(val_acc) - 1
    gap = train_acc[-1] - val_acc[-1]
    floor = 0.0 if chance is None else chance
    if train_acc[-1] < max(0.8, floor + 0.3):
        return (
            f"Under-fitting: training accuracy is only {train_acc[-1]:.1%}. The model does not "
            "fit even the data it sees; train longer, raise the learning rate or the width."
        )
    rising = val_loss and best < len(val_loss) - 1 and val_loss[-1] > 1.1 * val_loss[best]
    if gap > 0.05 or rising:
        return (
            f"Over-fitting: training accuracy {train_acc[-1]:.1%} vs validation "
            f"{val_acc[-1]:.1%}; validation loss was lowest at epoch {best + 1}. Add "
            "augmentation or weight decay, or keep the best-epoch checkpoint."
        )
    return (
        f"Good fit: training {train_acc[-1]:.1%} and validation {val_acc[-1]:.1%} are close "
        "and validation loss has not turned up."
    )
