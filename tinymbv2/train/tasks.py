"""What the training loop asks of the problem it trains: a loss, a score, a validation pass.

The loop ([fit][tinymbv2.train.trainer.fit]) is the same for every task: forward a batch,
take the task's loss, step, and after each epoch score the validation split and keep the
best weights. A task says how:

* [Classification][tinymbv2.train.tasks.Classification]: the batch's second item holds the
  labels; the loss is ``loss_fn(logits, labels)`` (cross-entropy by default); the score is
  the accuracy, on training batches too;
* [Detection][tinymbv2.train.tasks.Detection]: the batch's second item holds the *indices*
  of its scenes, whose boxes and labels the task looks up; the loss is SSD's
  ([ssd_loss][tinymbv2.detection.ssd_loss.ssd_loss]); the score is the mAP at IoU 0.5 of the
  validation split (training batches get none: it needs whole-split matching);
* [Segmentation][tinymbv2.train.tasks.Segmentation]: the batch's second item holds the
  indices of its scenes, whose masks the task looks up; the loss is per pixel
  (cross-entropy, Dice or both, [build_loss][tinymbv2.train.build.build_loss]); the score is
  the mean IoU of the validation split (training batches get none: the IoU of a split is not
  a mean of its batches').

``score`` names the history's keys: ``val_acc`` and ``best_val_acc`` for classification,
``val_map50`` and ``best_val_map50`` for detection, ``val_miou`` and ``best_val_miou`` for
segmentation.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..detection import default_boxes_for, ssd_loss
from ..evaluation import evaluate, evaluate_detector, evaluate_segmenter


class Classification:
    """Labels in, logits out; scored by accuracy.

    Args:
        loss_fn: ``loss_fn(logits, labels, reduction=...)``, the batch's loss.
    """

    score = "acc"
    score_name = "accuracy"
    scores_training_batches = True

    def __init__(self, loss_fn=F.cross_entropy):
        self.loss_fn = loss_fn

    def loss(self, outputs, labels):
        """The batch's mean loss.

        Args:
            outputs: The logits (N, K).
            labels: (N,) class indices.

        Returns:
            A scalar Tensor.
        """
        return self.loss_fn(outputs, labels)

    def correct(self, outputs, labels) -> int:
        """How many of the batch's images the logits classify right.

        Args:
            outputs: The logits (N, K).
            labels: (N,) class indices.

        Returns:
            The count.
        """
        return int((outputs.numpy().argmax(axis=1) == labels).sum())

    def validate(self, net, split) -> tuple[float, float]:
        """Eval-mode loss and accuracy on a split.

        Args:
            net: The model (or its fused view).
            split: An object with ``.images`` (normalised) and ``.labels``.

        Returns:
            ``(loss, accuracy)``.
        """
        ev = evaluate(net, split.images, split.labels, loss_fn=self.loss_fn, fuse=False)
        return ev["loss"], ev["accuracy"]


class Detection:
    """Scene indices in, class logits and box offsets out; scored by mAP@0.5.

    Args:
        train_split: The training [SceneSplit][tinymbv2.data.scenes.SceneSplit] whose
            targets the batches' indices pick.
        model: The detector (its default boxes are laid out for ``image_size``).
        image_size: The scenes' (height, width).
    """

    score = "map50"
    score_name = "mAP@0.5"
    scores_training_batches = False

    def __init__(self, train_split, model, image_size):
        self.train_split = train_split
        self.default_boxes = default_boxes_for(model, image_size)

    def loss(self, outputs, indices):
        """SSD's loss of the batch: box regression plus classification.

        Args:
            outputs: ``(cls_logits (N, A, K), bbox_regression (N, A, 4))``.
            indices: (N,) indices of the batch's scenes in the training split.

        Returns:
            A scalar Tensor.
        """
        cls, box = outputs
        parts = ssd_loss(cls, box, self.default_boxes, self.train_split.targets(indices))
        return parts["bbox_regression"] + parts["classification"]

    def correct(self, outputs, indices) -> None:
        """No per-batch score for detection (mAP needs the whole split).

        Args:
            outputs: The detector's outputs.
            indices: The batch's scene indices.
        """
        return None

    def validate(self, net, split) -> tuple[float, float]:
        """Eval-mode SSD loss and mAP@0.5 on a split of scenes.

        Args:
            net: The detector (or its fused view).
            split: A [SceneSplit][tinymbv2.data.scenes.SceneSplit] with normalised images.

        Returns:
            ``(loss, mAP@0.5)``.
        """
        ev = evaluate_detector(net, split.images, split.targets(np.arange(len(split))), fuse=False)
        return ev["loss"], ev["map_50"]


class Segmentation:
    """Scene indices in, per-pixel logits out; scored by the mean IoU.

    Args:
        train_split: The training [SceneSplit][tinymbv2.data.scenes.SceneSplit] whose masks
            the batches' indices pick.
        loss_fn: ``loss_fn(logits (N, K, H, W), masks (N, H, W))``, the batch's mean loss.
    """

    score = "miou"
    score_name = "mIoU"
    scores_training_batches = False

    def __init__(self, train_split, loss_fn=F.cross_entropy):
        self.train_split = train_split
        self.loss_fn = loss_fn

    def loss(self, outputs, indices):
        """The batch's per-pixel loss against the masks of its scenes.

        Args:
            outputs: The logits (N, K, H, W).
            indices: (N,) indices of the batch's scenes in the training split.

        Returns:
            A scalar Tensor.
        """
        return self.loss_fn(outputs, self.train_split.masks[np.asarray(indices)].astype(np.int64))

    def correct(self, outputs, indices) -> None:
        """No per-batch score for segmentation (the split's IoU is not a mean of its batches').

        Args:
            outputs: The logits.
            indices: The batch's scene indices.
        """
        return None

    def validate(self, net, split) -> tuple[float, float]:
        """Eval-mode loss and mean IoU on a split of scenes.

        Args:
            net: The segmenter (or its fused view).
            split: A [SceneSplit][tinymbv2.data.scenes.SceneSplit] with normalised images.

        Returns:
            ``(loss, mIoU)``.
        """
        ev = evaluate_segmenter(net, split.images, split.masks, loss_fn=self.loss_fn, fuse=False)
        return ev["loss"], ev["miou"]
