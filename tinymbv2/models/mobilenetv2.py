"""MobileNetV2 (Sandler et al., CVPR 2018, arXiv:1801.04381), built like torchvision's.

The network is Table 2 of the paper held as data: a 3x3 stem conv, then rows of
(t, c, n, s) -- expansion t, output channels c, n repeats, stride s of the first
repeat -- each repeat an inverted residual block (Table 1), then a 1x1 conv to
1280 channels, global average pooling and a Linear classifier.

Module names equal torchvision's, so ``state_dict()`` has exactly its keys:
``features.0`` stem, ``features.1..17`` blocks, ``features.18`` head conv,
``classifier.1`` the Linear (``classifier.0`` is the Dropout).

Shapes at 224 px, width 1.0: (N, 3, 224, 224) -> stem (N, 32, 112, 112) -> ...
-> (N, 320, 7, 7) -> head (N, 1280, 7, 7) -> pool (N, 1280) -> (N, classes).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import nn
from ..nn import init

# Table 2 of the paper: (t, c, n, s) for the bottleneck rows.
TABLE2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32    # Table 2, first row: conv 3x3, 32 channels, stride 2
LAST_CHANNEL = 1280   # Table 2, conv 1x1 before pooling; never scaled below 1280


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    r"""Round ``v`` channels to the nearest multiple of ``divisor`` (torchvision/TF-slim).

    ``max(min_value, int(v + divisor / 2) // divisor * divisor)``, plus one divisor if that
    rounded down by more than 10%. E.g. $32 \times 0.35 = 11.2 \to 16$,
    $16 \times 0.35 = 5.6 \to 8$.

    Args:
        v: The channels before rounding (a width times a multiplier).
        divisor: The multiple to round to.
        min_value: The smallest result; None: ``divisor``.

    Returns:
        The rounded channel count.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


ACTIVATIONS = {"relu6": nn.ReLU6, "relu": nn.ReLU}
"""The network's activation: the paper's ReLU6, or ReLU (section 3.2 chose ReLU6 "because of
its robustness when used with low-precision computation"; the ReLU network tests that)."""


class Conv2dNormActivation(nn.Sequential):
    """conv (no bias, padding ``(k - 1) // 2``) -> BatchNorm -> ReLU6 (or ReLU).

    The three are named ``'0'``, ``'1'``, ``'2'``, as torchvision names them.

    (N, Ci, H, W) -> (N, Co, ceil(H / s), ceil(W / s)) for k = 3 or 1.

    Args:
        in_channels: Ci.
        out_channels: Co.
        kernel_size: k, 3 or 1.
        stride: s.
        groups: The convolution's groups (``groups == Ci``: depthwise).
        activation: ``"relu6"`` (the paper's) or ``"relu"``.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1,
                 activation="relu6"):
        _check_activation(activation)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                      padding=(kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            ACTIVATIONS[activation](),
        )
        self.out_channels = out_channels


SHORTCUTS = ("bottleneck", "expansion", "none")
BOTTLENECK_ACTIVATIONS = (None, "relu6")


class InvertedResidual(nn.Module):
    """The bottleneck block of Table 1: expand, filter, linear projection (section 3.3).

    x (N, inp, H, W) -> 1x1 conv to hidden = round(inp · t) channels, BN, ReLU6
    (skipped when t = 1) -> 3x3 depthwise conv stride s, BN, ReLU6 -> 1x1 conv to
    oup channels, BN, *no activation* (a ReLU would destroy information in the
    low-dimensional bottleneck, section 3.2) -> (N, oup, H / s, W / s).
    The input is added back (the residual connects the thin bottlenecks,
    section 3.3) only when s = 1 and inp = oup.

    The two other arguments build the ablations of the paper's Figure 6; their defaults
    are the block above (torchvision's). ``bottleneck_activation="relu6"`` puts a ReLU6
    after the projection's BN (Fig. 6a, "relu6 in bottleneck"; before the add, so the
    residual branch ends in it). ``shortcut="expansion"`` drops the add of the bottlenecks
    and instead connects the expanded (hidden-channel) tensors of consecutive blocks
    (Fig. 6b): the model's ``features`` then run the blocks through
    [forward_expansion_shortcut][tinymbv2.models.mobilenetv2.InvertedResidual.forward_expansion_shortcut]
    (see [ExpansionShortcuts][tinymbv2.models.mobilenetv2.ExpansionShortcuts]).
    ``shortcut="none"``: no add at all.

    Args:
        inp: The input channels.
        oup: The output channels.
        stride: s, 1 or 2 (of the depthwise convolution).
        expand_ratio: t, the expansion factor of the hidden width.
        bottleneck_activation: None (linear bottleneck, the paper's) or ``"relu6"``.
        shortcut: ``"bottleneck"`` (the paper's), ``"expansion"`` or ``"none"``.
        activation: The activation after the expansion and the depthwise filter:
            ``"relu6"`` (the paper's) or ``"relu"``.

    Raises:
        ValueError: A stride other than 1 or 2, ``expand_ratio <= 0``, or an unknown
            activation or shortcut.
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: float,
                 bottleneck_activation: str | None = None, shortcut: str = "bottleneck",
                 activation: str = "relu6"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: expected stride 1 or 2, got {stride!r}")
        if not isinstance(expand_ratio, numbers.Real) or expand_ratio <= 0:
            raise ValueError(f"InvertedResidual: expected expand_ratio > 0, got {expand_ratio!r}")
        _check_ablation(bottleneck_activation, shortcut)
        _check_activation(activation)
        self.inp, self.oup, self.stride, self.expand_ratio = inp, oup, stride, expand_ratio
        self.activation = activation
        self.bottleneck_activation, self.shortcut = bottleneck_activation, shortcut
        self.hidden_dim = hidden = int(round(inp * expand_ratio))
        self.use_res_connect = shortcut == "bottleneck" and stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden, kernel_size=1, activation=activation))
        layers += [
            Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden,
                                 activation=activation),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        if bottleneck_activation == "relu6":
            layers.append(nn.ReLU6())  # no parameters: the state_dict keys stay the same
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)

    def forward_expansion_shortcut(self, x, previous_expansion):
        """The block with the shortcut between expansions (Fig. 6b): its expanded tensor
        gets the previous block's added, where the two have the same shape.

        ``expanded = expand(x) (+ previous_expansion)``; the output is
        ``project(depthwise(expanded))``, with no add of the bottlenecks.

        Args:
            x: The block's input, (N, inp, H, W).
            previous_expansion: The previous block's expanded tensor (after its own add),
                (N, hidden', H', W'), or None (the first block after a plain layer).

        Returns:
            ``(output, expanded)``: (N, oup, H / s, W / s) and (N, hidden, H, W), the
            latter for the next block.
        """
        n_expand = 1 if self.expand_ratio != 1 else 0  # the expansion layer, if any
        expanded = self.conv[:n_expand](x) if n_expand else x
        if previous_expansion is not None and previous_expansion.shape == expanded.shape:
            expanded = expanded + previous_expansion
        return self.conv[n_expand:](expanded), expanded

    def extra_repr(self):
        text = (f"inp={self.inp}, oup={self.oup}, stride={self.stride}, "
                f"expand_ratio={self.expand_ratio}, residual={self.use_res_connect}")
        if self.bottleneck_activation is not None:
            text += f", bottleneck_activation={self.bottleneck_activation!r}"
        if self.shortcut != "bottleneck":
            text += f", shortcut={self.shortcut!r}"
        if self.activation != "relu6":
            text += f", activation={self.activation!r}"
        return text


class ExpansionShortcuts(nn.Sequential):
    """``features`` of a model with the shortcut between expansions (Fig. 6b).

    Runs its layers in order like a Sequential, and hands each inverted residual block
    the previous block's expanded tensor (None after a layer that is not a block), so the
    add sits between the wide tensors instead of the thin ones. Same children, so the
    same ``state_dict`` keys as the plain ``features``.
    """

    def forward(self, x):
        expansion = None
        for layer in self:
            if isinstance(layer, InvertedResidual):
                x, expansion = layer.forward_expansion_shortcut(x, expansion)
            else:
                x, expansion = layer(x), None
        return x


class MobileNetV2(nn.Module):
    """MobileNetV2 (torchvision's structure and initialisation).

    forward: (N, in_channels, H, W) -> logits (N, num_classes).

    Args:
        num_classes: The classifier's outputs.
        width_mult: Scales every width: the stage widths are
            ``make_divisible(c * width_mult, round_nearest)``; the 1280 head only grows, for
            ``width_mult > 1``.
        inverted_residual_setting: The (t, c, n, s) rows; None: Table 2.
        round_nearest: The channel multiple the widths are rounded to.
        dropout: The dropout probability before the classifier, in [0, 1).
        in_channels: The image channels (1 for grey).
        small_input: Stem stride 1 and the second row (the 24-channel stage) stride 1, the
            common variant for 28-32 px images.
        generator: An ``np.random.Generator`` for the initialisation; None: the package's
            global one.
        bottleneck_activation: None (linear bottlenecks, the paper's) or ``"relu6"`` (the
            ablation of Fig. 6a); see
            [InvertedResidual][tinymbv2.models.mobilenetv2.InvertedResidual].
        shortcut: ``"bottleneck"`` (the paper's), ``"expansion"`` or ``"none"`` (the
            ablations of Fig. 6b).
        expand_ratio: None keeps each row's t; an int t >= 1 replaces the t of every row
            but the first (see [mobilenet_v2][tinymbv2.models.mobilenetv2.mobilenet_v2]).
        activation: ``"relu6"`` (the paper's) or ``"relu"``, in every layer that has one.

    Raises:
        ValueError: An argument out of its range.
    """

    def __init__(self, num_classes=1000, width_mult=1.0, inverted_residual_setting=None,
                 round_nearest=8, dropout=0.2, in_channels=3, small_input=False,
                 generator=None, bottleneck_activation=None, shortcut="bottleneck",
                 expand_ratio=None, activation="relu6"):
        super().__init__()
        _check_args(num_classes, width_mult, round_nearest, dropout, in_channels)
        _check_ablation(bottleneck_activation, shortcut)
        _check_expand_ratio(expand_ratio)
        _check_activation(activation)
        self.bottleneck_activation, self.shortcut = bottleneck_activation, shortcut
        self.activation = activation
        rows = TABLE2 if inverted_residual_setting is None else inverted_residual_setting
        setting = [list(row) for row in rows]
        if not setting or any(len(row) != 4 for row in setting):
            raise ValueError(
                "MobileNetV2: expected inverted_residual_setting as non-empty (t, c, n, s) rows, "
                f"got {inverted_residual_setting!r}"
            )
        if expand_ratio is not None:
            for row in setting[1:]:  # the first row keeps its t (Table 2: 1)
                row[0] = int(expand_ratio)
        stem_stride = 2
        if small_input:
            stem_stride = 1
            if len(setting) > 1:
                setting[1][3] = 1
        self.width_mult, self.small_input = float(width_mult), bool(small_input)
        self.inverted_residual_setting = [tuple(row) for row in setting]

        input_channel = make_divisible(STEM_CHANNELS * width_mult, round_nearest)
        stem = (input_channel, stem_stride)
        blocks = []  # (inp, oup, stride, t) of every inverted residual block
        for t, c, n, s in setting:
            output_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                blocks.append((input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        last_channel = make_divisible(LAST_CHANNEL * max(1.0, width_mult), round_nearest)
        self._build(in_channels, stem, blocks, last_channel, num_classes, dropout)
        self.reset_parameters(generator)

    @classmethod
    def from_blocks(cls, in_channels, stem, blocks, last_channel, num_classes, dropout=0.2,
                    generator=None) -> "MobileNetV2":
        """A MobileNetV2 from explicit widths (used to mirror an existing torchvision model).

        Args:
            in_channels: The image channels.
            stem: ``(channels, stride)`` of the stem convolution.
            blocks: ``[(inp, oup, stride, t), ...]``, one per inverted residual block.
            last_channel: The head convolution's width.
            num_classes: The classifier's outputs.
            dropout: The dropout probability before the classifier.
            generator: An ``np.random.Generator`` for the initialisation; None: the package's
                global one.

        Returns:
            The model.
        """
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.width_mult, model.small_input, model.inverted_residual_setting = None, None, None
        model.bottleneck_activation, model.shortcut, model.activation = None, "bottleneck", "relu6"
        model._build(in_channels, stem, blocks, last_channel, num_classes, dropout)
        model.reset_parameters(generator)
        return model

    def _build(self, in_channels, stem, blocks, last_channel, num_classes, dropout):
        self.last_channel = last_channel
        act = self.activation
        features = [Conv2dNormActivation(in_channels, stem[0], stride=stem[1], activation=act)]
        features += [InvertedResidual(*spec, bottleneck_activation=self.bottleneck_activation,
                                      shortcut=self.shortcut, activation=act) for spec in blocks]
        head_in = blocks[-1][1] if blocks else stem[0]
        features.append(Conv2dNormActivation(head_in, last_channel, kernel_size=1, activation=act))
        # attribute order = forward order (the summary walks the children in order)
        container = ExpansionShortcuts if self.shortcut == "expansion" else nn.Sequential
        self.features = container(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_channel, num_classes))

    def reset_parameters(self, generator=None):
        """torchvision's init: conv kaiming-normal fan_out, BN 1 and 0, Linear $N(0, 0.01^2)$ and 0.

        Args:
            generator: An ``np.random.Generator``; None: the package's global one.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", generator=generator)
                if m.bias is not None:
                    init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
            elif isinstance(m, nn.Linear):
                init.normal_(m.weight, 0.0, 0.01, generator=generator)
                init.zeros_(m.bias)

    @property
    def blocks(self):
        return [m for m in self.features if isinstance(m, InvertedResidual)]

    def forward(self, x):
        x = self.features(x)
        x = self.flatten(self.pool(x))
        return self.classifier(x)


def _check_args(num_classes, width_mult, round_nearest, dropout, in_channels):
    def is_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"MobileNetV2: expected num_classes >= 1, got {num_classes!r}")
    if not isinstance(width_mult, numbers.Real) or not width_mult > 0:
        raise ValueError(f"MobileNetV2: expected width_mult > 0, got {width_mult!r}")
    if not is_int(round_nearest) or round_nearest < 1:
        raise ValueError(f"MobileNetV2: expected round_nearest >= 1, got {round_nearest!r}")
    if not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"MobileNetV2: expected dropout in [0, 1), got {dropout!r}")
    if not is_int(in_channels) or in_channels < 1:
        raise ValueError(f"MobileNetV2: expected in_channels >= 1, got {in_channels!r}")


def _check_expand_ratio(expand_ratio):
    if expand_ratio is None:
        return
    if (not isinstance(expand_ratio, numbers.Integral) or isinstance(expand_ratio, bool)
            or expand_ratio < 1):
        raise ValueError("MobileNetV2: expected expand_ratio None or an int >= 1, "
                         f"got {expand_ratio!r}")


def _check_ablation(bottleneck_activation, shortcut):
    if bottleneck_activation not in BOTTLENECK_ACTIVATIONS:
        raise ValueError("MobileNetV2: expected bottleneck_activation None or 'relu6', "
                         f"got {bottleneck_activation!r}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"MobileNetV2: expected shortcut in {SHORTCUTS}, got {shortcut!r}")


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"MobileNetV2: expected activation in {tuple(ACTIVATIONS)}, got "
                         f"{activation!r}")


def _generator(seed):
    if seed is None:
        return None
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def mobilenet_v2(width_mult=1.0, num_classes=1000, dropout=0.2, in_channels=3,
                 small_input=False, seed=None, bottleneck_activation=None,
                 shortcut="bottleneck", expand_ratio=None, activation="relu6") -> MobileNetV2:
    r"""MobileNetV2 of Table 2.

    ``mobilenet_v2()`` has torchvision's 3,504,872 parameters and 300.8M multiply-adds
    at 224 px; ``small_input=True`` keeps 4x4 final maps on 32 px (CIFAR) images.

    ``expand_ratio=t`` sets the expansion of blocks 2-17 (Table 2's 6) to t; the first
    block keeps Table 2's t = 1. It runs on the largest maps (the stem's stride only), and
    its input, the stem's 32 channels, is already twice the 16 it projects to, so its
    depthwise stage is wide without an expansion; a t there would multiply the cost of the
    most expensive block. A block of stride 1 on $h \times w$ maps, $k$ channels in and
    $k'$ out, has $k t (k + 9 + k')$ weights (plus its BatchNorms) and costs
    $h w \cdot k t (k + 9 + k')$ multiply-adds: both linear in t.

    Args:
        width_mult: Scales every width (0.35 to 1.4 in the paper).
        num_classes: The classifier's outputs.
        dropout: The dropout probability before the classifier.
        in_channels: The image channels.
        small_input: Stem and 24-channel stage at stride 1, for 28-32 px images.
        seed: An int or an ``np.random.Generator`` that makes the init reproducible; None:
            the package's global generator.
        bottleneck_activation: None (linear bottlenecks, the paper's network) or
            ``"relu6"`` (Fig. 6a's ablation); the same parameters either way.
        shortcut: ``"bottleneck"`` (the paper's network), ``"expansion"`` (the residual
            connects the expanded tensors, Fig. 6b) or ``"none"``; the same parameters.
        expand_ratio: None: Table 2's t (1 for the first block, 6 for the others); an
            int t >= 1: t for blocks 2-17.
        activation: ``"relu6"`` (the paper's network) or ``"relu"`` in every layer that has
            an activation (the comparison behind section 3.2's choice of ReLU6 for
            low-precision computation); the same parameters either way.

    Returns:
        The [MobileNetV2][tinymbv2.models.mobilenetv2.MobileNetV2].

    Raises:
        ValueError: An argument out of its range (e.g. ``expand_ratio`` 0, negative or
            not an int, an unknown activation).
    """
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout,
                       in_channels=in_channels, small_input=small_input,
                       generator=_generator(seed), bottleneck_activation=bottleneck_activation,
                       shortcut=shortcut, expand_ratio=expand_ratio, activation=activation)


# The seed article's network, its bugs fixed: one block per Table-2 row (n = 1).
SEED_ARTICLE_SETTING = tuple((t, c, 1, s) for t, c, _, s in TABLE2)


def seed_article_net(width_mult=1.0, num_classes=1000, dropout=0.2, in_channels=3,
                     small_input=False, seed=None, activation="relu6") -> MobileNetV2:
    """The seed article's 7-block network, repaired, to compare against the real one.

    The article uses one bottleneck per Table-2 row (t, c, s of the row, n = 1).
    Here each is a proper block (1x1 expand, 3x3 depthwise, linear 1x1 project) and
    the net has the stem, the 1280 head and one Linear. Every block changes its
    width or stride, so none has a residual add. Width 1.0, 1000 classes:
    2,426,984 parameters and 145,786,880 multiply-adds at 224 (vs 3.50M and 300.8M).

    Args:
        width_mult: Scales every width.
        num_classes: The classifier's outputs.
        dropout: The dropout probability before the classifier.
        in_channels: The image channels.
        small_input: Stem and 24-channel stage at stride 1, for 28-32 px images.
        seed: An int or an ``np.random.Generator``; None: the package's global generator.
        activation: ``"relu6"`` or ``"relu"``, as in
            [mobilenet_v2][tinymbv2.models.mobilenetv2.mobilenet_v2].

    Returns:
        The [MobileNetV2][tinymbv2.models.mobilenetv2.MobileNetV2].
    """
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult,
                       inverted_residual_setting=SEED_ARTICLE_SETTING, dropout=dropout,
                       in_channels=in_channels, small_input=small_input,
                       generator=_generator(seed), activation=activation)
