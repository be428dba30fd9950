"""``tinymbv2 eval``: a checkpoint's accuracy, top-3 accuracy, loss and per-class scores; a
detector's mAP (COCO's, at 0.5 and 0.75) and per-class AP; a segmenter's mean IoU, pixel
accuracy and per-class IoU."""
from __future__ import annotations

import numpy as np

from ..data import Normalize, load_dataset
from ..evaluation import (confusion_matrix, evaluate, evaluate_detector, evaluate_segmenter,
                          precision_recall, top_k_accuracy)
from ..models import check_input_size
from ..train import TrainConfig, load_trained
from ..train.build import build_loss, checkpoint_channels
from ..train.run import task_scenes
from .args import add_data_args, add_fuse_arg


def add_eval(p):
    """Add the arguments of ``tinymbv2 eval`` to its sub-parser ``p``."""
    p.add_argument("checkpoint")
    add_data_args(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    add_fuse_arg(p)


def run_eval(args) -> int:
    """Run ``tinymbv2 eval`` with the parsed ``args``; returns the exit code."""
    model, cfg = load_trained(args.checkpoint)
    if cfg.get("task") == "detect":
        return _eval_detector(model, cfg, args)
    if cfg.get("task") == "segment":
        return _eval_segmenter(model, cfg, args)
    # the images are read the way the model takes them: its channels, its size by default
    channels = checkpoint_channels(args.checkpoint, cfg, args.channels, "eval")
    size = args.image_size or cfg["input_size"][0]
    check_input_size(model, size, "eval", "--image-size" if args.image_size else
                     f"the image size of {args.checkpoint}")
    data = load_dataset(args.dataset, args.data_dir, size, channels=channels)
    if data.num_classes != cfg["num_classes"]:
        raise ValueError(f"eval: the model of {args.checkpoint} tells {cfg['num_classes']} "
                         f"classes apart, {args.dataset} has {data.num_classes}")
    split = getattr(data, args.split)
    normalize = Normalize(cfg["norm_mean"], cfg["norm_std"])  # the training data's statistics
    loss_fn = build_loss(TrainConfig(loss=cfg.get("loss", "ce")))
    result = evaluate(model, normalize(split.images), split.labels, loss_fn=loss_fn,
                      fuse=args.fuse)
    cm = confusion_matrix(result["predictions"], split.labels, cfg["num_classes"])
    precision, recall = precision_recall(cm)
    print(f"{args.dataset} {args.split}: {len(split.labels)} images")
    print(f"accuracy {result['accuracy']:.4f}  top-3 {top_k_accuracy(result['scores'], split.labels, 3):.4f}"
          f"  loss {result['loss']:.4f}")
    print("class  precision  recall")
    for i, name in enumerate(cfg.get("class_names") or range(cfg["num_classes"])):
        print(f"{str(name):>5}  {precision[i]:9.3f}  {recall[i]:6.3f}")
    return 0


def _scene_split(cfg, args, what: str):
    """The split of MNIST scenes a detector or segmenter is scored on, at its scenes' size."""
    if args.dataset != "mnist-scenes":
        raise ValueError(f"eval: {args.checkpoint} holds a {what}; evaluate it on "
                         f"--dataset mnist-scenes, not {args.dataset}")
    size = cfg["input_size"][0]
    return getattr(task_scenes(cfg.get("task"), size), args.split), size


def _eval_detector(model, cfg, args) -> int:
    split, size = _scene_split(cfg, args, "detector")
    normalize = Normalize(cfg["norm_mean"], cfg["norm_std"])
    result = evaluate_detector(model, normalize(split.images), split.targets(np.arange(len(split))),
                               fuse=args.fuse)
    print(f"mnist-scenes {args.split}: {len(split)} scenes of {size}x{size} px, "
          f"{sum(len(b) for b in split.boxes)} digits")
    print(f"mAP@[.5:.95] {result['map']:.4f}  mAP@0.5 {result['map_50']:.4f}  "
          f"mAP@0.75 {result['map_75']:.4f}  loss {result['loss']:.4f}")
    print("class  AP@0.5  AP@[.5:.95]")
    for c, ap50 in result["per_class_ap_50"].items():
        print(f"{cfg['class_names'][c]:>5}  {ap50:6.3f}  {result['per_class_ap'][c]:11.3f}")
    return 0


def _eval_segmenter(model, cfg, args) -> int:
    split, size = _scene_split(cfg, args, "segmenter")
    normalize = Normalize(cfg["norm_mean"], cfg["norm_std"])
    loss_fn = build_loss(TrainConfig(task="segment", loss=cfg.get("loss", "ce"),
                                     label_smoothing=cfg.get("label_smoothing", 0.0)))
    result = evaluate_segmenter(model, normalize(split.images), split.masks, loss_fn=loss_fn,
                                fuse=args.fuse)
    print(f"mnist-scenes {args.split}: {len(split)} scenes of {size}x{size} px")
    print(f"mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}  "
          f"mean class accuracy {result['mean_class_accuracy']:.4f}  loss {result['loss']:.4f}")
    print("class       IoU")
    for name, iou in zip(cfg["class_names"], result["per_class_iou"]):
        print(f"{name:>10}  {iou:6.3f}")
    return 0
