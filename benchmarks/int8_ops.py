"""Int8 inference kernels against the numba set's float32 ones, layer by layer, same run.

    python -m benchmarks.int8_ops                 # MobileNetV2-1.0, 224 px, batch 8
    python -m benchmarks.int8_ops --size 112 --batch 2 --repeats 5

Six layers of MobileNetV2-1.0 at ``--size`` px: the stem (3 -> 32, 3x3 stride 2), block 3's
expansion (24 -> 144, 1x1), its depthwise 3x3 at stride 1, block 4's depthwise at stride 2,
block 3's projection (144 -> 24) and the classifier (1280 -> 1000). The float32 contestant is
what a fused float model runs for the layer at inference: the convolution with its
BatchNorm (and ReLU6 where the layer has it) in one kernel (``*_bn_eval``), and the
Linear's ``matmul`` plus its bias. The int8 one is ``qlinear_conv2d`` / ``qgemm`` with the
requantization (and ReLU6's clamp) in the epilogue, on uint8 activations and per-channel
int8 weights. The two alternate inside every repetition after warm-up; prints the medians
and the ratio int8 / float32 (below 1: int8 is faster), and the total over the six layers.
"""
from __future__ import annotations

import argparse
import os

import numba
import numpy as np

from tinymbv2.kernels import kernel_set
from benchmarks.train_step import time_alternating


def layers(size):
    """(name, kind, C, Co, H=W of the input, stride, relu6) of the six layers at ``size`` px."""
    s4 = size // 4
    return [("stem 3x3 s2", "dense", 3, 32, size, 2, True),
            ("expand 1x1 24->144", "pointwise", 24, 144, s4, 1, True),
            ("depthwise 3x3 s1 144", "depthwise", 144, 144, s4, 1, True),
            ("depthwise 3x3 s2 144", "depthwise", 144, 144, s4, 2, True),
            ("project 1x1 144->24", "pointwise", 144, 24, s4, 1, False),
            ("classifier 1280->1000", "linear", 1280, 1000, 1, 1, False)]


def contestants(kind, c, co, hw, stride, relu6, batch, rng, kernels="numba"):
    """{"float32": call, "int8": call} for one layer, on random data of its shape, with the
    ``kernels`` set (numba; the test runs the reference on the same data)."""
    ks = kernel_set(kernels)
    xs, ys, yzp = np.float32(0.05), np.float32(0.04), np.uint8(0)
    bn = (rng.standard_normal(co).astype(np.float32) * 0.1, rng.uniform(0.5, 2, co).astype(np.float32),
          rng.uniform(0.5, 2, co).astype(np.float32), rng.standard_normal(co).astype(np.float32),
          1e-5, relu6)
    ws = rng.uniform(0.002, 0.02, co).astype(np.float32)
    bq = rng.integers(-2000, 2000, co).astype(np.int32)
    if kind == "linear":
        a = rng.standard_normal((batch, c)).astype(np.float32)
        w = rng.standard_normal((co, c)).astype(np.float32) * 0.03
        b = rng.standard_normal(co).astype(np.float32)
        aq = rng.integers(0, 256, (batch, c)).astype(np.uint8)
        wq = rng.integers(-127, 128, (co, c)).astype(np.int8)
        return {"float32": lambda: ks.matmul(a, w.T) + b,
                "int8": lambda: ks.qgemm(aq, xs, np.uint8(0), wq, ws, np.int8(0), bq, ys, yzp)}
    x = rng.standard_normal((batch, c, hw, hw)).astype(np.float32)
    xq = rng.integers(0, 256, (batch, c, hw, hw)).astype(np.uint8)
    k = 1 if kind == "pointwise" else 3
    pad = k // 2
    groups = c if kind == "depthwise" else 1
    w = rng.standard_normal((co, c // groups, k, k)).astype(np.float32) * 0.1
    wq = rng.integers(-127, 128, w.shape).astype(np.int8)
    if kind == "pointwise":
        def ours32():
            return ks.pointwise_conv2d_bn_eval(x, w, bn)
    elif kind == "depthwise":
        def ours32():
            return ks.depthwise_conv2d_bn_eval(x, w, stride, pad, bn)
    else:
        def ours32():
            return ks.conv2d_bn_eval(x, w, stride, pad, bn)

    def ours8():
        return ks.qlinear_conv2d(xq, xs, np.uint8(0), wq, ws, np.int8(0), bq, ys, yzp, stride,
                                 pad, groups, relu6=relu6)
    return {"float32": ours32, "int8": ours8}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)
    print(f"int8 against float32 kernels (numba set), MobileNetV2-1.0 layers at {args.size} px, "
          f"batch {args.batch}, {args.threads} threads; medians of {args.repeats} after "
          f"{args.warmup} warm-up, alternating")
    print(f"{'layer':<24}{'float32 ms':>11}{'int8 ms':>10}{'int8/f32':>10}")
    rows, total = {}, {"float32": 0.0, "int8": 0.0}
    for name, kind, c, co, hw, stride, relu6 in layers(args.size):
        medians = time_alternating(contestants(kind, c, co, hw, stride, relu6, args.batch, rng),
                                   args.repeats, args.warmup)
        rows[name] = medians
        for key in total:
            total[key] += medians[key]
        print(f"{name:<24}{1e3 * medians['float32']:>11.3f}{1e3 * medians['int8']:>10.3f}"
              f"{medians['int8'] / medians['float32']:>10.2f}")
    print(f"{'all six':<24}{1e3 * total['float32']:>11.3f}{1e3 * total['int8']:>10.3f}"
          f"{total['int8'] / total['float32']:>10.2f}")
    rows["all six"] = total
    return rows


if __name__ == "__main__":
    main()
