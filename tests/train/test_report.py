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


def test_a_diverged_run_gets_no_fitting_advice():
    nan = float("nan")
    curves = {"train_acc": [0.1, 0.1], "val_acc": [0.1, 0.1], "val_loss": [nan, nan],
              "train_loss": [nan, nan]}  # what issue 20 saw: "Under-fitting ... raise the lr"
    assert diagnose(curves, chance=0.1).startswith("Diverged: the loss or the weights became")
    record = {"epoch": 2, "step": 5, "steps": 17, "what": "loss", "lr": 3.0, "loss": "nan"}
    finite = {"train_acc": [0.3], "val_acc": [0.3], "val_loss": [2.0], "train_loss": [2.0]}
    text = diagnose(finite, chance=0.1, diverged=record)
    assert text.startswith("Diverged:") and "at epoch 2, step 5" in text
    assert "Lower the learning rate" in text and "Under" not in text and "raise" not in text


def test_a_loss_far_above_a_guess_reads_as_too_large_steps_not_under_fitting():
    overshoot = {"train_acc": [0.1, 0.11], "val_acc": [0.1, 0.1], "val_loss": [90.0, 80.0],
                 "train_loss": [15.3, 50.5]}  # digits at lr 5: finite, but not learning
    text = diagnose(overshoot, chance=0.1)
    assert text.startswith("Unstable:") and "50.5" in text and "2.30" in text
    assert "last epoch's training loss is 50.5" in text
    assert "Lower the learning rate" in text
    slow = {"train_acc": [0.2, 0.3], "val_acc": [0.2, 0.3], "val_loss": [2.2, 2.0],
            "train_loss": [2.3, 2.1]}  # low but falling from ln 10: too few steps
    assert diagnose(slow, chance=0.1).startswith("Under-fitting")


def test_metrics_json_is_strict_json_for_a_diverged_run(tmp_path):
    from tinymbv2.train.report import diverged_metrics

    history = {"epoch": [1], "train_loss": [float("inf")], "train_acc": [0.1],
               "val_loss": [float("nan")], "val_acc": [0.1], "lr": [1.0], "seconds": [1.0],
               "best_epoch": 1, "best_val_acc": 0.1, "best_state": {"w": np.ones(2)}}
    record = {"epoch": 2, "step": 3, "steps": 4, "what": "loss", "lr": 1.0, "loss": "nan"}
    config = {"num_classes": 3, "class_names": ["a", "b", "c"]}
    metrics = diverged_metrics(history, record, config, train_seconds=1.5)
    assert metrics["diverged"] is record and metrics["test_accuracy"] is None
    write_report(tmp_path, metrics)

    def refuse(name):
        raise AssertionError(f"bare {name} in metrics.json")

    saved = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert saved["history"]["train_loss"] == [None] and saved["history"]["val_loss"] == [None]
    assert saved["diverged"] == record and saved["diagnosis"].startswith("Diverged:")
    assert (tmp_path / "learning_curves.png").exists()
    assert not (tmp_path / "confusion_matrix.png").exists()  # nothing was tested


def test_unstable_reads_the_last_epochs_cross_entropy_only():
    recovered = {"train_acc": [0.1, 0.3], "val_acc": [0.1, 0.3], "val_loss": [9.0, 2.0],
                 "train_loss": [40.0, 2.1]}  # an epoch-1 spike, then a loss below ln 10 * 2
    assert diagnose(recovered, chance=0.1).startswith("Under-fitting")
    high = {"train_acc": [0.1, 0.1], "val_acc": [0.1, 0.1], "val_loss": [9.0, 9.0],
            "train_loss": [2.0, 9.0]}
    assert diagnose(high, chance=0.1).startswith("Unstable:")
    assert diagnose(high, chance=0.1, loss="ce").startswith("Unstable:")
    for loss in ("focal", "dice"):  # other scales than ln K: no reading of the size of the loss
        assert diagnose(high, chance=0.1, loss=loss).startswith("Under-fitting")
    metrics = run_metrics(high, {"accuracy": 0.1, "loss": 9.0, "predictions": np.array([0, 1])},
                          np.array([1, 0]), 0.1, {"num_classes": 10, "loss": "focal",
                                                  "class_names": list("0123456789")}, 1.0)
    assert metrics["diagnosis"].startswith("Under-fitting")  # run_metrics passes the run's loss


def test_write_report_removes_the_plots_it_does_not_draw(tmp_path):
    from tinymbv2.train.report import diverged_metrics

    for name in ("learning_curves.png", "confusion_matrix.png", "detections.png", "masks.png"):  # an earlier run's
        (tmp_path / name).write_bytes(b"earlier run")
    config = {"num_classes": 3, "class_names": ["a", "b", "c"]}
    record = {"epoch": 1, "step": 3, "steps": 4, "what": "loss", "lr": 1.0, "loss": "nan"}
    empty = {"epoch": [], "train_loss": [], "train_acc": [], "val_loss": [], "val_acc": []}
    write_report(tmp_path, diverged_metrics(empty, record, config, train_seconds=0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    one = {"epoch": [1], "train_loss": [1.0], "train_acc": [0.5], "val_loss": [1.0],
           "val_acc": [0.5]}
    (tmp_path / "confusion_matrix.png").write_bytes(b"earlier run")
    write_report(tmp_path, diverged_metrics(one, dict(record, epoch=2), config, 0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning_curves.png", "metrics.json"]
    assert (tmp_path / "learning_curves.png").read_bytes() != b"earlier run"  # this run's


def test_writing_the_plots_leaves_matplotlibs_backend_alone(tmp_path):
    """A notebook that trains a run must still show its own figures afterwards."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")                       # stands for the notebook's inline backend
    try:
        history = {"epoch": [1], "train_loss": [1.0], "train_acc": [0.5], "val_loss": [0.9],
                   "val_acc": [0.6], "lr": [0.1], "seconds": [1.0], "best_epoch": 1, "best_val_acc": 0.6}
        result = {"accuracy": 0.5, "loss": 0.9, "predictions": np.array([0, 1])}
        config = {"num_classes": 2, "class_names": ["a", "b"]}
        write_report(tmp_path, run_metrics(history, result, np.array([0, 0]), 0.5, config, 1.0))
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)


def test_a_confusion_cell_shows_a_pixel_count_short():
    from tinymbv2.train.plots import count_label

    assert [count_label(n) for n in (0, 9999, 10_000, 12_345, 999_499, 999_500, 7_512_345)] == [
        "0", "9999", "10k", "12k", "999k", "1.0M", "7.5M"]
