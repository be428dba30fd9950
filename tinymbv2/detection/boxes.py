r"""Box geometry and non-maximum suppression, as ``torchvision.ops`` computes them.

A box is a row ``(x1, y1, x2, y2)`` with $x_1 \le x_2$, $y_1 \le y_2$: an (N, 4) array holds
N boxes. The intersection over union of boxes $a$ and $b$ is

$$
\text{IoU}(a, b) = \frac{|a \cap b|}{|a| + |b| - |a \cap b|}, \qquad
|a \cap b| = \max(0, \min(a_{x_2}, b_{x_2}) - \max(a_{x_1}, b_{x_1}))
\cdot \max(0, \min(a_{y_2}, b_{y_2}) - \max(a_{y_1}, b_{y_1})),
$$

1 for equal boxes, 0 for disjoint ones. The arithmetic runs in the same order as
torchvision's, so the same inputs give the same bits, and NMS keeps the same boxes.
"""
from __future__ import annotations

from numbers import Real

import numpy as np

__all__ = ["box_area", "box_iou", "box_xyxy_to_cxcywh", "box_cxcywh_to_xyxy", "nms", "batched_nms"]


def check_boxes(fn: str, boxes, name: str = "boxes") -> np.ndarray:
    """``boxes`` as a floating (N, 4) array, or a clear error.

    Args:
        fn: The caller's name, for the error.
        boxes: An (N, 4) array-like of floats.
        name: The argument's name, for the error.

    Returns:
        The boxes as a NumPy array (float64 unless they came as float32).

    Raises:
        ValueError: Boxes of another shape.
    """
    b = np.asarray(boxes)
    if b.dtype.kind != "f":
        b = b.astype(np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{fn}: expected {name} as an (N, 4) array of (x1, y1, x2, y2), "
                         f"got shape {b.shape}")
    return b


def box_area(boxes) -> np.ndarray:
    """The areas $(x_2 - x_1)(y_2 - y_1)$ of (N, 4) boxes.

    Args:
        boxes: (N, 4) boxes ``(x1, y1, x2, y2)``.

    Returns:
        An (N,) array.
    """
    b = check_boxes("box_area", boxes)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_iou(boxes1, boxes2) -> np.ndarray:
    """The IoU of every pair: ``iou[i, j]`` for ``boxes1[i]`` and ``boxes2[j]``.

    Args:
        boxes1: (N, 4) boxes.
        boxes2: (M, 4) boxes.

    Returns:
        An (N, M) array with values in [0, 1].
    """
    a = check_boxes("box_iou", boxes1, "boxes1")
    b = check_boxes("box_iou", boxes2, "boxes2")
    area1, area2 = box_area(a), box_area(b)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])          # (N, M, 2)
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union


def box_xyxy_to_cxcywh(boxes) -> np.ndarray:
    """Corners to centre and size: ``(x1, y1, x2, y2) -> (cx, cy, w, h)``.

    Args:
        boxes: (N, 4) boxes ``(x1, y1, x2, y2)``.

    Returns:
        (N, 4) boxes ``(cx, cy, w, h)``.
    """
    b = check_boxes("box_xyxy_to_cxcywh", boxes)
    x1, y1, x2, y2 = b.T
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)


def box_cxcywh_to_xyxy(boxes) -> np.ndarray:
    """Centre and size to corners: ``(cx, cy, w, h) -> (x1, y1, x2, y2)``.

    Args:
        boxes: (N, 4) boxes ``(cx, cy, w, h)``.

    Returns:
        (N, 4) boxes ``(x1, y1, x2, y2)``.
    """
    b = check_boxes("box_cxcywh_to_xyxy", boxes)
    cx, cy, w, h = b.T
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)


def _check_scores(fn: str, boxes: np.ndarray, scores, iou_threshold) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 1 or s.shape[0] != boxes.shape[0]:
        raise ValueError(f"{fn}: expected scores of shape ({boxes.shape[0]},), one per box, "
                         f"got {s.shape}")
    if not isinstance(iou_threshold, Real) or not np.isfinite(iou_threshold):
        raise ValueError(f"{fn}: iou_threshold must be a finite number, got {iou_threshold!r}")
    return s


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Non-maximum suppression: the boxes kept, highest score first.

    Visit the boxes by decreasing score (ties: the lower index first); keep a box unless a
    box kept before it overlaps it with IoU > ``iou_threshold``. This is the loop of
    torchvision's CPU kernel; the IoU of the kept box against all later ones is computed at
    once, with the kernel's arithmetic.

    Args:
        boxes: (N, 4) boxes.
        scores: (N,) scores.
        iou_threshold: Boxes overlapping a kept one by more than this are dropped.

    Returns:
        The kept indices into ``boxes``, an int64 array, by decreasing score.

    Raises:
        ValueError: Boxes not (N, 4), scores not (N,), or a threshold that is not finite.
    """
    b = check_boxes("nms", boxes)
    s = _check_scores("nms", b, scores, iou_threshold)
    order = np.argsort(-s, kind="stable")
    x1, y1, x2, y2 = (b[order, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        later = slice(i + 1, None)
        w = np.maximum(0, np.minimum(x2[i], x2[later]) - np.maximum(x1[i], x1[later]))
        h = np.maximum(0, np.minimum(y2[i], y2[later]) - np.maximum(y1[i], y1[later]))
        inter = w * h
        # two zero-area boxes (clipped flat at the image's edge) have IoU 0/0 = NaN, which
        # suppresses nothing, as in torchvision's kernel
        with np.errstate(invalid="ignore"):
            iou = inter / (areas[i] + areas[later] - inter)
        # compared in float64, as the kernel compares its float IoU with a double threshold
        suppressed[later] |= iou.astype(np.float64) > iou_threshold
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes, scores, idxs, iou_threshold: float) -> np.ndarray:
    """NMS within each category: boxes of different ``idxs`` never suppress each other.

    Args:
        boxes: (N, 4) boxes.
        scores: (N,) scores.
        idxs: (N,) integer categories (e.g. the class of each box).
        iou_threshold: As in [nms][tinymbv2.detection.boxes.nms].

    Returns:
        The kept indices, an int64 array, by decreasing score over all categories (ties:
        the lower index first).

    Raises:
        ValueError: Boxes, scores or categories of shapes that do not fit.
    """
    b = check_boxes("batched_nms", boxes)
    s = _check_scores("batched_nms", b, scores, iou_threshold)
    c = np.asarray(idxs)
    if c.shape != s.shape or (c.size and c.dtype.kind not in "iu"):
        raise ValueError(f"batched_nms: expected idxs as ({len(s)},) integers, got shape "
                         f"{c.shape} and dtype {c.dtype}")
    kept = np.zeros(len(s), dtype=bool)
    for category in np.unique(c):
        members = np.flatnonzero(c == category)
        kept[members[nms(b[members], s[members], iou_threshold)]] = True
    survivors = np.flatnonzero(kept)
    return survivors[np.argsort(-s[survivors], kind="stable")].astype(np.int64)
