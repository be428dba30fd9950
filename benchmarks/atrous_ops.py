"""The dense 3x3 convolutions of a DeepLabv3 head, one at a time: the numba set against PyTorch.

    python -m benchmarks.atrous_ops                  # the shapes of the segmentation step
    python -m benchmarks.atrous_ops --batch 2 --size 8
    python -m benchmarks.atrous_ops --threads 1 --cpu-time --channels-last   # a busy machine

At output stride 16 on 256 px images the ASPP head runs on a 16x16 map: three atrous 3x3
convolutions of 320 to 256 channels (rates 6, 12, 18) and DeepLabHead's 3x3 of 256 to 256.
For each: the forward, then forward and backward (both gradients, under a random upstream
gradient) of ours (the numba set's kernels: ``dilated.py``'s product per tap for the atrous
ones, ``dense``'s for the dilation-1 one) and of PyTorch (``F.conv2d``), alternating inside
every repetition after warm-up. Prints the medians and the ratio (below 1: ours faster).
"""
from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch

from benchmarks.train_step import time_alternating
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba.layout import as_channels_last

CASES = ((320, 256, 6, "ASPP rate 6"), (320, 256, 12, "ASPP rate 12"),
         (320, 256, 18, "ASPP rate 18"), (256, 256, 1, "head 3x3"))


def contestants(ci, co, rate, batch, size, rng, channels_last=False):
    """{name: timed call} for one convolution: ours and PyTorch's, forward and forward+backward.

    ``channels_last``: our x and gy stored channels-last, as the numba set keeps a 16x16
    plane inside the network (PyTorch gets the same values, NCHW).
    """
    k = kernel_set("numba")
    x = rng.standard_normal((batch, ci, size, size)).astype(np.float32)
    w = (0.05 * rng.standard_normal((co, ci, 3, 3))).astype(np.float32)
    s, p, d = (1, 1), (rate, rate), (rate, rate)
    gy = rng.standard_normal((batch, co, size, size)).astype(np.float32)
    tx, tw, tgy = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
    if channels_last:
        x, gy = as_channels_last(x), as_channels_last(gy)

    def ours_train():
        k.conv2d_forward(x, w, s, p, d)
        k.conv2d_backward_input(gy, w, x.shape, s, p, d)
        k.conv2d_backward_weight(gy, x, w.shape, s, p, d)

    def torch_train():
        xx, ww = tx.clone().requires_grad_(), tw.clone().requires_grad_()
        torch.nn.functional.conv2d(xx, ww, None, 1, rate, rate).backward(tgy)

    return {"ours forward": lambda: k.conv2d_forward(x, w, s, p, d),
            "torch forward": lambda: torch.nn.functional.conv2d(tx, tw, None, 1, rate, rate),
            "ours train": ours_train, "torch train": torch_train}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true",
                        help="our inputs channels-last, as inside the network")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time this process's CPU time (time.process_time), not the wall: "
                             "steadier on a machine shared with other processes; with one "
                             "thread each (--threads 1) it is each contestant's own time")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)
    print(f"3x3 convolutions on a {args.size}x{args.size} map, batch {args.batch}, float32; torch "
          f"{torch.__version__}, {args.threads} threads each; medians of {args.repeats} after "
          f"{args.warmup} warm-up (train: forward and both gradients)"
          + (", CPU time" if args.cpu_time else "") + (", ours channels-last" if args.channels_last else ""))
    print(f"{'convolution':<14}{'ours fwd':>10}{'torch fwd':>11}{'ours train':>12}"
          f"{'torch train':>13}{'ratio':>7}")
    rows = {}
    for ci, co, rate, name in CASES:
        m = time_alternating(contestants(ci, co, rate, args.batch, args.size, rng,
                                         args.channels_last), args.repeats, args.warmup,
                             time.process_time if args.cpu_time else time.perf_counter)
        rows[name] = m
        print(f"{name:<14}{1e3 * m['ours forward']:>8.2f}ms{1e3 * m['torch forward']:>9.2f}ms"
              f"{1e3 * m['ours train']:>10.2f}ms{1e3 * m['torch train']:>11.2f}ms"
              f"{m['ours train'] / m['torch train']:>6.2f}x")
    return rows


if __name__ == "__main__":
    main()
