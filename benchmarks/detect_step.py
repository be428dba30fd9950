"""Training-step speed of the SSDLite detector against PyTorch, same machine, same run.

    python -m benchmarks.detect_step              # 320 px, batch 8, width 1.0, 11 classes
    python -m benchmarks.detect_step --quick      # 160 px, batch 4, width 0.5

Builds ``ssdlite_mobilenet_v2`` in tinymbv2 (fused, as the trainer runs it) and the same
network from torchvision's parts (``benchmarks/torch_ssdlite.py``) with the same weights,
and times one training step each (forward, SSD's loss with matching and hard-negative
mining, backward, SGD step), alternating the contestants inside every repetition after
warm-up. The images are random, the targets 1-6 random boxes per image. Prints the medians
and the ratio to PyTorch (below 1 is faster).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch

import tinymbv2
from benchmarks.torch_ssdlite import TorchSSDLite, torchvision_loss
from benchmarks.train_step import time_alternating
from tinymbv2 import optim
from tinymbv2.autograd import Tensor
from tinymbv2.detection import DefaultBoxGenerator, ssd_loss
from tinymbv2.models import ssdlite_mobilenet_v2


def random_targets(rng, batch, size, num_classes):
    """1-6 boxes per image, 10-60% of the side, with random classes."""
    targets = []
    for _ in range(batch):
        m = int(rng.integers(1, 7))
        wh = rng.uniform(0.1, 0.6, (m, 2)) * size
        xy = rng.random((m, 2)) * (size - wh)
        targets.append({"boxes": np.concatenate([xy, xy + wh], axis=1), "labels": rng.integers(1, num_classes, m)})
    return targets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="160 px, batch 4, width 0.5")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.width = 160, 4, 0.5
    tinymbv2.backend.keep_freed_memory()
    torch.set_num_threads(args.threads)

    model = ssdlite_mobilenet_v2(args.classes, width_mult=args.width, size=args.size, seed=0)
    tv = TorchSSDLite(args.width, args.classes)
    tv.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    net = tinymbv2.fuse(model)
    net.train(), tv.train()
    anchors = DefaultBoxGenerator(model.aspect_ratios, model.min_ratio, model.max_ratio)(
        (args.size, args.size), model.feature_map_sizes(args.size, args.size))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    targets = random_targets(rng, args.batch, args.size, args.classes)
    t_targets = [{"boxes": torch.tensor(t["boxes"], dtype=torch.float32), "labels": torch.tensor(t["labels"])}
                 for t in targets]
    t_anchors = torch.tensor(anchors, dtype=torch.float32)
    ours_opt = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
    torch_opt = torch.optim.SGD(tv.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
    tx = torch.from_numpy(x)

    def ours():
        cls, box = net(Tensor(x))
        parts = ssd_loss(cls, box, anchors, targets)
        loss = parts["bbox_regression"] + parts["classification"]
        ours_opt.zero_grad()
        loss.backward()
        ours_opt.step()

    def theirs():
        cls, box = tv(tx)
        parts = torchvision_loss(cls, box, t_anchors, t_targets)
        loss = parts["bbox_regression"] + parts["classification"]
        torch_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch_opt.step()

    medians = time_alternating({"pytorch": theirs, "tinymbv2": ours}, args.repeats, args.warmup)
    print(f"SSDLite-MobileNetV2 {args.width}, {args.classes} classes, {len(anchors)} default boxes; "
          f"training step at {args.size} px, batch {args.batch}; torch {torch.__version__}, "
          f"{args.threads} threads; medians of {args.repeats} after {args.warmup} warm-up")
    for name, sec in medians.items():
        print(f"{name:<10}{1e3 * sec:>10.1f} ms{sec / medians['pytorch']:>8.2f}x PyTorch"
              f"{args.batch / sec:>9.1f} images/s")


if __name__ == "__main__":
    main()
