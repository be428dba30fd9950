"""A detector over a set of images: its detections, its loss and its mAP.

``detect`` runs the detector in eval mode and turns its raw outputs into boxes
([postprocess_detections][tinymbv2.detection.postprocess.postprocess_detections]);
``evaluate_detector`` adds SSD's loss and the mean average precision
([mean_average_precision][tinymbv2.evaluation.detection_metrics.mean_average_precision]).
"""
from __future__ import annotations

from .. import fusion
from ..autograd import no_grad
from ..detection import default_boxes_for, postprocess_detections, ssd_loss
from .detection_metrics import mean_average_precision
from .loop import eval_mode, model_batch, model_dtype


def detect(model, images, batch_size: int = 32, fuse: bool = True, **postprocess) -> list[dict]:
    """The detections of each image, best first.

    Args:
        model: The detector.
        images: (N, C, H, W), already normalised.
        batch_size: The images per forward pass.
        fuse: Run the fused view (False: the plain model).
        **postprocess: Options of ``postprocess_detections`` (``score_thresh``, ...).

    Returns:
        One ``{"boxes", "scores", "labels"}`` dict per image.
    """
    return _run(model, images, None, batch_size, fuse, postprocess)[0]


def evaluate_detector(model, images, targets, batch_size: int = 32, fuse: bool = True) -> dict:
    """Eval-mode pass over a split: SSD's loss, COCO's mAP and mAP@0.5, the detections.

    Args:
        model: The detector.
        images: (N, C, H, W), already normalised.
        targets: N dicts with ``"boxes"`` (M, 4) and ``"labels"`` (M,).
        batch_size: The images per forward pass.
        fuse: Run the fused view.

    Returns:
        ``{"loss": SSD's loss over the whole split (box + class, divided by all the matched
        default boxes, whatever the batch size), "map", "map_50", "map_75", "per_class_ap",
        "per_class_ap_50", "detections"}``.
    """
    detections, loss = _run(model, images, targets, batch_size, fuse, {})
    result = mean_average_precision(detections, targets, model.num_classes)
    return {"loss": loss, **result, "detections": detections}


def _run(model, images, targets, batch_size, fuse, postprocess):
    net = fusion.fuse(model) if fuse else model
    size = tuple(images.shape[-2:])
    anchors = default_boxes_for(model, size)
    dtype = model_dtype(model)
    detections, loss_sum, matched = [], 0.0, 0
    with eval_mode(model, net), no_grad():
        for start in range(0, len(images), batch_size):
            cls, box = net(model_batch(model, images[start:start + batch_size], dtype))
            detections += postprocess_detections(cls.numpy(), box.numpy(), anchors, size, **postprocess)
            if targets is not None:
                parts = ssd_loss(cls, box, anchors, targets[start:start + batch_size])
                batch_loss = float(parts["bbox_regression"].item() + parts["classification"].item())
                loss_sum += batch_loss * max(1, parts["num_matched"])   # undo the batch's division
                matched += parts["num_matched"]
    return detections, (loss_sum / max(1, matched) if targets is not None else None)
