"""Evaluation (layer 7): how good a trained model is, and what it says about new images.

* [tinymbv2.evaluation.metrics][]: accuracy, top-k accuracy, confusion matrix,
  per-class precision and recall;
* [tinymbv2.evaluation.loop][]: ``evaluate``, the model in eval mode over a split;
* [tinymbv2.evaluation.prediction][]: ``predict``, the top-k classes of image files;
* [tinymbv2.evaluation.detection_metrics][]: a detector's mAP (COCO's, and at IoU 0.5),
  equal to pycocotools';
* [tinymbv2.evaluation.detection_loop][]: ``detect`` and ``evaluate_detector``, a
  detector over a split; [tinymbv2.evaluation.detection_drawing][]: its boxes drawn;
* [tinymbv2.evaluation.segmentation_metrics][]: a segmenter's per-pixel confusion matrix,
  IoU per class, mean IoU and pixel accuracy;
* [tinymbv2.evaluation.segmentation_loop][]: ``segment`` and ``evaluate_segmenter``, a
  segmenter over a split; [tinymbv2.evaluation.segmentation_drawing][]: its masks in colour.

Nothing here trains or imports ``tinymbv2.train``: the trainer uses ``evaluate`` for its
validation pass, and reading a model back from a checkpoint (``train.load_trained``) is
the trainer's business. How a *training run* went (its learning curves) is read by
``tinymbv2.train.diagnose``.
"""
from .detection_drawing import draw_detections
from .detection_loop import detect, evaluate_detector
from .detection_metrics import mean_average_precision
from .loop import evaluate, model_batch, model_dtype
from .metrics import accuracy, confusion_matrix, precision_recall, top_k_accuracy
from .prediction import load_image, predict, predict_boxes, predict_masks
from .segmentation_drawing import PALETTE, colour_mask, overlay_mask
from .segmentation_loop import evaluate_segmenter, segment
from .segmentation_metrics import segmentation_confusion, segmentation_scores

__all__ = ["evaluate", "model_batch", "model_dtype", "accuracy", "confusion_matrix",
           "precision_recall", "top_k_accuracy", "load_image", "predict", "mean_average_precision",
           "detect", "evaluate_detector", "draw_detections", "predict_boxes",
           "segmentation_confusion", "segmentation_scores", "segment", "evaluate_segmenter",
           "PALETTE", "colour_mask", "overlay_mask", "predict_masks"]
