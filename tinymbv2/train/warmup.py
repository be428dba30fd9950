"""Compile the numba kernels ahead of time, for the input shapes the datasets give.

For each input shape the bundled and supported datasets give, the training and
inference steps of the default model that a run takes.

A kernel is compiled the first time it meets a new kind of argument, and kept in Numba's
disk cache (``tinymbv2/kernels/numba/cache.py``); with a cold cache the first step of a
run spends about a minute compiling. ``tinymbv2 warmup`` (run by ``make demo``'s set-up)
does that work before the run instead, through the very code a run uses
(``train_one_epoch``, ``evaluate``), twice per shape (``STEPS``): the fused model with
the default optimizer, as a default run trains, and the plain model (``--no-fuse``) with
RMSprop, whose update is the one optimizer step the numba set runs (SGD's and Adam's are
NumPy's).

Which kernels a step calls depends on the dtype and on sizes: small planes run
channels-last kernels, the stride-2 stem of a full-size network its own, a large enough
product the parallel form of a kernel. Their machine code depends only on the kinds of
their arguments (dtype, dimensions, layout), so the shapes together cover more than each
alone. Measured after the whole warmup (float32, batches of 8): runs of the 8, 28 and
32 px shapes at batches of 2, 13 and 64 and widths 0.35, 0.5, 1.0 and 1.4, and of 224 px at
batches of 2 and 16 and widths 0.5 and 1.0, fused with SGD and plain with RMSprop (the other
optimizers call no kernel), compiled nothing more (``tests/cli/test_warmup.py`` checks a
selection, with every optimizer). The
8 px shape alone would not do: at batches of 8 no product there is large enough for the
parallel forms of the channels-last 1x1 convolution, which a batch of 32 (or width 1.4)
takes; the 28 px shape compiles them. Float64 runs need ``--float64``.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np

from .. import fusion
from .. import random as tm_random
from ..backend import use_kernels
from ..data import DataLoader
from ..evaluation import evaluate
from ..kernels.numba import compiling
from .build import build_loss, build_model, build_optimizer, param_groups
from .config import TrainConfig
from .trainer import train_one_epoch


@dataclasses.dataclass(frozen=True)
class WarmupCase:
    """An input shape to compile for: images of ``in_channels x size x size``.

    The network has its small-input stem (``small_input``) or the paper's stride-2 one.
    """

    name: str
    in_channels: int
    size: int
    small_input: bool = True


CASES = (
    WarmupCase("digits", 1, 8),
    WarmupCase("mnist5k, mnist-idx", 1, 28),
    WarmupCase("cifar10", 3, 32),
    WarmupCase("224 px, the paper's stem", 3, 224, small_input=False),
)
"""The bundled datasets' shapes (digits 8 px, MNIST 28 px), CIFAR-10's and the paper's
224 px network (the benchmarks', and a folder of photos at full size)."""


@dataclasses.dataclass(frozen=True)
class Warmed:
    """One case warmed: the kernels it compiled and the seconds it took.

    No kernel when the cache had them all.
    """

    case: WarmupCase
    dtype: str
    compiled: tuple[compiling.Compiled, ...]
    seconds: float


def warmup(dtypes=("float32",), cases=None, batch_size: int = 8) -> Iterator[Warmed]:
    """Run the training and inference steps of each case with the numba kernels, compiling them.

    The steps are [one_step_each][tinymbv2.train.warmup.one_step_each]'s, on random images,
    with the default [TrainConfig][tinymbv2.train.config.TrainConfig] (its model and loss);
    the package's random generator is left as it was.

    Args:
        dtypes: The dtypes to compile for, ``"float32"`` and/or ``"float64"``.
        cases: The [WarmupCase][tinymbv2.train.warmup.WarmupCase]s; None: ``CASES``.
        batch_size: The images per step.

    Yields:
        One [Warmed][tinymbv2.train.warmup.Warmed] per dtype and case, as it goes.
    """
    state = tm_random.get_state()
    try:
        with use_kernels("numba"):
            for dtype in dtypes:
                for case in CASES if cases is None else cases:
                    before, start = len(compiling.compiled()), time.perf_counter()
                    one_step_each(case, np.dtype(dtype), batch_size)
                    yield Warmed(case, np.dtype(dtype).name,
                                 tuple(compiling.compiled()[before:]), time.perf_counter() - start)
    finally:
        tm_random.set_state(state)


STEPS = (
    {},  # the default run: the fused model, the default optimizer (SGD)
    {"fuse": False, "optimizer": "rmsprop"},  # --no-fuse's plain layers; RMSprop's update kernel
)
"""The steps taken per shape, as [TrainConfig][tinymbv2.train.config.TrainConfig] fields
changed from the defaults."""


def one_step_each(case: WarmupCase, dtype, batch_size: int, num_classes: int = 10) -> None:
    """For each of ``STEPS``, one training step and one inference pass of the default model.

    A training step is forward, backward and the optimizer's step; the batch holds random
    images of ``case``.

    Args:
        case: The input shape.
        dtype: The dtype of the model and the images.
        batch_size: The images per step.
        num_classes: The classifier's outputs.
    """
    for changes in STEPS:
        config = TrainConfig(small_input=case.small_input, **changes)
        one_run_step(config, case, dtype, batch_size, num_classes)


def one_run_step(config: TrainConfig, case: WarmupCase, dtype, batch_size: int,
                 num_classes: int = 10) -> None:
    """One training step and one inference pass as a run of ``config`` takes them.

    Its model, optimizer and loss, fused or not, on a batch of random images of ``case``.

    Args:
        config: The run's [TrainConfig][tinymbv2.train.config.TrainConfig].
        case: The input shape.
        dtype: The dtype of the model and the images.
        batch_size: The images per step.
        num_classes: The classifier's outputs.
    """
    model = build_model(config, case.in_channels, num_classes).to(dtype)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, case.in_channels, case.size, case.size)).astype(dtype)
    labels = np.arange(batch_size) % num_classes
    optimizer = build_optimizer(config, param_groups(model, config.weight_decay))
    net = fusion.fuse(model) if config.fuse else model
    loss_fn = build_loss(config)
    train_one_epoch(net, DataLoader(images, labels, batch_size), optimizer, loss_fn, progress=False)
    evaluate(model, images, labels, loss_fn=loss_fn, fuse=config.fuse)
