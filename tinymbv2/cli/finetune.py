"""``tinymbv2 finetune``: a checkpoint's network, a new head, trained on another dataset."""
from __future__ import annotations

from ..train import run_finetune
from .args import add_data_args, add_fuse_arg, add_recipe_args, train_config


def add_finetune(p):
    """Add the arguments of ``tinymbv2 finetune`` to its sub-parser ``p``."""
    p.add_argument("checkpoint", help="pretrained model.npz")
    add_data_args(p, default_dataset="digits")
    add_recipe_args(p)
    add_fuse_arg(p)
    p.add_argument("--train-last-blocks", type=int, default=0,
                   help="feature blocks left trainable besides the new head (0: head only)")
    p.add_argument("--out", default="runs/finetune")


def run_finetune_command(args) -> int:
    """Run ``tinymbv2 finetune`` with the parsed ``args``; returns the exit code."""
    metrics = run_finetune(args.checkpoint, train_config(args, args.out), args.train_last_blocks,
                           progress=args.progress)
    print(f"test_accuracy {metrics['test_accuracy']:.4f}")
    return 0
