"""Mobile DeepLabv3 of ``tinymbv2.models.deeplabv3`` built from torchvision's own parts.

torchvision dilates MobileNetV3 for its segmentation models; the same is done here to
``mobilenet_v2``'s features by hand (strides, dilations and paddings patched per block, the
DeepLab recipe of ``tinymbv2.models.dilate``), joined by torchvision's
``IntermediateLayerGetter`` and its ``DeepLabV3`` (with ``DeepLabHead``/``ASPP``) or
``LRASPP`` (with ``LRASPPHead``). The ``state_dict`` keys are tinymbv2's, so weights copy
across unchanged both ways. Used by the parity tests (``tests/models/test_deeplabv3.py``) and
by the segmentation benchmark (``benchmarks/segment_step.py``).
"""
from __future__ import annotations

import torch
import torchvision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead, DeepLabV3
from torchvision.models.segmentation.lraspp import LRASPP

from tinymbv2.models import ATROUS_RATES

# The DeepLab recipe written out per block of features (index: (stride, dilation) of its
# depthwise conv, padding = dilation); blocks not named keep Table 2's stride and dilation 1.
DILATED = {
    16: {14: (1, 1), 15: (1, 2), 16: (1, 2), 17: (1, 2)},
    8: {7: (1, 1), **{i: (1, 2) for i in range(8, 14)}, 14: (1, 2), 15: (1, 4), 16: (1, 4),
        17: (1, 4)},
}
LOW_LEVEL_BLOCK, LRASPP_CHANNELS = 4, 128  # LR-ASPP's low branch and width, as tinymbv2's


def dilated_features(width: float, output_stride: int, in_channels: int = 3) -> torch.nn.Sequential:
    """torchvision's ``mobilenet_v2`` features up to the last block, patched by ``DILATED``.

    Args:
        width: The width multiplier.
        output_stride: 16 or 8.
        in_channels: The image channels (the stem conv is replaced when not 3).

    Returns:
        The 18 layers (stem and 17 blocks): (N, in_channels, H, W) ->
        (N, 320 * width, ceil(H / output_stride), ceil(W / output_stride)).
    """
    features = torchvision.models.mobilenet_v2(width_mult=width).features[:-1]
    if in_channels != 3:
        stem = features[0][0]
        features[0][0] = torch.nn.Conv2d(in_channels, stem.out_channels, 3, 2, 1, bias=False)
    for index, (stride, dilation) in DILATED[output_stride].items():
        depthwise = features[index].conv[-3][0]
        assert depthwise.groups == depthwise.in_channels > 1
        depthwise.stride = (stride, stride)
        depthwise.dilation = depthwise.padding = (dilation, dilation)
    return features


def torch_deeplabv3(head: str, num_classes: int, output_stride: int = 16, width: float = 1.0,
                    rates=None, in_channels: int = 3) -> torch.nn.Module:
    """The torchvision twin of ``deeplabv3_mobilenet_v2`` (segmentation ``DeepLabV3``/``LRASPP``).

    Args:
        head: ``"aspp"``, ``"simple"`` (ASPP with no atrous branch, then the 1x1 classifier)
            or ``"lraspp"``.
        num_classes: K.
        output_stride: 16 or 8.
        width: The backbone's width multiplier.
        rates: ASPP's three atrous rates; None: tinymbv2's default for the output stride.
        in_channels: The image channels.

    Returns:
        torchvision's model: (N, in_channels, H, W) -> ``{"out": (N, K, H, W)}``, with the
        ``state_dict`` keys of ``deeplabv3_mobilenet_v2(num_classes, output_stride, head,
        width)``.
    """
    features = dilated_features(width, output_stride, in_channels)
    high = features[-1].out_channels
    last = str(len(features) - 1)
    if head == "lraspp":
        backbone = IntermediateLayerGetter(features, {str(LOW_LEVEL_BLOCK): "low", last: "high"})
        return LRASPP(backbone, features[LOW_LEVEL_BLOCK].out_channels, high, num_classes,
                      LRASPP_CHANNELS)
    backbone = IntermediateLayerGetter(features, {last: "out"})
    if head == "aspp":
        classifier = DeepLabHead(high, num_classes, rates or ATROUS_RATES[output_stride])
    elif head == "simple":
        classifier = torch.nn.Sequential(ASPP(high, []), torch.nn.Conv2d(256, num_classes, 1))
    else:
        raise ValueError(f"torch_deeplabv3: expected head 'aspp', 'simple' or 'lraspp', got {head!r}")
    return DeepLabV3(backbone, classifier)
