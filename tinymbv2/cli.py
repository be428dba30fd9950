"""The ``tinymbv2`` command line: argument parsing and printing only.

    tinymbv2 summary --width 0.5 --resolution 160 [--small-input] [--classes 10]
                     [--in-channels 1] [--arch seed-article]
    tinymbv2 train --dataset mnist5k --width 0.5 --epochs 8 --out runs/mnist
    tinymbv2 eval runs/mnist/model.npz --dataset mnist5k
    tinymbv2 predict runs/mnist/model.npz digit.png
    tinymbv2 finetune runs/mnist/model.npz --dataset digits --epochs 5
    tinymbv2 search --dataset digits --kind random --trials 6

Each subcommand is one entry in ``COMMANDS``: a function that adds its
arguments to a sub-parser and a function that runs it and returns the exit
code. Bad arguments print one line ``tinymbv2 <command>: error: ...`` to
stderr and exit with code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .cli_train import positive as _positive


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line (no usage dump), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# -- summary ---------------------------------------------------------------------
def _add_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=_positive(float), default=1.0, help="width multiplier (1.0)")
    p.add_argument("--resolution", type=_positive(int), default=224, help="input size in px (224)")
    p.add_argument("--classes", type=_positive(int), default=1000, help="number of classes (1000)")
    p.add_argument("--in-channels", type=_positive(int), default=3, help="image channels (3)")
    p.add_argument("--small-input", action="store_true",
                   help="stem and first 24-channel stage at stride 1 (28-32 px images)")
    p.add_argument("--arch", choices=("mobilenet_v2", "seed-article"), default="mobilenet_v2",
                   help="the paper's network, or the seed article's 7-block one")


def _run_summary(args) -> int:
    from .models import mobilenet_v2, seed_article_net, summary

    build = seed_article_net if args.arch == "seed-article" else mobilenet_v2
    model = build(width_mult=args.width, num_classes=args.classes, in_channels=args.in_channels,
                  small_input=args.small_input, seed=0)
    res = args.resolution
    print(summary(model, input_size=(args.in_channels, res, res)))
    return 0


def _commands():
    from .cli_train import COMMANDS as TRAINING_COMMANDS

    return {
        # name: (help, add_arguments, run)
        "summary": ("per-layer parameters, multiply-adds and activation sizes", _add_summary,
                    _run_summary),
        **TRAINING_COMMANDS,
    }


COMMANDS = _commands()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinymbv2", description="MobileNetV2 from scratch on NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv=None) -> int:
    """Entry point of ``tinymbv2`` and ``python -m tinymbv2``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error(f"a command is required (one of: {', '.join(COMMANDS)})")
    try:
        return COMMANDS[args.command][2](args)
    except (ValueError, TypeError, OSError) as exc:  # bad values, missing or broken files
        print(f"tinymbv2 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinymbv2 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
