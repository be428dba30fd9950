"""The SSDLite detector of ``tinymbv2.models.ssdlite`` built from torchvision's own parts.

torchvision's ``SSDLiteFeatureExtractorMobileNet`` cuts MobileNetV3 (blocks named
``.block``); the same cut of ``mobilenet_v2``'s features (blocks named ``.conv``) is made
here by hand, with torchvision's ``_extra_block`` and ``SSDLiteHead``, so the state_dict
keys are tinymbv2's and weights copy across unchanged. The loss and the post-processing
are torchvision's ``SSD.compute_loss`` and ``SSD.postprocess_detections``, called with
SSDLite's settings. Used by the parity tests and by the detection benchmark.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torchvision
import torchvision.ops as tvops
from torchvision.models.detection._utils import BoxCoder, SSDMatcher
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead, _extra_block

EXTRA_CHANNELS = (512, 256, 256, 128)


class TorchSSDLite(torch.nn.Module):
    """SSDLite on MobileNetV2 from torchvision's parts; forward -> (cls_logits, bbox_regression).

    Args:
        width: The backbone's width multiplier (it scales the extra blocks too, min 16).
        num_classes: The classes, background included.
        in_channels: The image channels.
    """

    def __init__(self, width: float, num_classes: int, in_channels: int = 3):
        super().__init__()
        f = torchvision.models.mobilenet_v2(width_mult=width).features
        if in_channels != 3:
            f[0][0] = torch.nn.Conv2d(in_channels, f[0][0].out_channels, 3, 2, 1, bias=False)
        self.backbone = torch.nn.Module()
        self.backbone.features = torch.nn.Sequential(
            torch.nn.Sequential(*f[:14], f[14].conv[0]), torch.nn.Sequential(f[14].conv[1:], *f[15:]))
        depth = [f[-1].out_channels] + [max(16, int(c * width)) for c in EXTRA_CHANNELS]
        self.backbone.extra = torch.nn.ModuleList(
            [_extra_block(a, b, torch.nn.BatchNorm2d) for a, b in zip(depth[:-1], depth[1:])])
        self.head = SSDLiteHead([f[14].conv[0].out_channels] + depth, [6] * 6, num_classes,
                                torch.nn.BatchNorm2d)

    def forward(self, x):
        maps = []
        for stage in self.backbone.features:
            x = stage(x)
            maps.append(x)
        for block in self.backbone.extra:
            x = block(x)
            maps.append(x)
        out = self.head(maps)
        return out["cls_logits"], out["bbox_regression"]


def torchvision_loss(cls_logits, bbox_regression, anchors, targets):
    """torchvision's ``SSD.compute_loss`` after the matching ``SSD.forward`` does.

    Args:
        cls_logits: (N, A, K) torch tensor.
        bbox_regression: (N, A, 4) torch tensor.
        anchors: (A, 4) default boxes (a torch tensor), the same for every image.
        targets: N dicts of torch tensors ``"boxes"`` (M, 4) and ``"labels"`` (M,).

    Returns:
        ``{"bbox_regression": ..., "classification": ...}``.
    """
    fake = SimpleNamespace(box_coder=BoxCoder((10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3.0)
    matcher, matched = SSDMatcher(0.5), []
    for t in targets:
        if t["boxes"].numel() == 0:
            matched.append(torch.full((anchors.size(0),), -1, dtype=torch.int64))
        else:
            matched.append(matcher(tvops.box_iou(t["boxes"], anchors)))
    return SSD.compute_loss(fake, targets, {"cls_logits": cls_logits, "bbox_regression": bbox_regression},
                            [anchors] * len(targets), matched)


def torchvision_postprocess(cls_logits, bbox_regression, anchors, image_size, score_thresh=0.001,
                            nms_thresh=0.55, topk_candidates=300, detections_per_img=300):
    """torchvision's ``SSD.postprocess_detections`` with SSDLite's settings.

    Args:
        cls_logits: (N, A, K) torch tensor.
        bbox_regression: (N, A, 4) torch tensor.
        anchors: (A, 4) default boxes (a torch tensor).
        image_size: (height, width).
        score_thresh: The least class probability kept.
        nms_thresh: NMS's IoU threshold.
        topk_candidates: Boxes per class into NMS.
        detections_per_img: Detections kept per image.

    Returns:
        One dict of torch tensors per image: ``"boxes"``, ``"scores"``, ``"labels"``.
    """
    fake = SimpleNamespace(box_coder=BoxCoder((10.0, 10.0, 5.0, 5.0)), score_thresh=score_thresh,
                           nms_thresh=nms_thresh, topk_candidates=topk_candidates,
                           detections_per_img=detections_per_img)
    n = cls_logits.shape[0]
    return SSD.postprocess_detections(fake, {"cls_logits": cls_logits, "bbox_regression": bbox_regression},
                                      [anchors] * n, [tuple(image_size)] * n)
