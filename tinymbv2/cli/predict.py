"""``tinymbv2 predict``: the top-k classes of image files, with a checkpoint's model; for a
detector's checkpoint, the boxes it finds, drawn on a copy of each image."""
from __future__ import annotations

from pathlib import Path

from ..evaluation import draw_detections, predict, predict_boxes
from ..train import load_trained
from .args import add_fuse_arg, non_negative_float, positive


def add_predict(p):
    """Add the arguments of ``tinymbv2 predict`` to its sub-parser ``p``."""
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top-k", type=positive(int), default=3)
    p.add_argument("--invert", action="store_true", help="dark-on-light images (scans)")
    p.add_argument("--min-score", type=non_negative_float, default=0.5,
                   help="a detector's least box score shown (0.5)")
    p.add_argument("--out-dir", help="where a detector's drawn images go (default: beside each "
                   "image, as <name>.detections.png)")
    add_fuse_arg(p)


def run_predict(args) -> int:
    """Run ``tinymbv2 predict`` with the parsed ``args``; returns the exit code."""
    model, config = load_trained(args.checkpoint)
    if config.get("task") == "detect":
        return _predict_boxes(model, config, args)
    for result in predict(model, config, args.images, args.top_k, args.invert, fuse=args.fuse):
        top = ", ".join(f"{name} {p:.3f}" for name, p in result["top"])
        print(f"{result['path']}: {top}")
    return 0


def _predict_boxes(model, config, args) -> int:
    names = config["class_names"]
    for found in predict_boxes(model, config, args.images, args.min_score, args.invert, fuse=args.fuse):
        source = Path(found["path"])
        folder = Path(args.out_dir) if args.out_dir else source.parent
        folder.mkdir(parents=True, exist_ok=True)
        drawn = folder / f"{source.stem}.detections.png"
        draw_detections(found["image"], found, names, min_score=args.min_score).save(drawn)
        boxes = "; ".join(f"{name} {score:.2f} at ({', '.join(f'{v:.0f}' for v in box)})"
                          for name, score, box in zip(found["names"], found["scores"], found["boxes"]))
        print(f"{found['path']}: {len(found['scores'])} boxes{': ' + boxes if boxes else ''} -> {drawn}")
    return 0
