"""Fine-tuning (seed section 3.5): reuse a trained backbone for a new task.

The features a network learned on one dataset (edges, strokes, shapes) are a
better start than random weights for a related one. The recipe: load the
trained weights, replace the classifier for the new number of classes, and
train either the new head alone (the backbone frozen: a feature extractor) or
the head and the last k blocks.

The parts (``replace_classifier``, ``freeze_backbone``, ``set_frozen_bn_eval``)
work on any model; ``run_finetune`` is the whole job from a checkpoint
(``tinymbv2 finetune``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..data import load_dataset
from ..nn import BatchNorm2d, Linear, init
from .build import checkpoint_channels, load_trained
from .config import TrainConfig
from .run import run_training


def replace_classifier(model, num_classes: int, generator=None):
    """Swap ``model.classifier``'s Linear for a fresh one with ``num_classes`` outputs.

    Initialised like torchvision's head: $N(0, 0.01^2)$ weights, zero bias.

    Args:
        model: A MobileNetV2 (its ``classifier`` a Sequential ending in a Linear).
        num_classes: The new task's classes.
        generator: An ``np.random.Generator`` for the new weights; None: the package's.

    Returns:
        The model, changed in place.
    """
    head = model.classifier[-1]
    if not isinstance(head, Linear):
        raise TypeError(f"replace_classifier: expected a Linear last in model.classifier, got {head!r}")
    new = Linear(head.in_features, num_classes, dtype=head.weight.dtype)
    init.normal_(new.weight, 0.0, 0.01, generator=generator)
    init.zeros_(new.bias)
    model.classifier[len(model.classifier) - 1] = new
    model.num_classes = num_classes
    return model


def freeze_backbone(model, train_last_blocks: int = 0):
    """Freeze ``model.features`` except its last ``train_last_blocks`` entries.

    Frozen layers get ``requires_grad=False`` (no gradients, not updated) and their
    BatchNorms stay in eval mode (running statistics kept) via
    [set_frozen_bn_eval][tinymbv2.train.finetune.set_frozen_bn_eval], which the caller
    applies after ``model.train()``.

    Args:
        model: A MobileNetV2.
        train_last_blocks: How many of the last entries of ``model.features`` stay trainable
            (0: only the classifier trains).

    Returns:
        The parameters still trainable, for the optimizer.
    """
    blocks = list(model.features)
    if not 0 <= train_last_blocks <= len(blocks):
        raise ValueError(
            f"freeze_backbone: expected train_last_blocks in [0, {len(blocks)}], got {train_last_blocks}"
        )
    model.requires_grad_(True)
    for block in blocks[: len(blocks) - train_last_blocks]:
        block.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def set_frozen_bn_eval(model) -> None:
    """Put every BatchNorm of ``model`` whose parameters are frozen into eval mode."""
    for m in model.modules():
        if isinstance(m, BatchNorm2d) and not m.weight.requires_grad:
            m.eval()


def count_trainable(model) -> int:
    """The number of parameter values of ``model`` the optimizer will update."""
    return int(sum(np.prod(p.shape) for p in model.parameters() if p.requires_grad))


def run_finetune(checkpoint, config: TrainConfig, train_last_blocks: int = 0,
                 progress: bool = True, log=print) -> dict:
    """Fine-tune ``checkpoint`` on ``config.dataset``; returns run_training's metrics.

    Loads the checkpoint's network, replaces the classifier for the new dataset's
    classes, freezes all but the last ``train_last_blocks`` entries of
    ``model.features`` (their BatchNorms kept in eval mode, so their running
    statistics stay those of the pretraining data), reads the new images the way the
    network takes them (its channels, grey or RGB; the size it was trained on, unless
    ``config.image_size`` says otherwise), and trains.
    [run_training][tinymbv2.train.run.run_training] refuses an image size below the smallest
    the network takes.

    Args:
        checkpoint: The pretrained run's checkpoint.
        config: The fine-tuning run's [TrainConfig][tinymbv2.train.config.TrainConfig].
        train_last_blocks: The entries of ``model.features`` trained with the new head.
        progress: Show progress bars.
        log: Where the per-epoch lines go.

    Returns:
        The metrics of the run.

    Raises:
        ValueError: A task other than classification, in ``config`` or in the checkpoint (a
            segmenter's or a detector's: their heads are not a classifier to replace).
    """
    if config.task != "classify":
        raise ValueError(f"finetune: trains a new classifier head (--task classify), got --task "
                         f"{config.task}; a {config.task} model is trained with `tinymbv2 train "
                         f"--task {config.task}`")
    model, saved = load_trained(checkpoint)
    task = saved.get("task", "classify")
    if task != "classify":
        raise ValueError(f"finetune: {checkpoint} holds a {task} model (task {task!r}); finetune "
                         f"puts a new classifier head on a classification checkpoint's network")
    channels = checkpoint_channels(checkpoint, saved, config.channels, "finetune")
    size = config.image_size or saved["input_size"][0]
    config = dataclasses.replace(config, image_size=size, channels=channels,
                                 width=saved["width"], small_input=saved["small_input"],
                                 arch=saved["arch"], activation=saved.get("activation", "relu6"))
    probe = load_dataset(config.dataset, config.data_dir, config.image_size, channels=channels)
    replace_classifier(model, probe.num_classes)
    freeze_backbone(model, train_last_blocks)
    model.train()

    def train_mode(m):
        m.train()
        set_frozen_bn_eval(m)

    log(f"fine-tuning {checkpoint}: new head for {probe.num_classes} classes, "
        f"last {train_last_blocks} feature blocks trainable")
    return run_training(config, progress=progress, log=log, model=model, train_mode=train_mode)
