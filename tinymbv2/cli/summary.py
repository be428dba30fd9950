"""``tinymbv2 summary``: per-layer parameters, multiply-adds and activation sizes.

``--task segment`` summarises Mobile DeepLabv3
([deeplabv3_mobilenet_v2][tinymbv2.models.deeplabv3.deeplabv3_mobilenet_v2]) instead of the
classifier; at Table 7's setting (21 classes, output stride 16, head ``aspp`` or ``simple``)
it prints the paper's figures under ours (docs/article-errors.md explains each difference).
"""
from __future__ import annotations

from ..models import deeplabv3_mobilenet_v2, mobilenet_v2, seed_article_net, summary
from ..train.config import OUTPUT_STRIDES, SEG_HEADS
from .args import positive

# The paper's Table 7 (MNet V2*, output stride 16, PASCAL VOC's 21 classes, "512 px"): head ->
# (parameters, multiply-adds), as printed there
TABLE_7 = {"aspp": ("4.52M", "5.8B"), "simple": ("2.11M", "2.75B")}


def add_summary(p) -> None:
    """Add the arguments of ``tinymbv2 summary`` to its sub-parser ``p``."""
    p.add_argument("--task", choices=("classify", "segment"), default="classify",
                   help="classify: MobileNetV2 (or --arch); segment: Mobile DeepLabv3 (--head, "
                        "--output-stride)")
    p.add_argument("--width", type=positive(float), default=1.0, help="width multiplier (1.0)")
    p.add_argument("--resolution", type=positive(int), default=224,
                   help="input size in px (224)")
    p.add_argument("--classes", type=positive(int), default=1000,
                   help="number of classes (1000; a segmenter's count the background)")
    p.add_argument("--in-channels", type=positive(int), default=3, help="image channels (3)")
    p.add_argument("--small-input", action="store_true",
                   help="stem and first 24-channel stage at stride 1 (28-32 px images)")
    p.add_argument("--arch", choices=("mobilenet_v2", "seed-article"), default="mobilenet_v2",
                   help="the paper's network, or the seed article's 7-block one")
    p.add_argument("--head", choices=SEG_HEADS, default="aspp", help="--task segment: the head (aspp)")
    p.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES, default=16,
                   help="--task segment: the input size over the head's map (16)")


def run_summary(args) -> int:
    """Run ``tinymbv2 summary`` with the parsed ``args``; returns the exit code."""
    res = args.resolution
    if args.task == "segment":
        if args.small_input or args.arch != "mobilenet_v2":
            raise ValueError("summary: --task segment is Mobile DeepLabv3 on MobileNetV2 with the "
                             "paper's strides: no --small-input or --arch")
        model = deeplabv3_mobilenet_v2(args.classes, output_stride=args.output_stride, head=args.head,
                                       width_mult=args.width, in_channels=args.in_channels, seed=0)
        print(summary(model, input_size=(args.in_channels, res, res)))
        if (args.classes, args.output_stride, args.width, args.in_channels) == (21, 16, 1.0, 3) \
                and args.head in TABLE_7:
            params, macs = TABLE_7[args.head]
            print(f"Table 7 (the paper, MNet V2*, {'with' if args.head == 'aspp' else 'without'} "
                  f"ASPP, output stride 16, 512 px): {params} parameters, {macs} multiply-adds; "
                  f"docs/article-errors.md explains the differences")
        return 0
    build = seed_article_net if args.arch == "seed-article" else mobilenet_v2
    model = build(width_mult=args.width, num_classes=args.classes, in_channels=args.in_channels,
                  small_input=args.small_input, seed=0)
    print(summary(model, input_size=(args.in_channels, res, res)))
    return 0
