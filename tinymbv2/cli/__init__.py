"""The ``tinymbv2`` command line (layer 8): argument parsing and printing only.

    tinymbv2 summary --width 0.5 --resolution 160 [--small-input] [--classes 10]
                     [--in-channels 1] [--arch seed-article]
    tinymbv2 train --dataset mnist5k --width 0.5 --epochs 8 --out runs/mnist
    tinymbv2 eval runs/mnist/model.npz --dataset mnist5k
    tinymbv2 predict runs/mnist/model.npz digit.png
    tinymbv2 finetune runs/mnist/model.npz --dataset digits --epochs 5
    tinymbv2 search --dataset digits --kind random --trials 6
    tinymbv2 warmup [--float64]
    tinymbv2 export runs/mnist/model.npz --onnx model.onnx [--no-fold] [--opset 17]
    mpirun -n 2 tinymbv2 train ...   (data-parallel on 2 ranks: cli/ranks.py)

Each command is one module here with two functions: one adds its arguments to a
sub-parser, the other runs it and returns the exit code; ``COMMANDS`` lists them.
What they share (the parser, argument types, the data and recipe arguments,
``--no-fuse``) is in ``tinymbv2.cli.args``. Bad arguments, and bad files (a damaged
checkpoint, an unreadable or oversized image), print one line
``tinymbv2 <command>: error: ...`` to stderr, naming the argument or the file, and exit
with code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .args import Parser
from .eval import add_eval, run_eval
from .export import add_export, run_export
from .finetune import add_finetune, run_finetune_command
from ..distributed.world import launched_by_mpirun
from .predict import add_predict, run_predict
from .ranks import run_on_ranks
from .search import add_search, run_search_command
from .summary import add_summary, run_summary
from .train import add_train, run_train
from .warmup import add_warmup, run_warmup

COMMANDS = {
    # name: (help, add_arguments, run)
    "summary": ("per-layer parameters, multiply-adds and activation sizes", add_summary,
                run_summary),
    "train": ("train a network and write a run folder", add_train, run_train),
    "eval": ("evaluate a checkpoint on a dataset split", add_eval, run_eval),
    "predict": ("top-k classes for image files", add_predict, run_predict),
    "finetune": ("fine-tune a checkpoint on another dataset", add_finetune, run_finetune_command),
    "search": ("grid or random hyper-parameter search", add_search, run_search_command),
    "warmup": ("compile the numba kernels ahead of time (fills Numba's cache)", add_warmup,
               run_warmup),
    "export": ("write a checkpoint's model as an ONNX graph", add_export, run_export),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``tinymbv2`` parser, one sub-parser per command."""
    parser = Parser(prog="tinymbv2", description="MobileNetV2 from scratch on NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, so that the command's error stays one line.

    One line to read and to grep: a message of several lines (a library's) has its lines
    joined by "; ".

    Args:
        exc: The exception.

    Returns:
        Its message on one line (its class name when it has none).
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def main(argv=None) -> int:
    """Entry point of ``tinymbv2`` and ``python -m tinymbv2``.

    Args:
        argv: The arguments; None: ``sys.argv[1:]``.

    Returns:
        The exit code: 0, 2 for a bad argument or file (one line on stderr), 130 when
        interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error(f"a command is required (one of: {', '.join(COMMANDS)})")
    if launched_by_mpirun():  # one rank of `mpirun -n P tinymbv2 train ...`
        code = run_on_ranks(args, COMMANDS[args.command][2], one_line)
        if code is not None:
            return code
    try:
        return COMMANDS[args.command][2](args)
    except (ValueError, TypeError, OSError) as exc:  # bad values, missing or broken files
        print(f"tinymbv2 {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinymbv2 {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "build_parser", "main", "one_line"]
