"""A whole training run from one configuration: data, model, optimizer, loop, outputs.

``run_training(TrainConfig(...))`` is what ``tinymbv2 train`` and ``make demo``
call. It writes ``<out>/model.npz`` (a checkpoint, after every epoch),
``metrics.json`` (test accuracy, the per-epoch history, the configuration),
``learning_curves.png`` and ``confusion_matrix.png``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from .. import functional as F
from .. import optim
from .. import random as _random
from ..data import Compose, DataLoader, Normalize, RandomHorizontalFlip, RandomShift
from ..models import mobilenet_v2, seed_article_net
from .checkpoint import load_checkpoint
from .datasets import load_splits
from .metrics import confusion_matrix, diagnose, precision_recall
from .trainer import evaluate, fit

OPTIMIZERS = ("sgd", "rmsprop", "rmsprop-tf", "adam", "adamw")
LOSSES = ("ce", "focal", "dice")
SCHEDULES = ("onecycle", "cosine", "exponential", "none")
ARCHS = ("mobilenet_v2", "seed_article")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in the checkpoint and metrics.json."""

    dataset: str = "mnist5k"
    data_dir: str | None = None
    image_size: int | None = None  # resize images to this square size (None: keep)
    arch: str = "mobilenet_v2"
    width: float = 0.5
    small_input: bool = True
    dropout: float = 0.2
    epochs: int = 8
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1  # the peak learning rate for "onecycle"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    loss: str = "ce"
    label_smoothing: float = 0.0
    shift: int = 2  # random +-shift in pixels (0: off)
    flip: bool = False
    seed: int = 0
    out: str = "runs/run"

    def validate(self) -> "TrainConfig":
        for name, allowed in (("optimizer", OPTIMIZERS), ("loss", LOSSES),
                              ("schedule", SCHEDULES), ("arch", ARCHS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train: expected {name} in {allowed}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train: expected {name} >= 1, got {getattr(self, name)}")
        if self.width <= 0 or self.lr <= 0:
            raise ValueError(f"train: expected width > 0 and lr > 0, got {self.width} and {self.lr}")
        return self


def build_model(config: TrainConfig, in_channels: int, num_classes: int):
    make = mobilenet_v2 if config.arch == "mobilenet_v2" else seed_article_net
    return make(width_mult=config.width, num_classes=num_classes, dropout=config.dropout,
                in_channels=in_channels, small_input=config.small_input, seed=config.seed)


def param_groups(model, weight_decay: float) -> list[dict]:
    """No weight decay on BatchNorm parameters and biases (the 1-D tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(config: TrainConfig, groups):
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
    """Returns (scheduler or None, 'batch' | 'epoch')."""
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
    if config.loss == "ce":
        smoothing = config.label_smoothing
        return lambda logits, y, reduction="mean": F.cross_entropy(
            logits, y, label_smoothing=smoothing, reduction=reduction)
    if config.loss == "focal":
        return F.focal_loss

    def dice(logits, y, reduction="mean"):
        loss = F.dice_loss(logits, y)
        return loss * float(len(y)) if reduction == "sum" else loss

    return dice


def run_training(config: TrainConfig, resume: str | None = None, progress: bool = True,
                 log=print, model=None, train_mode=None, stop_after: int | None = None) -> dict:
    """Train, evaluate on the held-out test split, write the run folder; return metrics.

    ``model``: train this one instead of building ``config.arch`` (fine-tuning passes
    a pretrained, partly frozen model and a ``train_mode`` that keeps frozen
    BatchNorms in eval mode). ``stop_after=k`` stops after epoch k of the
    schedule (resume later with ``resume=<out>/model.npz``).
    """
    config.validate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _random.manual_seed(config.seed)
    splits = load_splits(config.dataset, config.data_dir, config.image_size)
    normalize = Normalize.from_data(splits.train.images)
    augment = [RandomShift(config.shift)] if config.shift else []
    augment += [RandomHorizontalFlip()] if config.flip else []
    loader = DataLoader(splits.train.images, splits.train.labels, config.batch_size,
                        seed=config.seed, transform=Compose(augment + [normalize]))
    val = _normalized(splits.val, normalize)
    test = _normalized(splits.test, normalize)

    c = splits.image_shape[0]
    if model is None:
        model = build_model(config, c, splits.num_classes)
    optimizer = build_optimizer(config, param_groups(model, config.weight_decay))
    scheduler, interval = build_scheduler(config, optimizer, len(loader))
    loss_fn = build_loss(config)
    saved_config = {**dataclasses.asdict(config), "num_classes": splits.num_classes,
                    "in_channels": c, "input_size": list(splits.image_shape[1:]),
                    "class_names": list(splits.class_names),
                    "norm_mean": np.asarray(normalize.mean).ravel().tolist(),
                    "norm_std": np.asarray(normalize.std).ravel().tolist()}
    log(f"{splits!r}\nmodel: {config.arch} width {config.width}, "
        f"{sum(p.size for p in model.parameters()):,} parameters "
        f"({sum(p.size for p in model.parameters() if p.requires_grad):,} trainable); {config.optimizer}, "
        f"lr {config.lr}, {config.schedule}, {config.epochs} epochs of {len(loader)} batches")

    start = time.perf_counter()
    history = fit(model, optimizer, loader, val, config.epochs, loss_fn, scheduler, interval,
                  checkpoint_path=out / "model.npz", resume_from=resume, config=saved_config,
                  progress=progress, log=log, train_mode=train_mode, stop_after=stop_after)
    train_seconds = time.perf_counter() - start
    final = evaluate(model, test.images, test.labels, loss_fn=loss_fn)
    metrics = _report(model, history, test, final, loss_fn, splits, out, saved_config)
    metrics["train_seconds"] = train_seconds
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"test accuracy {metrics['test_accuracy']:.4f} ({len(test.labels)} held-out images); "
        f"best-val weights: {metrics['best_val_test_accuracy']:.4f}; trained in {train_seconds:.0f}s")
    log(metrics["diagnosis"])
    return metrics


def _report(model, history, test, final, loss_fn, splits, out, saved_config) -> dict:
    from .plots import plot_confusion_matrix, plot_learning_curves

    best_acc = final["accuracy"]
    if history.get("best_state"):
        current = model.state_dict()
        model.load_state_dict(history["best_state"])
        best_acc = evaluate(model, test.images, test.labels, loss_fn=loss_fn)["accuracy"]
        model.load_state_dict(current)
    cm = confusion_matrix(final["predictions"], test.labels, splits.num_classes)
    precision, recall = precision_recall(cm)
    plot_learning_curves(history, out / "learning_curves.png")
    plot_confusion_matrix(cm, out / "confusion_matrix.png", list(splits.class_names))
    return {
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        "best_val_test_accuracy": best_acc,
        "per_class_precision": precision.tolist(),
        "per_class_recall": recall.tolist(),
        "confusion_matrix": cm.tolist(),
        "history": {k: v for k, v in history.items() if k != "best_state"},
        "diagnosis": diagnose(history, chance=1.0 / splits.num_classes),
        "config": saved_config,
    }


class _Normalized:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels


def _normalized(split, normalize):
    return _Normalized(normalize(split.images), split.labels)


def load_trained(checkpoint):
    """Rebuild the model a checkpoint was trained as and load its weights.

    Returns (model in eval mode, saved config dict).
    """
    from .checkpoint import load_state

    state = load_state(checkpoint)
    cfg = state.get("config") or {}
    if "num_classes" not in cfg:
        raise ValueError(f"load_trained: {checkpoint} has no model configuration")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in cfg.items() if k in fields})
    model = build_model(config, cfg["in_channels"], cfg["num_classes"])
    load_checkpoint(checkpoint, model)
    model.eval()
    return model, cfg
