"""Object detection, SSD's way (paper section 6.2): box geometry, default boxes, matching.

The detector's layers live with the other architectures in ``tinymbv2.models``; this package
holds what turns boxes into training targets and raw outputs into detections, as plain
NumPy array code (no autograd):

* [boxes][tinymbv2.detection.boxes]: areas, IoU, format conversion, non-maximum suppression;
* [default_boxes][tinymbv2.detection.default_boxes]: SSD's default boxes (anchors) for each
  feature map;
* [box_coder][tinymbv2.detection.box_coder]: a box as offsets from its default box, and back;
* [matching][tinymbv2.detection.matching]: which ground-truth box each default box learns;
* [ssd_loss][tinymbv2.detection.ssd_loss]: the training loss, with hard-negative mining;
* [postprocess][tinymbv2.detection.postprocess]: raw outputs to detections (softmax, score
  threshold, per-class top-k, NMS).

Boxes are ``(x1, y1, x2, y2)`` in pixels unless a name says otherwise (``cxcywh``: centre,
width, height).
"""
from .box_coder import BoxCoder  # noqa: F401
from .boxes import (batched_nms, box_area, box_iou, box_xyxy_to_cxcywh,  # noqa: F401
                    box_cxcywh_to_xyxy, nms)
from .default_boxes import DefaultBoxGenerator, default_boxes_for  # noqa: F401
from .matching import SSDMatcher  # noqa: F401
from .postprocess import clip_boxes_to_image, postprocess_detections  # noqa: F401
from .ssd_loss import match_default_boxes, ssd_loss  # noqa: F401
