"""Classification metrics: accuracy, top-k accuracy, the confusion matrix, precision and recall.

All functions take NumPy arrays: ``labels`` (N,) int, ``predictions`` (N,) int
or ``scores`` (N, K) logits/probabilities.
"""
from __future__ import annotations

import numpy as np


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to the label.

    Args:
        predictions: The predicted classes (N,).
        labels: The true classes (N,).

    Returns:
        The accuracy, in [0, 1].
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"accuracy: expected predictions and labels of one shape, got "
            f"{predictions.shape} and {labels.shape}"
        )
    return float(np.mean(predictions == labels)) if labels.size else 0.0


def top_k_accuracy(scores, labels, k: int = 5) -> float:
    """Fraction of samples whose label is among the ``k`` highest scores.

    Args:
        scores: Logits or probabilities (N, K).
        labels: The true classes (N,).
        k: How many of the highest scores count.

    Returns:
        The top-k accuracy, in [0, 1].
    """
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
    """$C_{ij}$ = the number of samples of true class $i$ predicted as class $j$.

    Args:
        predictions: The predicted classes (N,).
        labels: The true classes (N,).
        num_classes: K.

    Returns:
        C, an int64 (K, K) array.
    """
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision $TP / (TP + FP)$ (column sums) and recall $TP / (TP + FN)$ (row sums).

    A class never predicted has precision 0 (not NaN), one never present recall 0.

    Args:
        cm: The confusion matrix (K, K), rows the true classes.

    Returns:
        ``(precision, recall)``, two (K,) arrays.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    return precision, recall
