"""Training-step speed of Mobile DeepLabv3 against PyTorch, same machine, same run.

    python -m benchmarks.segment_step                 # 256 px, batch 4, output stride 16, ASPP
    python -m benchmarks.segment_step --head lraspp --output-stride 8
    python -m benchmarks.segment_step --quick         # 64 px, batch 2, width 0.35
    TINYMBV2_PROFILE=1 python -m benchmarks.segment_step   # + time per op of ours
    python -m benchmarks.segment_step --threads 1 --cpu-time   # on a busy machine

Builds ``deeplabv3_mobilenet_v2`` in tinymbv2 (fused, as the trainer runs it) and the same
network from torchvision's parts (``benchmarks/torch_deeplab.py``) with the same weights,
and times one training step each (forward, per-pixel cross-entropy over the classes,
backward, SGD step with momentum and weight decay), alternating the contestants inside every
repetition after warm-up. The images are random, the masks random classes with a few pixels
ignored (``ignore_index=255``, as VOC's borders). Prints the medians and the ratio to PyTorch
(below 1 is faster).
"""
from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch

import tinymbv2
from benchmarks.torch_deeplab import torch_deeplabv3
from benchmarks.train_step import time_alternating
from tinymbv2 import optim
from tinymbv2.autograd import Tensor
from tinymbv2.functional import cross_entropy
from tinymbv2.models import deeplabv3_mobilenet_v2

IGNORE = 255


def random_masks(rng, batch, size, num_classes):
    """(batch, size, size) int64 classes, about 2% of the pixels ``IGNORE``."""
    masks = rng.integers(0, num_classes, (batch, size, size))
    masks[rng.random(masks.shape) < 0.02] = IGNORE
    return masks


def contestants(args):
    """The two training steps, ours and PyTorch's, on the same weights, images and masks."""
    model = deeplabv3_mobilenet_v2(args.classes, args.output_stride, args.head,
                                   width_mult=args.width, seed=0)
    tv = torch_deeplabv3(args.head, args.classes, args.output_stride, args.width)
    tv.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    net = tinymbv2.fuse(model)
    net.train(), tv.train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    masks = random_masks(rng, args.batch, args.size, args.classes)
    tx, tmasks = torch.from_numpy(x), torch.from_numpy(masks)
    kw = dict(lr=1e-3, momentum=0.9, weight_decay=4e-5)
    ours_opt = optim.SGD(model.parameters(), **kw)
    torch_opt = torch.optim.SGD(tv.parameters(), **kw)

    def ours():
        loss = cross_entropy(net(Tensor(x)), masks, ignore_index=IGNORE)
        ours_opt.zero_grad()
        loss.backward()
        ours_opt.step()
        return loss.item()

    def theirs():
        loss = torch.nn.functional.cross_entropy(tv(tx)["out"], tmasks, ignore_index=IGNORE)
        torch_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch_opt.step()
        return loss.item()

    return {"pytorch": theirs, "tinymbv2": ours}


def profile_ours(step):
    """One of our steps under ``tinymbv2.profiler``: time per op."""
    from tinymbv2.profiler import profile

    with profile() as prof:
        step()
    print(f"\ntime per op, one training step of ours ({tinymbv2.active_kernel_set()} kernels):")
    print(prof.table())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", choices=("aspp", "simple", "lraspp"), default="aspp")
    parser.add_argument("--output-stride", type=int, choices=(16, 8), default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time this process's CPU time (time.process_time), not the wall: "
                             "steadier on a machine shared with other processes; with one "
                             "thread each (--threads 1) it is each contestant's own time")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads of both contestants (PyTorch's and Numba's)")
    parser.add_argument("--quick", action="store_true", help="64 px, batch 2, width 0.35")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.width = 64, 2, 0.35
    if args.repeats < 1 or args.warmup < 0:
        parser.error(f"expected --repeats >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    tinymbv2.backend.keep_freed_memory()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))  # the same cores

    steps = contestants(args)
    clock = time.process_time if args.cpu_time else time.perf_counter
    medians = time_alternating(steps, args.repeats, args.warmup, clock)
    print(f"Mobile DeepLabv3 (MobileNetV2 {args.width}, head {args.head}, output stride "
          f"{args.output_stride}), {args.classes} classes; training step at {args.size} px, batch "
          f"{args.batch}; torch {torch.__version__}, {args.threads} threads each; medians of "
          f"{args.repeats} after {args.warmup} warm-up" + (", CPU time" if args.cpu_time else ""))
    for name, sec in medians.items():
        print(f"{name:<10}{1e3 * sec:>10.1f} ms{sec / medians['pytorch']:>8.2f}x PyTorch"
              f"{args.batch / sec:>9.1f} images/s")
    if os.environ.get("TINYMBV2_PROFILE") == "1":
        profile_ours(steps["tinymbv2"])
    return medians


if __name__ == "__main__":
    main()
