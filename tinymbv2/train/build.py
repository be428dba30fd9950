"""The parts of a run, built from its ``TrainConfig``: model, optimizer, schedule, loss.

``load_trained`` builds the model a checkpoint was trained as and loads its weights:
the way back from a run folder to a network; ``checkpoint_channels`` is the number of
channels its images must be read in.
"""
from __future__ import annotations

from .. import functional as F
from .. import optim
from ..models import deeplabv3_mobilenet_v2, mobilenet_v2, seed_article_net, ssdlite_mobilenet_v2
from .checkpoint import load_checkpoint, read_checkpoint
from .config import ARCHS, SCENE_IMAGE_SIZE, TrainConfig
from .trainer import first_non_finite

_BUILDERS = {"mobilenet_v2": mobilenet_v2, "seed_article": seed_article_net}  # one per ARCHS


def build_model(config: TrainConfig, in_channels: int, num_classes: int):
    """``config.arch`` at ``config.width`` (with ``config.activation``) for images of
    ``in_channels`` and ``num_classes``.

    For ``task="detect"``: SSDLite on MobileNetV2 of that width, for scenes of
    ``config.image_size``; ``num_classes`` counts the background. For ``task="segment"``:
    Mobile DeepLabv3 ([deeplabv3_mobilenet_v2][tinymbv2.models.deeplabv3.deeplabv3_mobilenet_v2])
    with ``config.head`` at ``config.output_stride``, its backbone of that width (the heads'
    widths are not scaled); ``num_classes`` counts the background too.

    Args:
        config: The run's [TrainConfig][tinymbv2.train.config.TrainConfig].
        in_channels: The images' channels.
        num_classes: The classifier's outputs.

    Returns:
        The model.

    Raises:
        ValueError: An unknown ``arch``.
    """
    if config.arch not in _BUILDERS:
        raise ValueError(f"build_model: expected arch in {ARCHS}, got {config.arch!r}")
    if config.task == "detect":
        return ssdlite_mobilenet_v2(num_classes, width_mult=config.width,
                                    size=config.image_size or SCENE_IMAGE_SIZE,
                                    in_channels=in_channels, seed=config.seed)
    if config.task == "segment":
        return deeplabv3_mobilenet_v2(num_classes, output_stride=config.output_stride,
                                      head=config.head, width_mult=config.width,
                                      in_channels=in_channels, seed=config.seed)
    make = _BUILDERS[config.arch]
    return make(width_mult=config.width, num_classes=num_classes, dropout=config.dropout,
                in_channels=in_channels, small_input=config.small_input, seed=config.seed,
                activation=config.activation)


