"""A segmenter over a set of images: its masks, its loss and its mean IoU.

``segment`` runs the segmenter in eval mode and takes each pixel's most probable class;
``evaluate_segmenter`` adds the loss and the scores of the per-pixel confusion matrix
([segmentation_scores][tinymbv2.evaluation.segmentation_metrics.segmentation_scores]).
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import fusion
from ..autograd import no_grad
from .loop import eval_mode, model_batch, model_dtype
from .segmentation_metrics import segmentation_confusion, segmentation_scores


def segment(model, images, batch_size: int = 32, fuse: bool = True) -> np.ndarray:
    """Each pixel's most probable class: the argmax of the logits over the classes.

    Args:
        model: The segmenter: (N, C, H, W) -> logits (N, K, H, W).
        images: (N, C, H, W), already normalised.
        batch_size: The images per forward pass.
        fuse: Run the fused view (False: the plain model).

    Returns:
        The predicted masks, uint8 (N, H, W) (int64 for more than 256 classes).
    """
    return _run(model, images, None, None, batch_size, fuse)[0]


def evaluate_segmenter(model, images, masks, loss_fn=F.cross_entropy, batch_size: int = 32,
                       fuse: bool = True, ignore_index: int | None = None) -> dict:
    """Eval-mode pass over a split: loss, mean IoU, per-class IoU, pixel accuracy, masks.

    Every module comes back in the mode it was in.

    Args:
        model: The segmenter, with ``num_classes`` (K).
        images: (N, C, H, W), already normalised.
        masks: The true classes (N, H, W), integers in [0, K) (or ``ignore_index``).
        loss_fn: ``loss_fn(logits, masks)``, a batch's mean loss
            ([build_loss][tinymbv2.train.build.build_loss]'s take it).
        batch_size: The images per forward pass.
        fuse: Run the fused view.
        ignore_index: A true value whose pixels are scored nowhere (None: all count); the loss
            is ``loss_fn``'s business.

    Returns:
        ``{"loss": the batches' mean losses averaged with their sizes as weights (for the
        cross-entropy: the mean over all pixels), "miou", "per_class_iou" (K,), "pixel_accuracy",
        "mean_class_accuracy", "confusion" (K, K) int64 pixel counts (rows truth),
        "predictions" (N, H, W) uint8}``.

    Raises:
        ValueError: ``masks`` not (N, H, W) for images (N, C, H, W).
    """
    masks = np.asarray(masks)
    if masks.shape != (len(images), *np.shape(images)[-2:]):
        raise ValueError(f"evaluate_segmenter: expected masks (N, H, W) = "
                         f"{(len(images), *np.shape(images)[-2:])} for images {np.shape(images)}, "
                         f"got {masks.shape}")
    predictions, loss = _run(model, images, masks, loss_fn, batch_size, fuse)
    confusion = segmentation_confusion(predictions, masks, model.num_classes, ignore_index)
    scores = segmentation_scores(confusion)
    return {"loss": loss, "miou": scores["miou"], "per_class_iou": scores["per_class_iou"],
            "pixel_accuracy": scores["pixel_accuracy"],
            "mean_class_accuracy": scores["mean_class_accuracy"], "confusion": confusion,
            "predictions": predictions}


def _run(model, images, masks, loss_fn, batch_size, fuse):
    net = fusion.fuse(model) if fuse else model
    dtype = model_dtype(model)
    predictions, loss_sum = [], 0.0
    with eval_mode(model, net), no_grad():
        for start in range(0, len(images), batch_size):
            logits = net(model_batch(model, images[start:start + batch_size], dtype))
            predictions.append(logits.numpy().argmax(axis=1))
            if masks is not None:
                y = masks[start:start + batch_size].astype(np.int64)
                loss_sum += float(loss_fn(logits, y).item()) * len(y)
    out_dtype = np.uint8 if model.num_classes <= 256 else np.int64
    shape = (0, *np.shape(images)[-2:])
    predictions = (np.concatenate(predictions) if predictions else np.zeros(shape)).astype(out_dtype)
    return predictions, (loss_sum / max(len(images), 1) if masks is not None else None)
