"""``tinymbv2 predict``: the top-k classes of image files, with a checkpoint's model."""
from __future__ import annotations

from ..evaluation import predict
from ..train import load_trained
from .args import add_fuse_arg, positive


def add_predict(p):
    """Add the arguments of ``tinymbv2 predict`` to its sub-parser ``p``."""
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top-k", type=positive(int), default=3)
    p.add_argument("--invert", action="store_true", help="dark-on-light images (scans)")
    add_fuse_arg(p)


def run_predict(args) -> int:
    """Run ``tinymbv2 predict`` with the parsed ``args``; returns the exit code."""
    model, config = load_trained(args.checkpoint)
    for result in predict(model, config, args.images, args.top_k, args.invert, fuse=args.fuse):
        top = ", ".join(f"{name} {p:.3f}" for name, p in result["top"])
        print(f"{result['path']}: {top}")
    return 0
