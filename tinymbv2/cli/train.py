"""``tinymbv2 train``: train a network and write a run folder (``tinymbv2.train.run_training``)."""
from __future__ import annotations

from ..train import run_training
from .args import add_data_args, add_fuse_arg, add_recipe_args, positive, train_config


def add_train(p):
    """Add the arguments of ``tinymbv2 train`` to its sub-parser ``p``."""
    add_data_args(p)
    add_recipe_args(p)
    add_fuse_arg(p)
    p.add_argument("--out", default="runs/run", help="run folder (model.npz, metrics.json, plots)")
    p.add_argument("--resume", help="checkpoint (model.npz) to continue from; only --epochs (the "
                   "schedule stretches to the new length), --out, --no-fuse, --data-dir, "
                   "--stop-after and --no-progress may differ from its run (--channels and "
                   "--image-size may be given if the images stay the same)")
    p.add_argument("--stop-after", type=positive(int),
                   help="stop after this epoch (the schedule still spans --epochs); resume later")


def run_train(args) -> int:
    """Run ``tinymbv2 train`` with the parsed ``args``; returns the exit code."""
    config = train_config(args, args.out)
    data_parallel = getattr(args, "data_parallel", None)  # set under mpirun (cli/ranks.py)
    metrics = run_training(config, resume=args.resume, progress=args.progress,
                           stop_after=args.stop_after, data_parallel=data_parallel)
    if data_parallel is not None and not data_parallel.is_main:
        return 0  # rank 0 says what was written
    if config.task == "detect":
        print(f"wrote {args.out}/model.npz, metrics.json, learning_curves.png, detections.png")
        print(f"test_map_50 {metrics['test_map_50']:.4f}  test_map {metrics['test_map']:.4f}")
    elif config.task == "segment":
        print(f"wrote {args.out}/model.npz, metrics.json, learning_curves.png, confusion_matrix.png, "
              f"masks.png")
        print(f"test_miou {metrics['test_miou']:.4f}  test_pixel_accuracy "
              f"{metrics['test_pixel_accuracy']:.4f}")
    else:
        print(f"wrote {args.out}/model.npz, metrics.json, learning_curves.png, confusion_matrix.png")
        print(f"test_accuracy {metrics['test_accuracy']:.4f}")
    return 0
