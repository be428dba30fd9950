"""tinymbv2.train.report: the reading of learning curves, and what a run writes."""
from __future__ import annotations

import json

import numpy as np

from tinymbv2.train import diagnose
from tinymbv2.train.report import run_metrics, write_report


def test_diagnosis_reads_the_curves():
    under = {"train_acc": [0.3, 0.4], "val_acc": [0.3, 0.4], "val_loss": [2.0, 1.9]}
    over = {"train_acc": [0.9, 0.99, 1.0], "val_acc": [0.85, 0.86, 0.84],
            "val_loss": [0.4, 0.35, 0.6]}
    good = {"train_acc": [0.9, 0.98], "val_acc": [0.89, 0.97], "val_loss": [0.3, 0.1]}
    assert diagnose(under).startswith("Under-fitting")
    assert diagnose(over).startswith("Over-fitting") and "epoch 2" in diagnose(over)
    assert diagnose(good).startswith("Good fit")


def test_run_metrics_and_write_report(tmp_path):
    history = {"epoch": [1, 2], "train_loss": [1.0, 0.5], "train_acc": [0.6, 0.95],
               "val_loss": [0.9, 0.4], "val_acc": [0.7, 0.93], "lr": [0.1, 0.05],
               "seconds": [1.0, 1.0], "best_epoch": 2, "best_val_acc": 0.93,
               "best_state": {"w": np.ones(2)}}
    labels = np.array([0, 0, 1, 1, 2])
    result = {"accuracy": 0.8, "loss": 0.5, "predictions": np.array([0, 1, 1, 1, 2])}
    config = {"num_classes": 3, "class_names": ["a", "b", "c"], "fuse": True}
    metrics = run_metrics(history, result, labels, 0.6, config, train_seconds=2.5)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert metrics["per_class_precision"] == [1.0, 2 / 3, 1.0]
    assert metrics["per_class_recall"] == [0.5, 1.0, 1.0]
    assert (metrics["test_accuracy"], metrics["best_val_test_accuracy"]) == (0.8, 0.6)
    assert "best_state" not in metrics["history"] and metrics["config"] is config
    assert metrics["diagnosis"] == diagnose(history, chance=1 / 3)
    assert list(metrics)[-1] == "train_seconds" and metrics["train_seconds"] == 2.5
    write_report(tmp_path, metrics)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for name in ("learning_curves.png", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 1000
