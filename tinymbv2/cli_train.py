"""``tinymbv2 train | eval | predict | finetune | search``: parsing and printing only.

The work is done by :mod:`tinymbv2.train` (``run_training``, ``run_finetune``,
``predict``, ``search_job``); these functions turn arguments into a
``TrainConfig`` and print results.
"""
from __future__ import annotations

import argparse
import json

from .train.datasets import DATASET_CHOICES
from .train.job import LOSSES, OPTIMIZERS, SCHEDULES, TrainConfig


def positive(kind):
    """argparse type: a number of ``kind`` that must be > 0."""
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


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _add_data_args(p, default_dataset="mnist5k"):
    p.add_argument("--dataset", choices=DATASET_CHOICES, default=default_dataset)
    p.add_argument("--data-dir", help="folder with the files of mnist-idx, cifar10 or folder")
    p.add_argument("--image-size", type=positive(int), help="resize images to this square size")


def _add_recipe_args(p):
    d = TrainConfig()
    p.add_argument("--width", type=positive(float), default=d.width, help=f"width multiplier ({d.width})")
    p.add_argument("--arch", choices=("mobilenet_v2", "seed_article"), default=d.arch)
    p.add_argument("--standard-input", dest="small_input", action="store_false",
                   help="keep the 224 px strides (default: small-input variant for 28-32 px)")
    p.add_argument("--epochs", type=positive(int), default=d.epochs)
    p.add_argument("--batch-size", type=positive(int), default=d.batch_size)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--lr", type=positive(float), default=d.lr, help="(peak) learning rate")
    p.add_argument("--momentum", type=_non_negative_float, default=d.momentum)
    p.add_argument("--weight-decay", type=_non_negative_float, default=d.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    p.add_argument("--loss", choices=LOSSES, default=d.loss)
    p.add_argument("--label-smoothing", type=_non_negative_float, default=0.0)
    p.add_argument("--dropout", type=_non_negative_float, default=d.dropout)
    p.add_argument("--shift", type=int, default=d.shift, help="random +-shift in px (0: off)")
    p.add_argument("--flip", action="store_true", help="random horizontal flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _config(args, out) -> TrainConfig:
    keys = ({f for f in TrainConfig.__dataclass_fields__} & set(vars(args))) - {"out"}
    return TrainConfig(**{k: getattr(args, k) for k in keys}, out=out).validate()


# -- train ----------------------------------------------------------------------
def add_train(p):
    _add_data_args(p)
    _add_recipe_args(p)
    p.add_argument("--out", default="runs/run", help="run folder (model.npz, metrics.json, plots)")
    p.add_argument("--resume", help="checkpoint (model.npz) to continue from")
    p.add_argument("--stop-after", type=positive(int),
                   help="stop after this epoch (the schedule still spans --epochs); resume later")


def run_train(args) -> int:
    from .train.job import run_training

    metrics = run_training(_config(args, args.out), resume=args.resume, progress=args.progress,
                           stop_after=args.stop_after)
    print(f"wrote {args.out}/model.npz, metrics.json, learning_curves.png, confusion_matrix.png")
    print(f"test_accuracy {metrics['test_accuracy']:.4f}")
    return 0


# -- eval -----------------------------------------------------------------------
def add_eval(p):
    p.add_argument("checkpoint")
    _add_data_args(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test")


def run_eval(args) -> int:
    import numpy as np

    from .train.datasets import load_splits
    from .train.job import build_loss, load_trained
    from .train.metrics import confusion_matrix, precision_recall, top_k_accuracy
    from .train.trainer import evaluate

    model, cfg = load_trained(args.checkpoint)
    size = args.image_size or (cfg.get("input_size") or [None])[0]
    split = getattr(load_splits(args.dataset, args.data_dir, size), args.split)
    mean = np.asarray(cfg["norm_mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg["norm_std"], np.float32).reshape(1, -1, 1, 1)
    if split.images.shape[1] != cfg["in_channels"]:
        raise ValueError(f"eval: the model expects {cfg['in_channels']}-channel images, "
                         f"{args.dataset} has {split.images.shape[1]}")
    loss_fn = build_loss(TrainConfig(loss=cfg.get("loss", "ce")))
    result = evaluate(model, (split.images - mean) / std, split.labels, loss_fn=loss_fn)
    cm = confusion_matrix(result["predictions"], split.labels, cfg["num_classes"])
    precision, recall = precision_recall(cm)
    print(f"{args.dataset} {args.split}: {len(split.labels)} images")
    print(f"accuracy {result['accuracy']:.4f}  top-3 {top_k_accuracy(result['scores'], split.labels, 3):.4f}"
          f"  loss {result['loss']:.4f}")
    print("class  precision  recall")
    for i, name in enumerate(cfg.get("class_names") or range(cfg["num_classes"])):
        print(f"{str(name):>5}  {precision[i]:9.3f}  {recall[i]:6.3f}")
    return 0


# -- predict ----------------------------------------------------------------------
def add_predict(p):
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top-k", type=positive(int), default=3)
    p.add_argument("--invert", action="store_true", help="dark-on-light images (scans)")


def run_predict(args) -> int:
    from .train.inference import predict

    for result in predict(args.checkpoint, args.images, args.top_k, args.invert):
        top = ", ".join(f"{name} {p:.3f}" for name, p in result["top"])
        print(f"{result['path']}: {top}")
    return 0


# -- finetune ---------------------------------------------------------------------
def add_finetune(p):
    p.add_argument("checkpoint", help="pretrained model.npz")
    _add_data_args(p, default_dataset="digits")
    _add_recipe_args(p)
    p.add_argument("--train-last-blocks", type=int, default=0,
                   help="feature blocks left trainable besides the new head (0: head only)")
    p.add_argument("--out", default="runs/finetune")


def run_finetune_cmd(args) -> int:
    from .train.transfer import run_finetune

    metrics = run_finetune(args.checkpoint, _config(args, args.out), args.train_last_blocks,
                           progress=args.progress)
    print(f"test_accuracy {metrics['test_accuracy']:.4f}")
    return 0


# -- search -----------------------------------------------------------------------
def add_search(p):
    _add_data_args(p, default_dataset="digits")
    _add_recipe_args(p)
    p.add_argument("--kind", choices=("grid", "random"), default="grid")
    p.add_argument("--trials", type=positive(int), default=8, help="random search: trials")
    p.add_argument("--space", default='{"lr": [0.05, 0.2], "weight_decay": [0.0, 5e-4]}',
                   help="JSON: lists for grid; lists or [\"log\", lo, hi] for random")
    p.add_argument("--out", default="runs/search")


def run_search_cmd(args) -> int:
    from .train.search import search_job

    try:
        space = json.loads(args.space)
    except json.JSONDecodeError as exc:
        raise ValueError(f"search: --space is not valid JSON ({exc})") from exc
    if not isinstance(space, dict) or not space:
        raise ValueError("search: --space must be a non-empty JSON object")
    space = {k: tuple(v) if isinstance(v, list) and v and v[0] in ("log", "uniform") else v
             for k, v in space.items()}
    result = search_job(_config(args, args.out), space, args.kind, args.trials, args.seed, args.out)
    best = result["best"]
    print(f"wrote {args.out}/results.csv and best.json; best trial {best['trial']}: "
          + ", ".join(f"{k}={v}" for k, v in best.items() if k != "trial"))
    return 0


COMMANDS = {
    "train": ("train a network and write a run folder", add_train, run_train),
    "eval": ("evaluate a checkpoint on a dataset split", add_eval, run_eval),
    "predict": ("top-k classes for image files", add_predict, run_predict),
    "finetune": ("fine-tune a checkpoint on another dataset", add_finetune, run_finetune_cmd),
    "search": ("grid or random hyper-parameter search", add_search, run_search_cmd),
}
