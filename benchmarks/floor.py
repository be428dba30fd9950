"""How far each part of a training step is from what this machine could do at best.

    python -m benchmarks.floor                      # 224 px, batch 8
    python -m benchmarks.floor --resolution 32 --batch 64

For MobileNetV2-1.0 the script counts the work of one training step (forward,
cross-entropy, backward, RMSprop) layer by layer, from the model's own
modules, and turns it into a *floor*: the time that work takes at this
machine's float32 GEMM rate (the arithmetic of the convolutions and the
classifier; the faster of NumPy's BLAS and the numba set's own product) or at its copy bandwidth (the memory-bound ops), both measured
in the same run. Next to it stands the time the numba kernels take for that
layer type (``tinymbv2.profiler``, median of a few steps).

What each layer type must do at the least, for an activation of B bytes:

* pointwise and stem convolutions, classifier: their multiply-adds, 2 FLOP
  each: forward, input gradient (not for the stem, whose input is the image)
  and weight gradient;
* BatchNorm (+ ReLU6): forward reads x and writes y (2 B); backward reads the
  gradient and x and writes the input gradient (3 B);
* depthwise 3x3: forward reads x and writes y; input gradient reads gy and
  writes gx; weight gradient reads gy and x;
* RMSprop with momentum: reads parameter, gradient, square average and
  momentum buffer, writes three of them: 7 x 4 bytes per parameter;
* the depthwise stage of a block (BatchNorm, ReLU6, depthwise, BatchNorm, ReLU6) where
  the numba set fuses it (:mod:`tinymbv2.kernels.numba.stage`), for e the expanded
  tensor and d the depthwise output: forward reads e and writes d and the output (e +
  2 d), backward reads the gradient, d and e and writes e's gradient (2 e + 2 d).

The floor is a lower bound for ops run one after another, each at the best rate
this machine shows; Python, the loss and the residual additions are left out
of it. ``benchmarks.ops`` sets ``GOMP_SPINCOUNT`` to GNU OpenMP's default before PyTorch
loads (``benchmarks/openmp_wait.py``), so that Numba's loops run on the same spinning OpenMP
runtime as in ``benchmarks.train_step``; with Numba's threads asleep between loops each loop
pays a wake-up (``kernels/numba/pool.py``).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.ops import machine_limits  # first: PyTorch's OpenMP runtime, as in train_step

import tinymbv2  # noqa: E402  (after PyTorch, see above)
from tinymbv2 import optim
from tinymbv2.autograd import Tensor
from tinymbv2.functional import cross_entropy
from tinymbv2.kernels.numba.layout import channels_last_plane
from tinymbv2.models import mobilenet_v2, summary
from tinymbv2.profiler import LAYER_TYPES, profile

FLOP_TYPES = ("pointwise conv", "stem (dense) conv", "linear")


STAGE = LAYER_TYPES["DepthwiseStageTrain"]  # the fused stage, as the profiler names it


def fused_stages(rows):
    """{row index: "e" or "d"} for the rows the numba set runs as fused depthwise stages
    (``F.depthwise_stage_train``): in MobileNetV2 every depthwise layer whose input plane it
    keeps NCHW (above 16x16), with the BatchNorm before it (input e: the expansion's, or
    for block 1 the stem's) and the one after it (marked with it, as d)."""
    marks = {}
    norms = [i for i, row in enumerate(rows) if row.type == "BatchNorm2d"]
    for i, row in enumerate(rows):
        if row.macs_kind == "depthwise" and not channels_last_plane(*rows[i - 1].output_shape[2:]):
            before = max(k for k in norms if k < i)
            after = min(k for k in norms if k > i)
            marks.update({before: "e", i: "d", after: "d"})
    return marks


def step_work(model, resolution, batch):
    """{layer type: (FLOP, bytes)} of one training step, from the rows of ``summary()``
    (shapes, multiply-adds and activation bytes of each layer, in forward order)."""
    work = {}

    def add(kind, flop=0, nbytes=0):
        f, b = work.get(kind, (0, 0))
        work[kind] = (f + flop, b + nbytes)

    rows = summary(model, (3, resolution, resolution), batch_size=batch).rows
    stages = fused_stages(rows)
    x_bytes = batch * 3 * resolution * resolution * 4  # the input of the row being read
    for i, row in enumerate(rows):
        y_bytes = row.activation_bytes
        if i in stages:
            # forward reads e, writes d and h; backward reads dL/dh, d and e, writes dL/de
            if stages[i] == "e":
                add(STAGE, nbytes=3 * y_bytes)  # e: 3 passes
            elif row.macs_kind == "depthwise":
                add(STAGE, nbytes=4 * y_bytes)  # d (and h, dL/dh): 4 passes
        elif row.macs_kind == "depthwise":  # forward (x, y), input gradient (gy, gx),
            add("depthwise conv", nbytes=3 * (x_bytes + y_bytes))  # weight gradient (gy, x)
        elif row.macs_kind is not None:  # forward + weight gradient (+ input gradient)
            kind = {"standard": "stem (dense) conv", "pointwise": "pointwise conv",
                    "linear": "linear"}[row.macs_kind]
            passes = 2 if kind == "stem (dense) conv" else 3  # no gradient for the image
            add(kind, flop=2 * row.macs * passes)
        elif row.type == "BatchNorm2d":
            add("batch norm", nbytes=5 * y_bytes)
        x_bytes = y_bytes
    params = sum(p.size for p in model.parameters())
    add("optimizer (RMSprop)", nbytes=7 * params * 4)
    return work


def measured_times(model, opt, x, y, repeats):
    """({layer type: median ms in a step}, median ms of a whole step without the profiler)."""
    def step():
        loss = cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):  # compile, and let the heap grow to its working size
        step()
    per_type, walls, opt_times = {}, [], []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        walls.append(time.perf_counter() - start)
        with profile() as prof:
            step()
        for kind, v in prof.by_layer_type().items():
            per_type.setdefault(kind, []).append(v["forward"] + v["backward"])
        start = time.perf_counter()
        opt.step()  # the optimizer alone (the profiler counts it as glue)
        opt_times.append(time.perf_counter() - start)
    per_type["optimizer (RMSprop)"] = opt_times
    return ({k: 1e3 * statistics.median(v) for k, v in per_type.items()},
            1e3 * statistics.median(walls))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    tinymbv2.backend.keep_freed_memory()  # as benchmarks.train_step does

    model = mobilenet_v2(width_mult=1.0, num_classes=1000, seed=0)
    opt = optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.9, momentum=0.9, eps=1e-3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.resolution, args.resolution)).astype(np.float32)
    y = rng.integers(0, 1000, args.batch).astype(np.int64)
    times, wall = measured_times(tinymbv2.fuse(model), opt, x, y, args.repeats)  # as trained
    gemm, copy = machine_limits()
    work = step_work(model, args.resolution, args.batch)

    print(f"one training step, {args.resolution} px batch {args.batch}, numba kernels; this "
          f"machine: GEMM {gemm:.0f} GFLOP/s, copy {copy:.1f} GB/s")
    print(f"{'layer type':<28}{'numba ms':>10}{'work':>14}{'floor ms':>10}{'x floor':>9}")
    total_floor = total_measured = 0.0
    for kind, (flop, nbytes) in sorted(work.items(), key=lambda kv: -times.get(kv[0], 0)):
        floor = 1e3 * (flop / (gemm * 1e9) + nbytes / (copy * 1e9))
        amount = f"{flop / 1e9:.2f} GFLOP" if kind in FLOP_TYPES else f"{nbytes / 1e6:.0f} MB"
        measured = times.get(kind, 0.0)
        total_floor += floor
        total_measured += measured
        print(f"{kind:<28}{measured:>10.1f}{amount:>14}{floor:>10.1f}{measured / floor:>9.2f}")
    print(f"{'the rest (Python, loss, additions)':<34}{wall - total_measured:>4.1f}")
    print(f"{'whole step':<28}{wall:>10.1f}{'':>14}{total_floor:>10.1f}{wall / total_floor:>9.2f}")


if __name__ == "__main__":
    main()
