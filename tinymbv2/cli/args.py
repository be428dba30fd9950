"""What the commands share: the parser whose errors are one line, argument types, and
the argument groups (data, training recipe, ``--no-fuse``) with the TrainConfig they make."""
from __future__ import annotations

import argparse

from ..data import DATASETS
from ..train.config import (ACTIVATIONS, ARCHS, LOSSES, OPTIMIZERS, OUTPUT_STRIDES, SCENE_DATASETS,
                            SCENE_IMAGE_SIZE, SCHEDULES, SEG_HEADS, TASK_DEFAULTS, TASKS,
                            TrainConfig)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line (no usage dump), exit code 2."""

    def error(self, message):
        """Print ``message`` as one line (no usage dump) and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive(kind):
    """An argparse type: a number of ``kind`` (int or float) that must be > 0."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def non_negative_float(text):
    """The argparse type of a float >= 0, from ``text``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def random_seed(text):
    """The argparse type of a seed, an int >= 0.

    NumPy's generators refuse negative seeds, and folding them onto others would make two
    seeds one run.

    Args:
        text: The argument as typed.

    Returns:
        The seed.

    Raises:
        argparse.ArgumentTypeError: Not an integer >= 0.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (NumPy's random generators "
                                         f"take no negative seed), got {text!r}")
    return value


def add_data_args(p, default_dataset="mnist5k"):
    """Add ``--dataset``, ``--data-dir``, ``--image-size``, ``--channels``.

    Args:
        p: The sub-parser.
        default_dataset: The default of ``--dataset``.
    """
    p.add_argument("--dataset", choices=DATASETS + SCENE_DATASETS, default=default_dataset,
                   help="mnist-scenes: scenes of digits with boxes and masks, for --task detect "
                        "and --task segment")
    p.add_argument("--data-dir", help="folder with the files of mnist-idx, cifar10 or folder")
    p.add_argument("--image-size", type=positive(int),
                   help="resize images to this square size (a folder's may differ in size); "
                        f"mnist-scenes: the scenes' side (detect: {SCENE_IMAGE_SIZE}, segment: "
                        f"{TASK_DEFAULTS['segment']['image_size']})")
    p.add_argument("--channels", type=int, choices=(1, 3),
                   help="read images as 1 (grey) or 3 (RGB) channels (default: the dataset's "
                        "own, RGB for a folder; from a checkpoint: the channels its model takes)")


def _task_default(name: str) -> str:
    """The help text of a recipe option whose default depends on ``--task``."""
    return "(" + ", ".join(f"{task}: {values[name]}" for task, values in TASK_DEFAULTS.items()
                           if name in values) + ")"


def add_recipe_args(p):
    """Add the training recipe to the sub-parser ``p``: network, epochs, optimizer, loss, ..."""
    d = TrainConfig()
    p.add_argument("--task", choices=TASKS, default=d.task,
                   help="classify (one label per image), detect (SSDLite boxes) or segment (Mobile "
                        "DeepLabv3 masks); detect and segment take --dataset mnist-scenes")
    p.add_argument("--width", type=positive(float), default=d.width, help=f"width multiplier ({d.width})")
    p.add_argument("--arch", choices=ARCHS, default=d.arch)
    p.add_argument("--head", choices=SEG_HEADS,
                   help="--task segment: the head on the 320-channel map (aspp: DeepLabv3's ASPP; "
                        "simple: without atrous branches; lraspp: torchvision's LR-ASPP) "
                        + _task_default("head"))
    p.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES,
                   help="--task segment: the input size over the head's map "
                        + _task_default("output_stride"))
    p.add_argument("--activation", choices=ACTIVATIONS, default=d.activation,
                   help="--task classify: relu6 (the paper's) or relu in every layer that has one "
                        "(section 3.2's choice, for 8-bit computation)")
    p.add_argument("--standard-input", dest="small_input", action="store_false",
                   help="keep the 224 px strides (default: small-input variant for 28-32 px)")
    p.add_argument("--train-scenes", type=positive(int),
                   help="mnist-scenes: the training scenes to make " + _task_default("train_scenes"))
    p.add_argument("--epochs", type=positive(int), help=_task_default("epochs"))
    p.add_argument("--batch-size", type=positive(int), help=_task_default("batch_size"))
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--lr", type=positive(float), help="(peak) learning rate " + _task_default("lr")
                   + "; 0.05 on the 8x8 digits")
    p.add_argument("--momentum", type=non_negative_float, default=d.momentum,
                   help=f"momentum, in [0, 1) ({d.momentum})")
    p.add_argument("--weight-decay", type=non_negative_float, help=_task_default("weight_decay"))
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    p.add_argument("--loss", choices=LOSSES,
                   help="ce, focal, dice, or ce+dice (--task segment: ce, dice or ce+dice, per "
                        "pixel) " + _task_default("loss"))
    p.add_argument("--label-smoothing", type=non_negative_float, default=0.0)
    p.add_argument("--dropout", type=non_negative_float, default=d.dropout)
    p.add_argument("--shift", type=int, default=d.shift,
                   help="random +-shift in px (0: off; default: scaled to the images, "
                        "min(h, w) // 14)")
    p.add_argument("--flip", action="store_true", help="random horizontal flips")
    p.add_argument("--seed", type=random_seed, default=0, help="an integer >= 0 (0)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def add_fuse_arg(p):
    """Add ``--no-fuse`` to the sub-parser ``p``: the plain model instead of its fused view."""
    p.add_argument("--no-fuse", dest="fuse", action="store_false",
                   help="run the plain model, layer by layer, to step through it")


def train_config(args, out) -> TrainConfig:
    """The TrainConfig of the parsed arguments (those that name one of its fields).

    Args:
        args: The parsed arguments.
        out: The run's folder.

    Returns:
        The [TrainConfig][tinymbv2.train.config.TrainConfig], validated.
    """
    keys = ({f for f in TrainConfig.__dataclass_fields__} & set(vars(args))) - {"out"}
    return TrainConfig(**{k: getattr(args, k) for k in keys}, out=out).validate()