def param_groups(model, weight_decay: float) -> list[dict]:
    """Two parameter groups: weight decay on the weights, none on BatchNorm parameters and biases.

    The 1-D tensors are the BatchNorm parameters and the biases.

    Args:
        model: The model.
        weight_decay: The decay of the weights.

    Returns:
        Two dicts ``{"params": [...], "weight_decay": ...}``: the weights with
        ``weight_decay``, the rest with 0.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(config: TrainConfig, groups):
    """``config.optimizer`` over the parameter groups, at ``config.lr``.

    Args:
        config: The run's [TrainConfig][tinymbv2.train.config.TrainConfig].
        groups: The parameter groups ([param_groups][tinymbv2.train.build.param_groups]).

    Returns:
        The optimizer.
    """
    name, lr, mom = config.optimizer, config.lr, config.momentum
    if name == "sgd":
        return optim.SGD(groups, lr=lr, momentum=mom, nesterov=mom > 0)
    if name == "rmsprop":
        return optim.RMSprop(groups, lr=lr, alpha=0.9, momentum=mom, eps=1e-3)
    if name == "rmsprop-tf":  # the paper's: decay 0.9, momentum 0.9, eps inside the sqrt
        return optim.RMSpropTF(groups, lr=lr, alpha=0.9, momentum=mom, eps=1e-3)
    if name == "adam":
        return optim.Adam(groups, lr=lr)
    return optim.AdamW(groups, lr=lr)


def build_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    """The schedule of ``config.schedule``, and when it steps.

    Args:
        config: The run's [TrainConfig][tinymbv2.train.config.TrainConfig].
        optimizer: The optimizer it drives.
        steps_per_epoch: The batches per epoch (a per-batch schedule spans them all).

    Returns:
        ``(scheduler or None, "batch" | "epoch")``.
    """
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                             cycle_momentum=config.optimizer == "sgd"), "batch"
    if config.schedule == "cosine":
        return optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), "batch"
    if config.schedule == "exponential":  # the paper: x0.98 per epoch
        return optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.98), "epoch"
    return None, "epoch"


def build_loss(config: TrainConfig):
    """``loss_fn(logits, labels, reduction="mean" | "sum")`` for ``config.loss``.

    The same functions take a segmenter's logits (N, K, H, W) and masks (N, H, W): the
    cross-entropy is then the mean over the pixels, the Dice loss one over the batch's pixels
    of each class ([dice_loss][tinymbv2.functional.losses.dice_loss]), and ``"ce+dice"`` their
    sum ([ce_dice_loss][tinymbv2.functional.losses.ce_dice_loss], with the label smoothing).
    A Dice loss is not a sum of per-sample terms: its ``"sum"`` is the mean times N.

    Args:
        config: The run's [TrainConfig][tinymbv2.train.config.TrainConfig].

    Returns:
        The loss function.
    """
    if config.loss == "ce":
        smoothing = config.label_smoothing
        return lambda logits, y, reduction="mean": F.cross_entropy(
            logits, y, label_smoothing=smoothing, reduction=reduction)
    if config.loss == "focal":
        return F.focal_loss

    if config.loss == "ce+dice":
        smoothing = config.label_smoothing

        def dice(logits, y):
            return F.ce_dice_loss(logits, y, label_smoothing=smoothing)
    else:
        dice = F.dice_loss

    def per_batch(logits, y, reduction="mean"):
        loss = dice(logits, y)
        return loss * float(len(y)) if reduction == "sum" else loss

    return per_batch


# What load_trained and its callers read from a saved configuration: the model's shape
# (arch, width, small_input, in_channels, num_classes) and how its images were prepared
# (input_size, norm_mean, norm_std), for eval, predict and finetune.
NEEDED = ("arch", "width", "small_input", "num_classes", "in_channels", "input_size",
          "norm_mean", "norm_std")


def load_trained(checkpoint):
    """Rebuild the model a checkpoint was trained as and load its weights.

    A checkpoint written before a field of TrainConfig existed loads with that field's
    default. The file is read once.

    Args:
        checkpoint: The checkpoint file (``model.npz``).

    Returns:
        ``(model, config)``: the plain model in eval mode and the saved configuration dict.

    Raises:
        ValueError: One line naming the file and the field or the first such array: the
            saved configuration lacks a field in ``NEEDED``, holds a value a run would refuse
            (an unknown ``arch``, a ``width`` that is not a number:
            [TrainConfig.validate][tinymbv2.train.config.TrainConfig.validate]) or data
            fields of the wrong form, or the weights or buffers hold an inf or a NaN (a
            diverged run's).
    """
    state = read_checkpoint(checkpoint)
    cfg = state.get("config") or {}
    if not isinstance(cfg, dict) or not cfg:
        raise ValueError(f"load_trained: {checkpoint} has no model configuration")
    missing = [key for key in NEEDED if key not in cfg]
    if missing:
        more = f" (nor {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ValueError(f"load_trained: {checkpoint}: its saved configuration has no "
                         f"{missing[0]!r}{more}, which rebuilding the model and preparing its "
                         f"images need; not a complete tinymbv2 training checkpoint")
    try:
        config = TrainConfig.from_saved(cfg).validate()
        _check_data_fields(cfg)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"load_trained: {checkpoint}: its saved configuration is not one a "
                         f"training run writes ({exc})") from None
    model = build_model(config, cfg["in_channels"], cfg["num_classes"])
    load_checkpoint(checkpoint, model, state=state)
    bad = first_non_finite(model)
    if bad is not None:
        raise ValueError(f"load_trained: {checkpoint}: {bad} holds inf or NaN values (the "
                         f"weights of a diverged run); retrain with a lower learning rate")
    model.eval()
    return model, cfg


def _check_data_fields(cfg: dict) -> None:
    """What the data told the run, in the form ``saved_config``
    writes it: the model's channels and classes, the image size, one mean and std per
    channel."""
    def positive_int(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    for key in ("in_channels", "num_classes"):
        if not positive_int(cfg[key]):
            raise ValueError(f"expected {key} an integer >= 1, got {cfg[key]!r}")
    size = cfg["input_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(map(positive_int, size))):
        raise ValueError(f"expected input_size [height, width] in pixels, got {size!r}")
    for key in ("norm_mean", "norm_std"):
        values = cfg[key]
        if not (isinstance(values, list) and len(values) == cfg["in_channels"]
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise ValueError(f"expected {key} a list of {cfg['in_channels']} numbers (one per "
                             f"channel), got {values!r}")


def checkpoint_channels(checkpoint, saved: dict, channels: int | None, who: str) -> int:
    """The channels to read images in for the model of ``checkpoint``: the model's own.

    Args:
        checkpoint: The checkpoint's path, for the message.
        saved: Its saved configuration, from [load_trained][tinymbv2.train.build.load_trained].
        channels: What the user asked for (None: nothing).
        who: The caller, named in the message.

    Returns:
        The model's input channels.

    Raises:
        ValueError: ``channels`` disagrees with the model.
    """
    takes = saved["in_channels"]
    if channels is not None and channels != takes:
        raise ValueError(f"{who}: channels {channels} asked for, but the model of {checkpoint} "
                         f"takes {takes}-channel images")
    return takes
