r"""Mobile DeepLabv3 (paper section 6.3): MobileNetV2 as a dilated backbone, and three heads.

Semantic segmentation labels every pixel. A classifier shrinks a 512 px image 32 times, to
16 x 16 cells: too coarse for masks. DeepLab keeps the map larger by removing the last
strides and *dilating* the convolutions after them (atrous convolution): a 3x3 filter with
dilation $d$ reads pixels $d$ apart, so it covers the same part of the image as before the
stride was removed, on a map twice as fine. The *output stride* is the input size over the
map's: 16 (the paper's Table 7) or 8.

The network, at 512 px, output stride 16, width 1.0:

| part | what | output |
|---|---|---|
| ``backbone`` | MobileNetV2's stem and its 17 blocks (``features.0..17``); block 14 at stride 1, blocks 15-17 dilated 2 | (N, 320, 32, 32) |
| ``classifier`` | the head: ASPP, the cheap head or LR-ASPP | (N, K, 32, 32) |
| upsampling | bilinear, ``align_corners=False``, to the input size | (N, K, 512, 512) |

The head sits on the last block's 320 channels: MobileNetV2's 1x1 conv to 1280 channels is
not used (``MNet V2*`` in Table 7: features of the second-to-last layer, cheaper, as good).

Module names equal torchvision's segmentation models' (``backbone.0..17``, the
``IntermediateLayerGetter`` over ``features``; ``classifier.0.convs...`` for DeepLabHead,
``classifier.cbr``/``scale``/``low_classifier``/``high_classifier`` for LRASPPHead), so
``state_dict`` keys carry over.
"""
from __future__ import annotations

import numbers
from collections import OrderedDict

import numpy as np

from .. import functional as F
from .. import nn
from .mobilenetv2 import InvertedResidual, MobileNetV2

OUTPUT_STRIDES = (8, 16)
HEADS = ("aspp", "simple", "lraspp")
# DeepLabv3 (Chen et al. 2017, section 3.3): rates (6, 12, 18) at output stride 16, doubled at
# 8, so each branch covers the same part of the image at either stride.
ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
TORCHVISION_ATROUS_RATES = (12, 24, 36)  # DeepLabHead's default, at every output stride
ASPP_CHANNELS = 256    # DeepLabv3's and torchvision's ASPP width
LRASPP_CHANNELS = 128  # torchvision's LRASPPHead inter_channels
LOW_LEVEL_BLOCK = 4    # features[4]: the first block at output stride 8 (LR-ASPP's low branch)


def dilate(features: nn.Sequential, output_stride: int) -> nn.Sequential:
    """Replace the strides past ``output_stride`` by dilation, in place (the DeepLab recipe).

    Walking the layers in order with the stride reached so far: once it equals
    ``output_stride``, a block that would stride again gets stride 1 instead, and every
    depthwise convolution after it gets its dilation multiplied by that stride (padding =
    dilation, so a 3x3 filter keeps the map's size). The block whose stride is removed keeps
    the dilation reached so far (1 at the first): its filter reads the input densely, as
    the strided one did; the layers after it read a map twice as fine, so their taps are
    spread twice as far. This is the rule of the paper's code (TF-slim's MobileNet with
    ``output_stride``, and ResNet's ``replace_stride_with_dilation`` in torchvision): with
    the same weights, in eval mode, the dilated network's map sampled every
    ``32 / output_stride`` pixels equals the undilated network's map (tested), so
    ImageNet weights keep their meaning. (torchvision's MobileNetV3 segmentation backbone
    gives the formerly strided block the doubled dilation too.)

    Args:
        features: MobileNetV2's ``features`` (stem, inverted residual blocks, ...); its
            stem must stride at most ``output_stride``.
        output_stride: 8 or 16 (32 leaves the network as it is).

    Returns:
        ``features``, modified.
    """
    stride, rate = 1, 1
    for layer in features:
        if not isinstance(layer, InvertedResidual):
            stride *= layer[0].stride[0]  # the stem (its conv's stride)
            continue
        depthwise = layer.conv[-3][0]     # expand?, (depthwise, BN, ReLU6), project, BN
        if stride == output_stride:
            layer_rate, rate = rate, rate * layer.stride
            layer.stride = 1
            depthwise.stride = (1, 1)
        else:
            layer_rate = 1
            stride *= layer.stride
        depthwise.dilation = depthwise.padding = (layer_rate, layer_rate)
    return features


