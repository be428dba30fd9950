r"""Segmentation metrics: the per-pixel confusion matrix and what it scores (IoU, mIoU, accuracy).

A segmenter labels every pixel, so its confusion matrix counts pixels: $C_{ij}$ is the number
of pixels of true class $i$ predicted as class $j$. From it, per class $c$, with
$TP_c = C_{cc}$, $FP_c = \sum_i C_{ic} - C_{cc}$ (column) and $FN_c = \sum_j C_{cj} - C_{cc}$
(row):

$$\text{IoU}_c = \frac{TP_c}{TP_c + FP_c + FN_c},$$

the overlap of the predicted and the true region of class $c$ over their union. The mean IoU
(PASCAL VOC's score, Table 7's "mIOU") averages it over the classes; the pixel accuracy is
$\sum_c TP_c / \sum_{ij} C_{ij}$, which the background dominates.
"""
from __future__ import annotations

import numpy as np


def segmentation_confusion(pred, truth, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """$C_{ij}$ = the number of pixels of true class $i$ predicted as class $j$.

    Counted with one ``np.bincount`` of $i K + j$ rather than
    [confusion_matrix][tinymbv2.evaluation.metrics.confusion_matrix]'s ``np.add.at``, which is
    many times slower on the millions of pixels of a split of scenes; the counts are the same.

    Args:
        pred: The predicted classes, any shape ((N, H, W) or (H, W)), integers in [0, K).
        truth: The true classes, the same shape, in [0, K) or ``ignore_index``.
        num_classes: K.
        ignore_index: A true value whose pixels are not counted (None: every pixel counts).

    Returns:
        C, an int64 (K, K) array; rows the true classes, columns the predictions.

    Raises:
        ValueError: Shapes that differ, a class outside [0, K), or K < 1.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"segmentation_confusion: expected num_classes an integer >= 1, got {num_classes!r}")
    if pred.shape != truth.shape:
        raise ValueError(f"segmentation_confusion: expected pred and truth of one shape, got "
                         f"{pred.shape} and {truth.shape}")
    for name, array in (("pred", pred), ("truth", truth)):
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"segmentation_confusion: expected {name} of integer classes, got "
                             f"dtype {array.dtype}")
    pred, truth = pred.ravel().astype(np.int64), truth.ravel().astype(np.int64)
    if ignore_index is not None:
        keep = truth != ignore_index
        pred, truth = pred[keep], truth[keep]
    for name, array in (("pred", pred), ("truth", truth)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            bad = array[(array < 0) | (array >= num_classes)][0]
            raise ValueError(f"segmentation_confusion: expected {name} classes in [0, "
                             f"{num_classes}){' or ignore_index' if name == 'truth' and ignore_index is not None else ''}, "
                             f"got {int(bad)}")
    counts = np.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def segmentation_scores(confusion) -> dict:
    r"""IoU per class, mean IoU, pixel accuracy and mean class accuracy of a confusion matrix.

    A class absent from both the truth and the predictions (its row and column are zero) has
    no IoU: NaN, left out of the mean. So the mean IoU averages over the classes present in
    the truth *or* the predictions; a class predicted but never true counts, with IoU 0. The
    mean class accuracy averages the recall $TP_c / \sum_j C_{cj}$ over the classes present
    in the truth.

    Args:
        confusion: C (K, K), rows the true classes, columns the predictions
            ([segmentation_confusion][tinymbv2.evaluation.segmentation_metrics.segmentation_confusion]).

    Returns:
        ``{"per_class_iou": (K,) float64 (NaN: a class in neither), "miou": the mean over the
        classes present (NaN if none), "pixel_accuracy": $\sum_c C_{cc} / \sum C$ (NaN for no
        pixel), "per_class_accuracy": (K,) recall (NaN: a class not in the truth),
        "mean_class_accuracy": their mean over the classes in the truth}``.

    Raises:
        ValueError: Not a square matrix, or a negative count.
    """
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1:
        raise ValueError(f"segmentation_scores: expected a square (K, K) confusion matrix, got "
                         f"shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError("segmentation_scores: expected counts >= 0 in the confusion matrix, got "
                         f"{cm.min()}")
    cm = cm.astype(np.float64)
    tp, true, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    union = true + predicted - tp
    iou = np.full(len(cm), np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    recall = np.full(len(cm), np.nan)
    np.divide(tp, true, out=recall, where=true > 0)
    total = cm.sum()

    def mean(values):
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    return {"per_class_iou": iou, "miou": mean(iou),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "per_class_accuracy": recall, "mean_class_accuracy": mean(recall)}
