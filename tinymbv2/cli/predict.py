"""``tinymbv2 predict``: the top-k classes of image files, with a checkpoint's model; for a
detector's checkpoint, the boxes it finds, drawn on a copy of each image; for a segmenter's,
its mask in colour over a copy of each image, and the share of the pixels of each class found."""
from __future__ import annotations

from pathlib import Path

from ..evaluation import draw_detections, overlay_mask, predict, predict_boxes, predict_masks
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
    p.add_argument("--out-dir", help="where a detector's or segmenter's drawn images go (default: "
                   "beside each image, as <name>.detections.png or <name>.mask.png)")
    p.add_argument("--alpha", type=non_negative_float, default=0.5,
                   help="a segmenter's mask colours over the image: their weight, in [0, 1] (0.5)")
    add_fuse_arg(p)


def run_predict(args) -> int:
    """Run ``tinymbv2 predict`` with the parsed ``args``; returns the exit code."""
    model, config = load_trained(args.checkpoint)
    if config.get("task") == "detect":
        return _predict_boxes(model, config, args)
    if config.get("task") == "segment":
        return _predict_masks(model, config, args)
    for result in predict(model, config, args.images, args.top_k, args.invert, fuse=args.fuse):
        top = ", ".join(f"{name} {p:.3f}" for name, p in result["top"])
        print(f"{result['path']}: {top}")
    return 0


def _drawn_path(args, path, kind: str) -> Path:
    """Where the drawing of image ``path`` goes: ``<name>.<kind>.png`` in --out-dir or beside it."""
    source = Path(path)
    folder = Path(args.out_dir) if args.out_dir else source.parent
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{source.stem}.{kind}.png"


def _predict_boxes(model, config, args) -> int:
    names = config["class_names"]
    for found in predict_boxes(model, config, args.images, args.min_score, args.invert, fuse=args.fuse):
        drawn = _drawn_path(args, found["path"], "detections")
        draw_detections(found["image"], found, names, min_score=args.min_score).save(drawn)
        boxes = "; ".join(f"{name} {score:.2f} at ({', '.join(f'{v:.0f}' for v in box)})"
                          for name, score, box in zip(found["names"], found["scores"], found["boxes"]))
        print(f"{found['path']}: {len(found['scores'])} boxes{': ' + boxes if boxes else ''} -> {drawn}")
    return 0


def _predict_masks(model, config, args) -> int:
    from PIL import Image

    if args.alpha > 1:
        raise ValueError(f"predict: expected --alpha in [0, 1], got {args.alpha}")
    for found in predict_masks(model, config, args.images, args.invert, fuse=args.fuse):
        drawn = _drawn_path(args, found["path"], "mask")
        Image.fromarray(overlay_mask(found["image"], found["mask"], args.alpha), "RGB").save(drawn)
        shares = ", ".join(f"{name} {share:.1%}" for name, share in found["shares"])
        print(f"{found['path']}: {shares} -> {drawn}")
    return 0
