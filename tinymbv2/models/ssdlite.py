r"""SSDLite on MobileNetV2 (paper section 6.2), built as torchvision builds SSDLite.

SSD predicts, at every cell of several feature maps, a class score and four box offsets
for each of a few default boxes centred there (the boxes themselves, their matching and
the loss are in ``tinymbv2.detection``). SSDLite is SSD with every prediction layer made
depthwise-separable: a 3x3 depthwise convolution (BatchNorm, ReLU6) and then a 1x1
convolution, instead of SSD's dense 3x3 convolutions. For 80 classes at 320 px that cuts
the head from 14.8M parameters and 1.25B multiply-adds to 2.1M and 0.35B (Table 5).

The feature maps, at 320 px and width 1.0:

| map | taken from | channels | stride | size |
|---|---|---|---|---|
| 0 | block 14's expansion (its 1x1 conv, before the stride-2 depthwise) | 576 | 16 | 20 x 20 |
| 1 | the 1x1 conv to 1280 channels, the backbone's last layer | 1280 | 32 | 10 x 10 |
| 2-5 | four extra blocks: 1x1 to half, 3x3 depthwise stride 2, 1x1 | 512, 256, 256, 128 | 64-512 | 5, 3, 2, 1 |

Module names equal torchvision's (``backbone.features``, ``backbone.extra``,
``head.classification_head.module_list``, ``head.regression_head.module_list``), so weights
carry over from torchvision's parts unchanged.

Shapes: (N, C, S, S) -> class logits (N, A, num_classes) and box offsets (N, A, 4), A the
number of default boxes (6 per cell; 3,234 at 320 px).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from .. import nn
from ..nn import init
from .mobilenetv2 import Conv2dNormActivation, MobileNetV2

C4_BLOCK = 14                          # features[14]: the first block at output stride 32
EXTRA_CHANNELS = (512, 256, 256, 128)  # the four extra blocks (TF Object Detection API)
ASPECT_RATIOS = ((2, 3),) * 6          # per map: 2 squares + 2 boxes per ratio = 6 boxes
MIN_RATIO, MAX_RATIO = 0.2, 0.95       # the default boxes' smallest and largest scale
HEAD_INIT_STD = 0.03                   # torchvision's init for the extras and the heads


def extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """One extra feature map: 1x1 to ``out / 2``, 3x3 depthwise stride 2, 1x1 to ``out``.

    Each convolution is followed by BatchNorm and ReLU6. (N, in, H, W) ->
    (N, out, ceil(H / 2), ceil(W / 2)).

    Args:
        in_channels: The input channels.
        out_channels: The output channels.

    Returns:
        The block (torchvision's ``_extra_block``).
    """
    mid = out_channels // 2
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, kernel_size=1),
        Conv2dNormActivation(mid, mid, kernel_size=3, stride=2, groups=mid),
        Conv2dNormActivation(mid, out_channels, kernel_size=1),
    )


def prediction_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """An SSDLite prediction layer: 3x3 depthwise (BatchNorm, ReLU6), then 1x1 with a bias.

    (N, in, H, W) -> (N, out, H, W).

    Args:
        in_channels: The feature map's channels.
        out_channels: Outputs per cell: boxes per cell x (classes or 4 offsets).

    Returns:
        The block (torchvision's ``_prediction_block``).
    """
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, kernel_size=3, groups=in_channels),
        nn.Conv2d(in_channels, out_channels, 1),
    )


class SSDLiteScoringHead(nn.Module):
    """One prediction layer per feature map; their outputs joined into one (N, A, K) tensor.

    Map k's output (N, a_k K, H, W) is read as a_k boxes of K numbers at each cell and
    laid out cell by cell, box by box: (N, H W a_k, K), the order of the default boxes.

    Args:
        in_channels: The channels of each feature map.
        num_anchors: The default boxes per cell of each map.
        num_columns: K: the classes, or 4 box offsets.
    """

    def __init__(self, in_channels, num_anchors, num_columns: int):
        super().__init__()
        self.module_list = nn.ModuleList(*[prediction_block(c, a * num_columns)
                                           for c, a in zip(in_channels, num_anchors)])
        self.num_columns = num_columns

    def forward(self, features):
        results = []
        for block, x in zip(self.module_list, features):
            y = block(x)                                       # (N, a K, H, W)
            n, _, h, w = y.shape
            y = y.reshape(n, -1, self.num_columns, h, w)       # (N, a, K, H, W)
            y = y.transpose(0, 3, 4, 1, 2)                     # (N, H, W, a, K)
            results.append(y.reshape(n, -1, self.num_columns))
        return F.cat(results, axis=1)


class SSDLiteHead(nn.Module):
    """The class and box predictors over all feature maps.

    forward: the list of feature maps -> ``(cls_logits (N, A, num_classes),
    bbox_regression (N, A, 4))``.

    Args:
        in_channels: The channels of each feature map.
        num_anchors: The default boxes per cell of each map.
        num_classes: The classes, background (class 0) included.
    """

    def __init__(self, in_channels, num_anchors, num_classes: int):
        super().__init__()
        self.classification_head = SSDLiteScoringHead(in_channels, num_anchors, num_classes)
        self.regression_head = SSDLiteScoringHead(in_channels, num_anchors, 4)

    def forward(self, features):
        return self.classification_head(features), self.regression_head(features)


class SSDLiteBackbone(nn.Module):
    """MobileNetV2's layers cut into the two first feature maps, then the extra blocks.

    ``features[0]``: the stem, blocks 1-13 and block 14's expansion (stride 16);
    ``features[1]``: the rest of block 14, blocks 15-17 and the 1x1 conv to 1280 channels
    (stride 32); ``extra``: four blocks that halve the map each. torchvision's
    ``SSDLiteFeatureExtractorMobileNet``, with MobileNetV2's block names.

    Args:
        mobilenet: The MobileNetV2 whose ``features`` are used (its classifier is not).
        width_mult: Scales the extra blocks' channels.
        min_depth: The fewest channels an extra block gets.

    Raises:
        ValueError: A MobileNetV2 whose block 14 has a residual (the split needs a block
            that changes the resolution).
    """

    def __init__(self, mobilenet: MobileNetV2, width_mult: float = 1.0, min_depth: int = 16):
        super().__init__()
        f = mobilenet.features
        block = f[C4_BLOCK]
        if block.use_res_connect or block.expand_ratio == 1:
            raise ValueError(f"SSDLiteBackbone: features[{C4_BLOCK}] must be a strided block with "
                             f"an expansion layer, got {block!r}")
        self.features = nn.Sequential(
            nn.Sequential(*f[:C4_BLOCK], block.conv[0]),          # up to block 14's expansion
            nn.Sequential(block.conv[1:], *f[C4_BLOCK + 1:]),     # its depthwise conv onwards
        )
        channels = [f[-1].out_channels] + [max(min_depth, int(c * width_mult)) for c in EXTRA_CHANNELS]
        self.extra = nn.ModuleList(*[extra_block(a, b) for a, b in zip(channels[:-1], channels[1:])])
        self.out_channels = [block.conv[0].out_channels] + channels

    def forward(self, x):
        maps = []
        for stage in self.features:
            x = stage(x)
            maps.append(x)
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return maps


class SSDLite(nn.Module):
    """SSDLite: the backbone's six feature maps and the prediction head.

    forward: images (N, C, H, W) -> ``(cls_logits (N, A, num_classes), bbox_regression
    (N, A, 4))``; ``feature_map_sizes(H, W)`` gives the grid of each map, for the default
    boxes. The default boxes' layout is held as data (``aspect_ratios``, ``min_ratio``,
    ``max_ratio``) for ``tinymbv2.detection``, which builds them.

    Args:
        backbone: An [SSDLiteBackbone][tinymbv2.models.ssdlite.SSDLiteBackbone].
        num_classes: The classes, background (class 0) included.
        size: The image side the detector is trained and run at, in pixels.
    """

    def __init__(self, backbone: SSDLiteBackbone, num_classes: int, size: int = 320):
        super().__init__()
        self.aspect_ratios = [list(r) for r in ASPECT_RATIOS]
        self.min_ratio, self.max_ratio = MIN_RATIO, MAX_RATIO
        self.num_classes, self.size = num_classes, size
        self.backbone = backbone
        num_anchors = [2 + 2 * len(r) for r in self.aspect_ratios]
        self.head = SSDLiteHead(backbone.out_channels, num_anchors, num_classes)

    def reset_head_parameters(self, generator=None):
        """torchvision's init of the extra blocks and the heads: conv weights
        $N(0, 0.03^2)$, biases 0 (BatchNorm 1 and 0).

        Args:
            generator: An ``np.random.Generator``; None: the package's global one.
        """
        for part in (self.backbone.extra, self.head):
            for m in part.modules():
                if isinstance(m, nn.Conv2d):
                    init.normal_(m.weight, 0.0, HEAD_INIT_STD, generator=generator)
                    if m.bias is not None:
                        init.zeros_(m.bias)

    def feature_map_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (height, width) of each feature map for an input of ``height x width``.

        Args:
            height: The input's height in pixels.
            width: The input's width in pixels.

        Returns:
            Six (h, w) pairs, the strides 16, 32, 64, 128, 256, 512 with SAME padding.
        """
        sizes, h, w = [], height, width
        for halvings in (4, 1, 1, 1, 1, 1):            # stride 16, then x2 per map
            for _ in range(halvings):
                h, w = (h + 1) // 2, (w + 1) // 2      # a stride-2 conv, padding 1: ceil(h / 2)
            sizes.append((h, w))
        return sizes

    def forward(self, x):
        return self.head(self.backbone(x))


def ssdlite_mobilenet_v2(num_classes: int, width_mult: float = 1.0, size: int = 320,
                         in_channels: int = 3, seed=None) -> SSDLite:
    """SSDLite with a MobileNetV2 backbone, as the paper's section 6.2 builds it.

    ``ssdlite_mobilenet_v2(91)`` is the COCO detector of Table 6 (80 classes in COCO's 91
    ids, plus background).

    Args:
        num_classes: The classes, background (class 0) included: 11 for the ten digits.
        width_mult: The backbone's width multiplier; it scales the extra blocks too (never
            below 16 channels).
        size: The image side the detector is trained and run at (its default boxes are laid
            out for it).
        in_channels: The image channels.
        seed: An int or ``np.random.Generator`` for a reproducible init; None: the
            package's global generator.

    Returns:
        The [SSDLite][tinymbv2.models.ssdlite.SSDLite] model.

    Raises:
        ValueError: ``num_classes < 2`` or a size below 32 px.
    """
    if not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"ssdlite_mobilenet_v2: expected num_classes >= 2 (background and at "
                         f"least one class), got {num_classes!r}")
    if not isinstance(size, numbers.Integral) or size < 32:
        raise ValueError(f"ssdlite_mobilenet_v2: expected size >= 32 px, got {size!r}")
    generator = seed if seed is None or isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    mobilenet = MobileNetV2(num_classes=1000, width_mult=width_mult, in_channels=in_channels,
                            generator=generator)
    model = SSDLite(SSDLiteBackbone(mobilenet, width_mult), num_classes, size)
    model.reset_head_parameters(generator)
    return model
