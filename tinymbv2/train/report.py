"""What a training run tells: ``metrics.json``, the plots, and a reading of the curves.

``diagnose`` lives here, not beside the metrics of [tinymbv2.evaluation.metrics][]: those
score one model on one split, while ``diagnose`` reads a *training history*, the train
and validation curves over the epochs, which only a training run has.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..evaluation import confusion_matrix, precision_recall
from .plots import plot_confusion_matrix, plot_detections, plot_learning_curves, plot_masks


def run_metrics(history: dict, test_result: dict, test_labels, best_val_test_accuracy: float,
                config: dict, train_seconds: float) -> dict:
    """The content of ``metrics.json``.

    Test scores, per-class precision and recall, the confusion matrix, the history, its
    diagnosis and the saved configuration.

    Args:
        history: The training history ([fit][tinymbv2.train.trainer.fit]'s).
        test_result: What [evaluate][tinymbv2.evaluation.loop.evaluate] returned on the test
            split.
        test_labels: The test split's labels.
        best_val_test_accuracy: The test accuracy of the weights of the best validation epoch.
        config: The run's saved configuration
            ([saved_config][tinymbv2.train.config.saved_config]).
        train_seconds: The training time.

    Returns:
        The metrics, a dict.
    """
    num_classes = config["num_classes"]
    cm = confusion_matrix(test_result["predictions"], test_labels, num_classes)
    precision, recall = precision_recall(cm)
    return {
        "test_accuracy": test_result["accuracy"],
        "test_loss": test_result["loss"],
        "best_val_test_accuracy": best_val_test_accuracy,
        "per_class_precision": precision.tolist(),
        "per_class_recall": recall.tolist(),
        "confusion_matrix": cm.tolist(),
        "history": {k: v for k, v in history.items() if k != "best_state"},
        "diagnosis": diagnose(history, chance=1.0 / num_classes, loss=config.get("loss", "ce")),
        "diverged": None,
        "config": config,
        "train_seconds": train_seconds,
    }


def detection_run_metrics(history: dict, test_result: dict, best_val_test_map_50: float,
                          config: dict, train_seconds: float) -> dict:
    """The content of ``metrics.json`` for a detection run.

    Test mAP (COCO's, at 0.5 and 0.75) and per-class AP, the history and the saved
    configuration.

    Args:
        history: The training history.
        test_result: What [evaluate_detector][tinymbv2.evaluation.detection_loop.evaluate_detector]
            returned on the test scenes.
        best_val_test_map_50: The test mAP@0.5 of the weights of the best validation epoch.
        config: The run's saved configuration.
        train_seconds: The training time.

    Returns:
        The metrics, a dict.
    """
    names = config["class_names"]
    return {
        "test_map": test_result["map"],
        "test_map_50": test_result["map_50"],
        "test_map_75": test_result["map_75"],
        "test_loss": test_result["loss"],
        "best_val_test_map_50": best_val_test_map_50,
        "per_class_ap": {names[c]: ap for c, ap in test_result["per_class_ap"].items()},
        "per_class_ap_50": {names[c]: ap for c, ap in test_result["per_class_ap_50"].items()},
        **_scene_run_rest(history, "map50", "mAP@0.5", config, train_seconds),
    }


def segmentation_run_metrics(history: dict, test_result: dict, best_val_test_miou: float,
                             config: dict, train_seconds: float) -> dict:
    """The content of ``metrics.json`` for a segmentation run.

    Test mean IoU, IoU per class (None for a class in neither the test masks nor the
    predictions), pixel accuracy, mean class accuracy, the per-pixel confusion matrix, the
    history and the saved configuration.

    Args:
        history: The training history.
        test_result: What [evaluate_segmenter][tinymbv2.evaluation.segmentation_loop.evaluate_segmenter]
            returned on the test scenes.
        best_val_test_miou: The test mIoU of the weights of the best validation epoch.
        config: The run's saved configuration.
        train_seconds: The training time.

    Returns:
        The metrics, a dict.
    """
    names = config["class_names"]
    return {
        "test_miou": test_result["miou"],
        "test_pixel_accuracy": test_result["pixel_accuracy"],
        "test_mean_class_accuracy": test_result["mean_class_accuracy"],
        "test_loss": test_result["loss"],
        "best_val_test_miou": best_val_test_miou,
        "per_class_iou": {name: float(iou) for name, iou in zip(names, test_result["per_class_iou"])},
        "confusion_matrix": np.asarray(test_result["confusion"]).tolist(),
        **_scene_run_rest(history, "miou", "mIoU", config, train_seconds),
    }


def _scene_run_rest(history: dict, score: str, title: str, config: dict, train_seconds: float) -> dict:
    """What a detection and a segmentation run's metrics end with: the history, a one-line
    diagnosis (the best validation ``score``, named ``title``), the configuration, the time."""
    best = history.get("best_epoch")
    diagnosis = (f"Best validation {title} {history[f'best_val_{score}']:.3f} at epoch {best} of "
                 f"{len(history['train_loss'])}." if best else "No validation score yet.")
    return {"history": {k: v for k, v in history.items() if k != "best_state"},
            "diagnosis": diagnosis, "diverged": None, "config": config,
            "train_seconds": train_seconds}


def diverged_metrics(history: dict, diverged: dict, config: dict, train_seconds: float) -> dict:
    """The content of ``metrics.json`` for a run stopped by a non-finite loss or weights.

    No test scores (there are no trustworthy weights to score), the epochs finished
    before, and ``diverged``, which [diagnose][tinymbv2.train.report.diagnose] reads instead
    of the curves.

    Args:
        history: The epochs finished before.
        diverged: [TrainingDiverged.record][tinymbv2.train.trainer.TrainingDiverged.record]:
            epoch, step, what, lr.
        config: The run's saved configuration.
        train_seconds: The training time.

    Returns:
        The metrics, a dict.
    """
    return {
        "test_accuracy": None,
        "test_loss": None,
        "best_val_test_accuracy": None,
        "history": {k: v for k, v in history.items() if k != "best_state"},
        "diagnosis": diagnose(history, diverged=diverged),
        "diverged": diverged,
        "config": config,
        "train_seconds": train_seconds,
    }


# what write_report draws
PLOTS = ("learning_curves.png", "confusion_matrix.png", "detections.png", "masks.png")


def write_report(out, metrics: dict, scenes=None, masks=None) -> None:
    """Write ``learning_curves.png``, ``confusion_matrix.png`` (a classifier's; a segmenter's,
    of pixels), ``detections.png`` (a detector's) or ``masks.png`` (a segmenter's), and
    ``metrics.json`` into ``out``.

    A plot needs something to show: no learning curves before an epoch has finished, no
    confusion matrix for a diverged run. A plot not drawn is removed from ``out`` if it
    is there (an earlier run's, in the same folder), so that every file beside
    ``metrics.json`` belongs to it. ``metrics.json`` is strict JSON: a non-finite
    number is written as ``null`` (Python's ``json`` would write a bare ``NaN``, which
    other readers refuse).

    Args:
        out: The run's folder.
        metrics: What [run_metrics][tinymbv2.train.report.run_metrics],
            [detection_run_metrics][tinymbv2.train.report.detection_run_metrics],
            [segmentation_run_metrics][tinymbv2.train.report.segmentation_run_metrics] or
            [diverged_metrics][tinymbv2.train.report.diverged_metrics] returned.
        scenes: A detector's ``(test images in [0, 1], their detections, their targets)``,
            for ``detections.png``; None: no such plot.
        masks: A segmenter's ``(test images in [0, 1], their true masks, the predicted
            ones)``, for ``masks.png``; None: no such plot.
    """
    out = Path(out)
    curves, matrix, detections, drawn_masks = (out / name for name in PLOTS)
    if metrics["history"].get("train_loss"):
        plot_learning_curves(metrics["history"], curves)
    else:
        curves.unlink(missing_ok=True)
    if metrics.get("confusion_matrix") is not None:
        plot_confusion_matrix(np.array(metrics["confusion_matrix"]), matrix,
                              list(metrics["config"]["class_names"]))
    else:
        matrix.unlink(missing_ok=True)
    if scenes is not None:
        plot_detections(*scenes, list(metrics["config"]["class_names"]), detections)
    else:
        detections.unlink(missing_ok=True)
    if masks is not None:
        plot_masks(*masks, list(metrics["config"]["class_names"]), drawn_masks)
    else:
        drawn_masks.unlink(missing_ok=True)
    text = json.dumps(json_safe(metrics), indent=2, allow_nan=False)
    (out / "metrics.json").write_text(text + "\n")


def json_safe(value):
    """``value`` with every non-finite float (nan, inf) replaced by None, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def diagnose(history: dict, chance: float | None = None, diverged: dict | None = None,
             loss: str = "ce") -> str:
    r"""Read the learning curves the way seed section 3.9 intends, but correctly.

    * diverged (``diverged`` given, or a non-finite loss in the curves): no advice on
      fitting, whose curves mean nothing once the loss is inf or NaN; lower the lr;
    * unstable (``chance`` given, cross-entropy): training accuracy stays low while the
      last epoch's training loss is above twice a uniform guess's, $\ln(1 / \text{chance})$:
      the steps overshoot, lower the lr. The last epoch's, not the largest: an early spike
      that training recovered from is not instability. Only for cross-entropy, whose
      uniform guess scores $\ln K$; focal and dice losses have other scales;
    * under-fitting: training accuracy itself stays low (the model cannot fit the
      data: more capacity, more epochs, a higher learning rate);
    * over-fitting: training keeps improving while validation loss rises from its
      minimum, or a large train/val accuracy gap (more data, augmentation,
      weight decay, dropout, early stopping at the best epoch);
    * otherwise a good fit.

    Args:
        history: Lists ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc`` per epoch.
        chance: The accuracy of a uniform guess, 1 / K; None: no instability check.
        diverged: A diverged run's record; None: the run finished.
        loss: The loss the curves are of (``TrainConfig.loss``: ``"ce"``, ``"focal"``,
            ``"dice"``).

    Returns:
        The diagnosis, one paragraph.
    """
    train_acc, val_acc = history.get("train_acc", []), history.get("val_acc", [])
    val_loss = history.get("val_loss", [])
    curves = [v for key in ("train_loss", "val_loss", "train_acc", "val_acc")
              for v in history.get(key, [])]
    if diverged is not None or not all(v is not None and math.isfinite(v) for v in curves):
        where = (f" at epoch {diverged['epoch']}, step {diverged['step']}"
                 if diverged is not None else "")
        return (f"Diverged: the loss or the weights became inf or NaN{where}, so the curves "
                "say nothing about fitting. Lower the learning rate (a tenth is a good first "
                "try) and train again.")
    if not train_acc or not val_acc:
        return "No curves to read yet: train at least one epoch with a validation split."
    best = int(np.argmin(val_loss)) if val_loss else len(val_acc) - 1
    gap = train_acc[-1] - val_acc[-1]
    floor = 0.0 if chance is None else chance
    if train_acc[-1] < max(0.8, floor + 0.3):
        # a guess of 1/K for every class scores a loss of ln K; a training loss well above it
        # means the steps overshoot, and a higher learning rate would make that worse
        train_loss = history.get("train_loss", [])
        if (loss == "ce" and chance and train_loss
                and train_loss[-1] > 2 * math.log(1 / chance)):
            return (
                f"Unstable: training accuracy is only {train_acc[-1]:.1%} and the last epoch's "
                f"training loss is {train_loss[-1]:.3g}, above the {math.log(1 / chance):.2f} "
                "of a uniform guess: the steps overshoot. Lower the learning rate."
            )
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