class IntermediateLayers(nn.Sequential):
    """Layers run in order, returning the outputs of some of them by name.

    torchvision's ``IntermediateLayerGetter``: ``forward(x)`` returns
    ``{return_layers[name]: output of layer name}``, e.g. ``{"low": (N, 32, H/8, W/8),
    "out": (N, 320, H/16, W/16)}``. The layers keep their names (``"0"``, ``"1"``, ...), so
    the keys are ``backbone.0.0.weight``, ... as torchvision's.

    Args:
        layers: A Sequential whose layers (all of them) are run.
        return_layers: ``{layer name: output name}``.

    Raises:
        ValueError: A name in ``return_layers`` that is not a layer of ``layers``.
    """

    def __init__(self, layers: nn.Sequential, return_layers: dict):
        super().__init__(OrderedDict(layers.named_children()))
        missing = set(return_layers) - {name for name, _ in layers.named_children()}
        if missing:
            raise ValueError(f"IntermediateLayers: return_layers names no layer: {sorted(missing)}")
        self.return_layers = dict(return_layers)

    def forward(self, x):
        out = {}
        for name, layer in self.named_children():
            x = layer(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class ConvNormReLU(nn.Sequential):
    """conv (no bias, padding = dilation (k - 1) / 2) -> BatchNorm -> ReLU, named 0, 1, 2.

    The heads' unit, with ReLU (not ReLU6) as torchvision's segmentation heads.
    (N, Ci, H, W) -> (N, Co, H, W).

    Args:
        in_channels: Ci.
        out_channels: Co.
        kernel_size: 1 or 3.
        dilation: The atrous rate (3x3 only).
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, dilation=1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """ASPP's image-level branch: global average pool, 1x1 conv, BN, ReLU, spread back.

    (N, Ci, H, W) -> pool (N, Ci, 1, 1) -> (N, Co, 1, 1) -> bilinear to (N, Co, H, W)
    (from one pixel: the same vector at every position). It gives every pixel the whole
    image's context, which the largest atrous rate no longer reaches (DeepLabv3, 3.3).

    Args:
        in_channels: Ci.
        out_channels: Co.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x):
        size = x.shape[-2:]
        for layer in self:
            x = layer(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabv3, section 3.3), torchvision's ``ASPP``.

    Parallel branches on the same map, concatenated on the channels and projected:
    a 1x1 conv, one 3x3 conv per atrous rate $r$ (padding $r$, dilation $r$), and the
    image pooling branch, each ``out_channels`` wide with BN and ReLU; then a 1x1 conv from
    ``(2 + len(rates)) * out_channels`` to ``out_channels``, BN, ReLU and dropout 0.5.
    (N, Ci, H, W) -> (N, out_channels, H, W). With no rates, only the 1x1 and pooling
    branches remain (the paper's head "without ASPP", see
    [deeplabv3_mobilenet_v2][tinymbv2.models.deeplabv3.deeplabv3_mobilenet_v2]).

    Args:
        in_channels: Ci.
        atrous_rates: The rates of the 3x3 branches.
        out_channels: Every branch's width and the output's.
    """

    def __init__(self, in_channels, atrous_rates, out_channels=ASPP_CHANNELS):
        super().__init__()
        branches = [ConvNormReLU(in_channels, out_channels, 1)]
        branches += [ConvNormReLU(in_channels, out_channels, 3, dilation=r) for r in atrous_rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(*branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )
        self.atrous_rates = tuple(atrous_rates)

    def forward(self, x):
        return self.project(F.cat([branch(x) for branch in self.convs], axis=1))

    def extra_repr(self):
        return f"atrous_rates={self.atrous_rates}"


class DeepLabHead(nn.Sequential):
    """torchvision's DeepLabv3 head: ASPP, a 3x3 conv (256, BN, ReLU), the 1x1 classifier.

    (N, Ci, H, W) -> (N, num_classes, H, W). The 3x3 conv is torchvision's addition; the
    paper's ASPP head goes from the projection straight to the classifier.

    Args:
        in_channels: Ci.
        num_classes: The classes (the classifier has a bias).
        atrous_rates: The ASPP rates.
    """

    def __init__(self, in_channels, num_classes, atrous_rates=TORCHVISION_ATROUS_RATES):
        super().__init__(
            ASPP(in_channels, atrous_rates),
            nn.Conv2d(ASPP_CHANNELS, ASPP_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(ASPP_CHANNELS),
            nn.ReLU(),
            nn.Conv2d(ASPP_CHANNELS, num_classes, 1),
        )


class SimpleHead(nn.Sequential):
    """The paper's head without ASPP: the 1x1 and image pooling branches, projection, classifier.

    ``ASPP(in_channels, atrous_rates=())`` then a 1x1 conv to the classes: (N, Ci, H, W) ->
    (N, num_classes, H, W). The footnote to Table 7 names these parts ("1 x 1 convolution
    as well as image-pooling feature"); it is what DeepLab's code builds with no atrous
    rates (its image-level feature on, the default); and with Ci = 320 and 21 classes it
    has the 301,845 parameters that bring MobileNetV2's 1,811,712 to Table 7's 2.11M.

    Args:
        in_channels: Ci.
        num_classes: The classes (the classifier has a bias).
    """

    def __init__(self, in_channels, num_classes):
        super().__init__(
            ASPP(in_channels, ()),
            nn.Conv2d(ASPP_CHANNELS, num_classes, 1),
        )


class LRASPPHead(nn.Module):
    r"""Lite R-ASPP (MobileNetV3 paper, section 6.3), torchvision's ``LRASPPHead``.

    High-level branch on ``high`` (N, Ch, h, w): $x$ = 1x1 conv to ``inter_channels``, BN,
    ReLU, times a gate $s = \sigma(\text{1x1 conv}(\text{avgpool}(\text{high})))$ of shape
    (N, inter, 1, 1) (squeeze-and-excitation style), then bilinear to the size of ``low``.
    Low-level branch: ``low`` (N, Cl, H/8, W/8) through a 1x1 conv to the classes, added:

    $$\text{out} = W_l * \text{low} + b_l + W_h * \text{up}(\text{cbr}(\text{high}) \cdot s) + b_h$$

    forward: ``{"low": ..., "high": ...}`` -> (N, num_classes, H/8, W/8).

    Args:
        low_channels: Cl.
        high_channels: Ch.
        num_classes: The classes.
        inter_channels: The high branch's width.
    """

    def __init__(self, low_channels, high_channels, num_classes, inter_channels=LRASPP_CHANNELS):
        super().__init__()
        self.cbr = ConvNormReLU(high_channels, inter_channels, 1)
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, features):
        low, high = features["low"], features["high"]
        x = self.cbr(high) * self.scale(high)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class DeepLabV3(nn.Module):
    """A segmentation network: dilated backbone, head, logits upsampled to the input.

    torchvision's ``DeepLabV3`` and ``LRASPP`` in one: the backbone returns its named
    feature maps; the head gets ``"out"`` (ASPP, simple) or them all (LR-ASPP: ``"low"``
    and ``"high"``). forward: (N, C, H, W) -> logits (N, num_classes, H, W), bilinear with
    ``align_corners=False`` from the head's (N, num_classes, H/os, W/os).

    Args:
        backbone: An [IntermediateLayers][tinymbv2.models.deeplabv3.IntermediateLayers].
        classifier: The head.
        num_classes: The classes.
        output_stride: The backbone's output stride.
        head: ``"aspp"``, ``"simple"`` or ``"lraspp"``.
    """

    def __init__(self, backbone, classifier, num_classes, output_stride, head):
        super().__init__()
        self.backbone, self.classifier = backbone, classifier
        self.num_classes, self.output_stride, self.head = num_classes, output_stride, head

    def forward(self, x):
        features = self.backbone(x)
        y = self.classifier(features if self.head == "lraspp" else features["out"])
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def extra_repr(self):
        return f"num_classes={self.num_classes}, output_stride={self.output_stride}, head={self.head!r}"


def _generator(seed):
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _check(num_classes, output_stride, head, atrous_rates, in_channels):
    def is_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    fn = "deeplabv3_mobilenet_v2"
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"{fn}: expected num_classes >= 1, got {num_classes!r}")
    if output_stride not in OUTPUT_STRIDES or not is_int(output_stride):
        raise ValueError(f"{fn}: expected output_stride 8 or 16, got {output_stride!r} "
                         "(32 is the undilated classifier's; Table 7 uses 16)")
    if head not in HEADS:
        raise ValueError(f"{fn}: expected head in {HEADS}, got {head!r}")
    if not is_int(in_channels) or in_channels < 1:
        raise ValueError(f"{fn}: expected in_channels >= 1, got {in_channels!r}")
    if atrous_rates is None:
        return
    if head != "aspp":
        raise ValueError(f"{fn}: only the 'aspp' head has atrous rates, got atrous_rates="
                         f"{atrous_rates!r} with head={head!r}")
    if (not isinstance(atrous_rates, (tuple, list)) or len(atrous_rates) != 3
            or not all(is_int(r) and r >= 1 for r in atrous_rates)):
        raise ValueError(f"{fn}: expected atrous_rates as three ints >= 1 (e.g. (6, 12, 18)), "
                         f"got {atrous_rates!r}")


def deeplabv3_mobilenet_v2(num_classes: int, output_stride: int = 16, head: str = "aspp",
                           width_mult: float = 1.0, atrous_rates=None, in_channels: int = 3,
                           seed=None) -> DeepLabV3:
    """Mobile DeepLabv3 (section 6.3, Table 7): MobileNetV2, dilated, with a segmentation head.

    The backbone is a [MobileNetV2][tinymbv2.models.mobilenetv2.MobileNetV2] whose strides
    past ``output_stride`` become dilation ([dilate][tinymbv2.models.deeplabv3.dilate]),
    cut after its last block (320 channels at width 1; the 1x1 conv to 1280 and the
    classifier are dropped: ``MNet V2*``). The heads, on that map:

    * ``"aspp"``: torchvision's [DeepLabHead][tinymbv2.models.deeplabv3.DeepLabHead]: ASPP
      (1x1, three atrous 3x3, image pooling; 256 channels; projection, dropout 0.5), a 3x3
      conv and the classifier. 21 classes: 5,113,877 parameters
      (the paper's 4.52M has no 3x3 conv after ASPP).
    * ``"simple"``: the paper's head "without ASPP"
      ([SimpleHead][tinymbv2.models.deeplabv3.SimpleHead]): ASPP with no atrous branch, i.e.
      the 1x1 and image pooling branches, the projection and the classifier. Chosen over a
      lone 1x1 conv because it is what DeepLab's code (the paper's) builds with no atrous
      rates, and it gives Table 7's 2.11M parameters exactly (2,113,557).
    * ``"lraspp"``: torchvision's [LRASPPHead][tinymbv2.models.deeplabv3.LRASPPHead], its
      low branch on the output of block 4 (``features.4``, the first block at output stride
      8, 32 channels: torchvision's rule for MobileNetV3, ``stage_indices[-4]``), its high branch
      on the 320 channels, 128 wide.

    ``atrous_rates`` (ASPP only): None gives DeepLabv3's (6, 12, 18) at output stride 16 and
    (12, 24, 36) at 8, so the branches cover the same part of the image at both strides.
    torchvision's ``DeepLabHead`` hard-codes (12, 24, 36), DeepLabv3's rates for output
    stride 8 (its ResNet models run at 8); at 16 on a 512 px image (a 32 x 32 map) the
    rate-36 branch's outer taps fall outside the map at every position, so that branch is a
    1x1 conv (its centre tap) in all but cost (DeepLabv3's Figure 4 shows the effect). Heads use ReLU and PyTorch's default initialisation (as
    torchvision's); the backbone MobileNetV2's.

    Args:
        num_classes: K, the classes (background included).
        output_stride: 16 (Table 7) or 8: the input size over the head's map.
        head: ``"aspp"``, ``"simple"`` or ``"lraspp"``.
        width_mult: MobileNetV2's width multiplier (the heads' widths are not scaled).
        atrous_rates: Three ints for ASPP's 3x3 branches; None: the default above.
        in_channels: The image channels.
        seed: An int or ``np.random.Generator`` for a reproducible initialisation; None: the
            package's global generator.

    Returns:
        The [DeepLabV3][tinymbv2.models.deeplabv3.DeepLabV3]: (N, in_channels, H, W) ->
        logits (N, num_classes, H, W).

    Raises:
        ValueError: ``output_stride`` not 8 or 16, an unknown head, ``atrous_rates`` not
            three ints >= 1 or given to another head, or a count below 1.
    """
    _check(num_classes, output_stride, head, atrous_rates, in_channels)
    generator = _generator(seed)
    mobilenet = MobileNetV2(width_mult=width_mult, in_channels=in_channels, generator=generator)
    features = dilate(mobilenet.features[:-1], output_stride)  # without the 1x1 conv to 1280
    last = str(len(features) - 1)
    high_channels = features[-1].out_channels
    if head == "lraspp":
        backbone = IntermediateLayers(features, {str(LOW_LEVEL_BLOCK): "low", last: "high"})
        low_channels = features[LOW_LEVEL_BLOCK].out_channels
        classifier = LRASPPHead(low_channels, high_channels, num_classes)
    else:
        backbone = IntermediateLayers(features, {last: "out"})
        if head == "aspp":
            rates = ATROUS_RATES[output_stride] if atrous_rates is None else tuple(atrous_rates)
            classifier = DeepLabHead(high_channels, num_classes, rates)
        else:
            classifier = SimpleHead(high_channels, num_classes)
    for m in classifier.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters(generator)
    return DeepLabV3(backbone, classifier, num_classes, output_stride, head)
