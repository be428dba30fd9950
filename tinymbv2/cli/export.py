"""``tinymbv2 export``: a checkpoint's model written as an ONNX graph, for onnxruntime and
other runtimes ([to_onnx][tinymbv2.export.onnx_graph.to_onnx]).

The graph's input is the model's: (N, C, H, W) float32 images of the checkpoint's size and
channels, normalised with its training data's mean and std, which the file keeps as
metadata (``norm_mean``, ``norm_std``) and the command prints.
"""
from __future__ import annotations

import json

from ..export import to_onnx
from ..train import load_trained
from .args import positive


def add_export(p):
    """Add the arguments of ``tinymbv2 export`` to its sub-parser ``p``."""
    p.add_argument("checkpoint")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--no-fold", dest="fold", action="store_false",
                   help="keep each BatchNorm as a BatchNormalization node (default: folded into "
                        "the conv before it)")
    p.add_argument("--opset", type=positive(int), default=17, help="the ONNX opset (17)")
    p.add_argument("--batch-size", type=positive(int), default=1,
                   help="the batch the graph is written for (1; the graph's shapes are fixed)")


def run_export(args) -> int:
    """Run ``tinymbv2 export`` with the parsed ``args``; returns the exit code."""
    model, cfg = load_trained(args.checkpoint)
    height, width = cfg["input_size"]
    shape = (args.batch_size, cfg["in_channels"], height, width)
    metadata = {"source": str(args.checkpoint), "task": cfg.get("task", "classify"),
                "norm_mean": json.dumps(cfg["norm_mean"]), "norm_std": json.dumps(cfg["norm_std"])}
    if cfg.get("class_names"):
        metadata["class_names"] = json.dumps(cfg["class_names"])
    path = to_onnx(model, args.onnx, shape, opset=args.opset, fold=args.fold, metadata=metadata)
    print(f"wrote {path}: {type(model).__name__}, opset {args.opset}, BatchNorm "
          f"{'folded' if args.fold else 'kept'}; input 'input' {'x'.join(map(str, shape))} "
          f"float32, normalised with mean {cfg['norm_mean']} and std {cfg['norm_std']}")
    return 0
