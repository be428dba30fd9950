r"""From SSD's raw outputs to detections (torchvision's ``SSD.postprocess_detections``).

Per image: softmax over the classes of each default box; decode each box's offsets into a
box, clipped to the image; then for each class other than the background, keep the boxes
whose score exceeds ``score_thresh``, at most the ``topk_candidates`` best; finally
non-maximum suppression within each class, and the ``detections_per_img`` best overall.
"""
from __future__ import annotations

import numpy as np

from .box_coder import BoxCoder
from .boxes import batched_nms, check_boxes

__all__ = ["softmax", "clip_boxes_to_image", "postprocess_detections"]


def softmax(logits: np.ndarray) -> np.ndarray:
    r"""$\text{softmax}(z)_k = e^{z_k - \max z} / \sum_j e^{z_j - \max z}$ along the last axis.

    Args:
        logits: (..., K) scores.

    Returns:
        Probabilities of the same shape.
    """
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def clip_boxes_to_image(boxes, image_size) -> np.ndarray:
    """Boxes clamped into the image: x to [0, width], y to [0, height].

    Args:
        boxes: (N, 4) boxes ``(x1, y1, x2, y2)``.
        image_size: (height, width) in pixels.

    Returns:
        The clipped (N, 4) boxes.
    """
    b = check_boxes("clip_boxes_to_image", boxes).copy()
    height, width = image_size
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b


def postprocess_detections(cls_logits, bbox_regression, default_boxes, image_size,
                           score_thresh: float = 0.001, nms_thresh: float = 0.55,
                           topk_candidates: int = 300, detections_per_img: int = 300,
                           box_coder: BoxCoder | None = None) -> list[dict]:
    """The detections of each image, best first.

    The defaults are torchvision's SSDLite ones.

    Args:
        cls_logits: (N, A, K) class logits (an array; class 0 is the background).
        bbox_regression: (N, A, 4) predicted offsets.
        default_boxes: (A, 4) default boxes in pixels.
        image_size: (height, width) of the input images, for clipping.
        score_thresh: The least class probability a detection needs.
        nms_thresh: The IoU above which a lower-scored box of the same class is dropped.
        topk_candidates: The most boxes per class that enter NMS.
        detections_per_img: The most detections returned per image.
        box_coder: The offsets' encoding; None: SSD's weights (10, 10, 5, 5).

    Returns:
        One dict per image: ``"boxes"`` (D, 4), ``"scores"`` (D,), ``"labels"`` (D,) int64
        in [1, K), by decreasing score.

    Raises:
        ValueError: Outputs and default boxes whose shapes do not fit.
    """
    box_coder = box_coder or BoxCoder((10.0, 10.0, 5.0, 5.0))
    cls_logits, bbox_regression = np.asarray(cls_logits), np.asarray(bbox_regression)
    n, a, k = cls_logits.shape
    default_boxes = check_boxes("postprocess_detections", default_boxes, "default_boxes")
    if bbox_regression.shape != (n, a, 4) or len(default_boxes) != a:
        raise ValueError(f"postprocess_detections: expected bbox_regression {(n, a, 4)} and {a} "
                         f"default boxes for cls_logits {cls_logits.shape}, got "
                         f"{bbox_regression.shape} and {len(default_boxes)}")
    detections = []
    for logits, offsets in zip(cls_logits, bbox_regression):
        scores = softmax(logits)
        boxes = clip_boxes_to_image(box_coder.decode(offsets, default_boxes), image_size)
        kept_boxes, kept_scores, kept_labels = [], [], []
        for label in range(1, k):
            candidates = np.flatnonzero(scores[:, label] > score_thresh)
            score = scores[candidates, label]
            best = np.argsort(-score, kind="stable")[:topk_candidates]
            kept_boxes.append(boxes[candidates[best]])
            kept_scores.append(score[best])
            kept_labels.append(np.full(len(best), label, dtype=np.int64))
        boxes, scores, labels = (np.concatenate(kept_boxes), np.concatenate(kept_scores),
                                 np.concatenate(kept_labels))
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
        detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return detections
