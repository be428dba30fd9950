r"""Mean average precision of a detector, computed as COCO's evaluation (``pycocotools``) does.

For one class and one IoU threshold $t$: sort every detection of that class over all images
by score (at most ``max_dets`` per image, the best); walk down the list, matching each
detection to the best-overlapping ground-truth box of its image not matched yet, if their
IoU is at least $t$ (a true positive), else it is a false positive. After $j$ detections,
recall is $TP_j / G$ ($G$ ground-truth boxes) and precision $TP_j / j$. Precision is made
non-increasing in recall (each value replaced by the largest at any higher recall), then
read at the 101 recalls $0, 0.01, \dots, 1$ (0 beyond the highest recall reached):

$$
\text{AP}_t = \frac{1}{101} \sum_{r \in \{0, 0.01, \dots, 1\}} \max_{r' \ge r} p(r'), \qquad
\text{mAP} = \text{mean over classes (and thresholds) of } \text{AP}_t.
$$

``map_50`` is the mean over classes at $t = 0.5$ (PASCAL VOC's threshold); ``map`` the mean
over classes and the ten thresholds $0.5, 0.55, \dots, 0.95$ (COCO's headline figure, which
also rewards tight boxes). A class without ground-truth boxes is left out of the means.
Every figure equals pycocotools' ``COCOeval`` (area range "all", ``maxDets=100``) on the
same detections.
"""
from __future__ import annotations

import numpy as np

from ..detection.boxes import box_iou

__all__ = ["COCO_IOU_THRESHOLDS", "RECALL_POINTS", "mean_average_precision"]

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def match_image(det_boxes, gt_boxes, thresholds) -> np.ndarray:
    """Which detections of one image and one class are true positives, per threshold.

    Detections (already sorted by decreasing score) take, in turn, the unmatched ground
    truth they overlap most, if that IoU is at least the threshold (COCOeval's greedy loop;
    a tie in IoU goes to the later ground-truth box, as there).

    Args:
        det_boxes: (D, 4) detections, best first.
        gt_boxes: (G, 4) ground-truth boxes.
        thresholds: (T,) IoU thresholds.

    Returns:
        (T, D) bool: true positive at each threshold.
    """
    tp = np.zeros((len(thresholds), len(det_boxes)), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(det_boxes, gt_boxes)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for d in range(len(det_boxes)):
            best, best_iou = -1, min(t, 1 - 1e-10)
            for g in range(len(gt_boxes)):
                if not taken[g] and iou[d, g] >= best_iou:
                    best, best_iou = g, iou[d, g]
            if best >= 0:
                taken[best] = True
                tp[ti, d] = True
    return tp


def average_precision(tp: np.ndarray, n_gt: int) -> float:
    """COCO's 101-point interpolated AP from the true-positive flags of score-sorted detections.

    Args:
        tp: (D,) bool, the detections of one class over all images, by decreasing score.
        n_gt: The ground-truth boxes of the class (> 0).

    Returns:
        AP in [0, 1].
    """
    tp_sum = np.cumsum(tp, dtype=np.float64)
    fp_sum = np.cumsum(~tp, dtype=np.float64)
    recall = tp_sum / n_gt
    precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]      # non-increasing in recall
    at = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.zeros(len(RECALL_POINTS))
    valid = at < len(precision)
    q[valid] = precision[at[valid]]
    return float(q.mean())


def mean_average_precision(detections, targets, num_classes: int, max_dets: int = 100,
                           thresholds=COCO_IOU_THRESHOLDS) -> dict:
    """COCO's mAP and mAP@0.5 of a detector's outputs on a set of images.

    Args:
        detections: One dict per image: ``"boxes"`` (D, 4) ``(x1, y1, x2, y2)``, ``"scores"``
            (D,), ``"labels"`` (D,) (as [postprocess_detections][tinymbv2.detection.postprocess.postprocess_detections] returns).
        targets: One dict per image: ``"boxes"`` (G, 4), ``"labels"`` (G,).
        num_classes: The classes, background (0) included; classes 1..num_classes-1 are scored.
        max_dets: The best detections of each image that count.
        thresholds: The IoU thresholds averaged over for ``map`` (COCO's ten).

    Returns:
        ``{"map": ..., "map_50": ..., "map_75": ..., "per_class_ap": {class: AP over the
        thresholds}, "per_class_ap_50": {class: AP at 0.5}}``; classes with no ground truth
        are absent.

    Raises:
        ValueError: Lists of detections and targets of different lengths.
    """
    if len(detections) != len(targets):
        raise ValueError(f"mean_average_precision: {len(detections)} detections for "
                         f"{len(targets)} images; expected one per image")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    ap = {}                                     # class -> (T,) AP per threshold
    for c in range(1, num_classes):
        scores, flags, n_gt = [], [], 0
        for det, tgt in zip(detections, targets):
            gt = np.asarray(tgt["boxes"], dtype=np.float64).reshape(-1, 4)[np.asarray(tgt["labels"]) == c]
            mine = np.flatnonzero(np.asarray(det["labels"]) == c)
            order = mine[np.argsort(-np.asarray(det["scores"])[mine], kind="mergesort")][:max_dets]
            boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)[order]
            scores.append(np.asarray(det["scores"], dtype=np.float64)[order])
            flags.append(match_image(boxes, gt, thresholds))
            n_gt += len(gt)
        if n_gt == 0:
            continue
        scores, flags = np.concatenate(scores), np.concatenate(flags, axis=1)
        order = np.argsort(-scores, kind="mergesort")
        ap[c] = np.array([average_precision(flags[t, order], n_gt) for t in range(len(thresholds))])
    at_50 = int(np.argmin(np.abs(thresholds - 0.5)))
    at_75 = int(np.argmin(np.abs(thresholds - 0.75)))
    classes = sorted(ap)
    return {
        "map": float(np.mean([ap[c].mean() for c in classes])) if classes else 0.0,
        "map_50": float(np.mean([ap[c][at_50] for c in classes])) if classes else 0.0,
        "map_75": float(np.mean([ap[c][at_75] for c in classes])) if classes else 0.0,
        "per_class_ap": {c: float(ap[c].mean()) for c in classes},
        "per_class_ap_50": {c: float(ap[c][at_50]) for c in classes},
    }
