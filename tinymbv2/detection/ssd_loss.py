r"""SSD's training loss: box regression on matched default boxes, classification with
hard-negative mining (torchvision's ``SSD.compute_loss``).

For one batch, with $P$ the number of default boxes matched to an object over all images:

$$
L = \underbrace{\frac{1}{P} \sum_{\text{matched } a} \text{smooth}_{L1}(t_a - \hat t_a)}_{\text{box regression}}
+ \underbrace{\frac{1}{P} \Big( \sum_{\text{matched } a} \text{CE}_a
+ \sum_{a \in \text{hardest negatives}} \text{CE}_a \Big)}_{\text{classification}}
$$

$t_a$ are the offsets of the matched ground-truth box from default box $a$
([BoxCoder][tinymbv2.detection.box_coder.BoxCoder]) and $\hat t_a$ the predicted ones.
Nearly every default box is background: counting them all would drown the few positives,
so each image keeps only its $3 \times$ (positives in the image) background boxes with the
highest cross-entropy (the negatives the network gets most wrong), a 1:3 ratio.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from .box_coder import BoxCoder
from .boxes import box_iou, check_boxes
from .matching import SSDMatcher

__all__ = ["match_default_boxes", "ssd_loss"]


def check_targets(fn: str, targets, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each image's ``(boxes (M, 4), labels (M,))``, checked.

    Args:
        fn: The caller's name, for the error.
        targets: One dict per image with ``"boxes"`` (M, 4) and ``"labels"`` (M,) integers
            in [1, classes) (0 is the background).
        batch: The number of images the outputs hold.

    Returns:
        A list of ``(boxes, labels)`` arrays.

    Raises:
        ValueError: A number of targets other than ``batch``, or boxes and labels that do
            not fit.
    """
    if len(targets) != batch:
        raise ValueError(f"{fn}: expected one target per image, {batch}, got {len(targets)}")
    out = []
    for i, t in enumerate(targets):
        boxes = check_boxes(fn, t["boxes"], f"targets[{i}]['boxes']")
        labels = np.asarray(t["labels"])
        if labels.shape != (len(boxes),) or (labels.size and labels.dtype.kind not in "iu"):
            raise ValueError(f"{fn}: expected targets[{i}]['labels'] as {len(boxes)} integers, "
                             f"one per box, got shape {labels.shape} and dtype {labels.dtype}")
        out.append((boxes, labels.astype(np.int64)))
    return out


def match_default_boxes(default_boxes, boxes, matcher: SSDMatcher) -> np.ndarray:
    """The ground-truth index each default box learns, or -1 (background).

    Args:
        default_boxes: (A, 4) default boxes of the image.
        boxes: (M, 4) ground-truth boxes (M may be 0: then every default box is background).
        matcher: The [SSDMatcher][tinymbv2.detection.matching.SSDMatcher].

    Returns:
        (A,) int64 indices into ``boxes``, or -1.
    """
    if len(boxes) == 0:
        return np.full(len(default_boxes), -1, dtype=np.int64)
    return matcher(box_iou(boxes, default_boxes))


def ssd_loss(cls_logits, bbox_regression, default_boxes, targets, box_coder: BoxCoder | None = None,
             matcher: SSDMatcher | None = None, neg_to_pos_ratio: float = 3.0) -> dict:
    """SSD's loss for a batch: ``{"bbox_regression": ..., "classification": ...}``.

    Args:
        cls_logits: (N, A, K) class logits (a Tensor; class 0 is the background).
        bbox_regression: (N, A, 4) predicted offsets (a Tensor).
        default_boxes: (A, 4) default boxes in pixels, the same for every image.
        targets: N dicts with ``"boxes"`` (M, 4) in pixels and ``"labels"`` (M,) in [1, K).
        box_coder: The encoding of the offsets; None: SSD's weights (10, 10, 5, 5).
        matcher: The matching; None: ``SSDMatcher(0.5)``.
        neg_to_pos_ratio: Background boxes kept per matched box, per image.

    Returns:
        The two scalar Tensors, each divided by the number of matched default boxes (at
        least 1), whose sum is the loss to minimise; and ``"num_matched"``, that number (an
        int), to average the loss over several batches.

    Raises:
        ValueError: Outputs, default boxes and targets whose shapes do not fit.
    """
    box_coder = box_coder or BoxCoder((10.0, 10.0, 5.0, 5.0))
    matcher = matcher or SSDMatcher(0.5)
    n, a, k = cls_logits.shape
    if bbox_regression.shape != (n, a, 4):
        raise ValueError(f"ssd_loss: expected bbox_regression of shape {(n, a, 4)} to fit "
                         f"cls_logits {cls_logits.shape}, got {bbox_regression.shape}")
    default_boxes = check_boxes("ssd_loss", default_boxes, "default_boxes")
    if len(default_boxes) != a:
        raise ValueError(f"ssd_loss: expected {a} default boxes, one per output row, got {len(default_boxes)}")
    dtype = cls_logits.data.dtype

    cls_targets = np.zeros((n, a), dtype=np.int64)          # 0: background
    box_losses, num_matched = [], 0
    for i, (boxes, labels) in enumerate(check_targets("ssd_loss", targets, n)):
        if labels.size and not (labels.min() >= 1 and labels.max() < k):
            raise ValueError(f"ssd_loss: expected targets[{i}]['labels'] in [1, {k}) (0 is the "
                             f"background), got {labels.tolist()}")
        matched = match_default_boxes(default_boxes, boxes, matcher)
        fg = np.flatnonzero(matched >= 0)
        num_matched += len(fg)
        cls_targets[i, fg] = labels[matched[fg]]
        offsets = box_coder.encode(boxes[matched[fg]], default_boxes[fg]).astype(dtype)
        box_losses.append(F.smooth_l1_loss(bbox_regression[i, fg], Tensor(offsets), reduction="sum"))

    ce = F.cross_entropy(cls_logits.reshape(n * a, k), cls_targets.reshape(-1), reduction="none")
    ce = ce.reshape(n, a)
    # hard negatives: per image, the background boxes of highest loss, ranked
    foreground = cls_targets > 0
    negative_loss = np.where(foreground, -np.inf, ce.data)
    rank = np.argsort(np.argsort(-negative_loss, axis=1, kind="stable"), axis=1, kind="stable")
    hard_negative = rank < neg_to_pos_ratio * foreground.sum(axis=1, keepdims=True)
    divisor = max(1, num_matched)
    box_loss = box_losses[0]
    for loss in box_losses[1:]:
        box_loss = box_loss + loss
    classification = ce[foreground].sum() + ce[hard_negative].sum()
    return {"bbox_regression": box_loss / divisor, "classification": classification / divisor,
            "num_matched": num_matched}
