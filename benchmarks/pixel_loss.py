"""Per-pixel cross-entropy, forward and backward: both kernel sets against PyTorch, same run.

    python -m benchmarks.pixel_loss                  # (4, 11, 256, 256) float32 logits
    python -m benchmarks.pixel_loss --classes 21 --size 512 --batch 2

The loss of a segmentation training step (``F.cross_entropy`` with ``ignore_index=255`` on
about 2% of the pixels, the mean over the others), on random logits and targets: the value
and the gradient with respect to the logits. The contestants alternate inside every
repetition after warm-up; prints the medians and the ratio to PyTorch (below 1 is faster).
"""
from __future__ import annotations

import argparse
import os

import numba
import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch

import tinymbv2
from benchmarks.segment_step import IGNORE, random_masks
from benchmarks.train_step import time_alternating
from tinymbv2.autograd import Tensor
from tinymbv2.functional import cross_entropy


def contestants(args):
    """{name: one forward and backward}: the reference set, the numba set, PyTorch."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((args.batch, args.classes, args.size, args.size)).astype(np.float32)
    masks = random_masks(rng, args.batch, args.size, args.classes)
    tz, tmasks = torch.from_numpy(z), torch.from_numpy(masks)

    def ours(kernels):
        def step():
            with tinymbv2.use_kernels(kernels):
                x = Tensor(z, requires_grad=True)
                cross_entropy(x, masks, ignore_index=IGNORE).backward()
            return x.grad
        return step

    def theirs():
        x = tz.clone().requires_grad_()  # the clone: ours gets a fresh leaf too
        torch.nn.functional.cross_entropy(x, tmasks, ignore_index=IGNORE).backward()
        return x.grad

    return {"pytorch": theirs, "reference": ours("reference"), "numba": ours("numba")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads of both contestants (PyTorch's and Numba's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    steps = contestants(args)
    grads = [np.asarray(fn()) for fn in steps.values()]
    for g in grads[1:]:  # the same gradient from all three, to float32 rounding
        np.testing.assert_allclose(g, grads[0], rtol=1e-4, atol=1e-9)
    medians = time_alternating(steps, args.repeats, args.warmup)
    print(f"per-pixel cross-entropy, forward + backward, ({args.batch}, {args.classes}, "
          f"{args.size}, {args.size}) float32 logits; torch {torch.__version__}, {args.threads} "
          f"threads each; medians of {args.repeats} after {args.warmup} warm-up")
    for name, sec in medians.items():
        print(f"{name:<10}{1e3 * sec:>9.2f} ms{sec / medians['pytorch']:>8.2f}x PyTorch")
    return medians


if __name__ == "__main__":
    main()
