"""``tinymbv2 summary``: per-layer parameters, multiply-adds and activation sizes."""
from __future__ import annotations

from ..models import mobilenet_v2, seed_article_net, summary
from .args import positive


def add_summary(p) -> None:
    """Add the arguments of ``tinymbv2 summary`` to its sub-parser ``p``."""
    p.add_argument("--width", type=positive(float), default=1.0, help="width multiplier (1.0)")
    p.add_argument("--resolution", type=positive(int), default=224, help="input size in px (224)")
    p.add_argument("--classes", type=positive(int), default=1000, help="number of classes (1000)")
    p.add_argument("--in-channels", type=positive(int), default=3, help="image channels (3)")
    p.add_argument("--small-input", action="store_true",
                   help="stem and first 24-channel stage at stride 1 (28-32 px images)")
    p.add_argument("--arch", choices=("mobilenet_v2", "seed-article"), default="mobilenet_v2",
                   help="the paper's network, or the seed article's 7-block one")


def run_summary(args) -> int:
    """Run ``tinymbv2 summary`` with the parsed ``args``; returns the exit code."""
    build = seed_article_net if args.arch == "seed-article" else mobilenet_v2
    model = build(width_mult=args.width, num_classes=args.classes, in_channels=args.in_channels,
                  small_input=args.small_input, seed=0)
    res = args.resolution
    print(summary(model, input_size=(args.in_channels, res, res)))
    return 0
