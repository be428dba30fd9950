"""tinymbv2.evaluation.metrics: accuracy, top-k, confusion matrix, precision and recall."""
from __future__ import annotations

import numpy as np
import pytest

import tinymbv2.train
from tinymbv2.evaluation import accuracy, confusion_matrix, precision_recall, top_k_accuracy


def test_accuracy_topk_confusion_precision_recall():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    assert accuracy(preds, labels) == pytest.approx(4 / 6)
    cm = confusion_matrix(preds, labels, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    precision, recall = precision_recall(cm)
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(recall, [1 / 2, 1.0, 1 / 2])
    scores = np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    assert top_k_accuracy(scores, np.array([2, 2, 0]), k=1) == 0.0
    assert top_k_accuracy(scores, np.array([2, 2, 0]), k=2) == pytest.approx(1 / 3)
    assert top_k_accuracy(scores, np.array([2, 2, 0]), k=3) == 1.0


def test_precision_of_a_never_predicted_class_is_zero_not_nan():
    precision, recall = precision_recall(confusion_matrix([0, 0], [0, 1], 2))
    assert np.all(np.isfinite(precision)) and precision[1] == 0.0 and recall[1] == 0.0


def test_the_training_package_re_exports_the_metrics():
    import tinymbv2.evaluation as evaluation

    for name in ("accuracy", "top_k_accuracy", "confusion_matrix", "precision_recall", "evaluate"):
        assert getattr(tinymbv2.train, name) is getattr(evaluation, name)
