"""Metrics, checkpoints (atomic, pickle-free) and search tables."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from tinymbv2.train import (accuracy, confusion_matrix, diagnose, grid, load_state,
                            precision_recall, random_configs, run_search, save_state,
                            top_k_accuracy)


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


def test_diagnosis_reads_the_curves():
    under = {"train_acc": [0.3, 0.4], "val_acc": [0.3, 0.4], "val_loss": [2.0, 1.9]}
    over = {"train_acc": [0.9, 0.99, 1.0], "val_acc": [0.85, 0.86, 0.84],
            "val_loss": [0.4, 0.35, 0.6]}
    good = {"train_acc": [0.9, 0.98], "val_acc": [0.89, 0.97], "val_loss": [0.3, 0.1]}
    assert diagnose(under).startswith("Under-fitting")
    assert diagnose(over).startswith("Over-fitting") and "epoch 2" in diagnose(over)
    assert diagnose(good).startswith("Good fit")


def test_state_round_trip_loads_without_pickle(tmp_path):
    state = {"model": {"w": np.arange(6.0).reshape(2, 3), "n": np.array(3, dtype=np.int64)},
             "opt": {"state": {0: {"buf": np.ones(2)}}, "groups": [{"lr": 0.1, "params": [0]}]},
             "epoch": 4, "name": "run", "none": None,
             "rng": {"state": {"state": 2**100, "inc": 7}}}
    path = save_state(tmp_path / "c.npz", state)
    with np.load(path, allow_pickle=False) as data:  # nothing pickled inside
        assert "model/w" in data.files
    back = load_state(path)
    np.testing.assert_array_equal(back["model"]["w"], state["model"]["w"])
    assert back["opt"]["state"][0]["buf"].tolist() == [1.0, 1.0]  # int keys survive
    assert back["epoch"] == 4 and back["none"] is None and back["rng"]["state"]["state"] == 2**100


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    path = save_state(tmp_path / "c.npz", {"a": np.ones(3)})
    with pytest.raises(TypeError, match="cannot store a object"):
        save_state(path, {"a": np.zeros(3), "bad": object()})
    np.testing.assert_array_equal(load_state(path)["a"], np.ones(3))
    assert os.listdir(tmp_path) == ["c.npz"]  # no temp file left behind


def test_loading_a_damaged_or_missing_file_names_it(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        load_state(bad)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_state(tmp_path / "missing.npz")


def test_grid_and_random_search_write_a_table(tmp_path):
    configs = grid({"lr": [0.1, 0.01], "width": [0.5, 1.0]})
    assert len(configs) == 4 and {"lr": 0.01, "width": 1.0} in configs
    drawn = random_configs({"lr": ("log", 1e-4, 1e-1), "batch": [32, 64]}, 20, seed=3)
    assert len(drawn) == 20 and all(1e-4 <= c["lr"] <= 1e-1 for c in drawn)
    assert drawn == random_configs({"lr": ("log", 1e-4, 1e-1), "batch": [32, 64]}, 20, seed=3)
    result = run_search(lambda c: {"val_acc": c["lr"] * c["width"]}, configs, tmp_path, log=None)
    assert result["best"]["lr"] == 0.1 and result["best"]["width"] == 1.0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 4 and set(rows[0]) == {"trial", "lr", "width", "val_acc"}
    assert json.loads((tmp_path / "best.json").read_text())["val_acc"] == pytest.approx(0.1)
