"""Where a float32 inference's time goes: tinymbv2's fused MobileNetV2-1.0, op by op.

    python -m benchmarks.inference_ops                        # 224 px, batch 1 and 8, 2 threads
    python -m benchmarks.inference_ops --batches 1 --repeats 40

The model ``benchmarks.onnx_inference`` races, fused by ``tinymbv2.fuse``, in eval mode
under ``no_grad``, run back to back in a process of its own, whose threads sleep between
parallel loops as tinymbv2's do by default (``tinymbv2/kernels/numba/pool.py``; the race
sets them spinning, ``benchmarks.openmp_wait``). Every op (each ``Function`` call:
the stem's conv + BatchNorm, each inverted residual block, the pooling, the classifier) is
timed in every run. For each op the table gives its input, its FLOPs (two per
multiply-add), the minimum of its times over the runs and its GFLOP/s at that minimum.
The minimum is the run least disturbed by other work on a shared machine. The sum of
those minima is at most the whole forward's minimum; the difference is the Python
between the ops and the allocation of their outputs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from math import prod

import numba
import numpy as np

import tinymbv2
from benchmarks.train_step import make_pair
from tinymbv2 import autograd
from tinymbv2.autograd import Tensor


def _shape(a):
    return np.shape(a.data if isinstance(a, Tensor) else a)


def op_flops(name: str, args: tuple, out_shape: tuple) -> int:
    """FLOPs (two per multiply-add) of one fused inference op, from its arguments.

    Args:
        name: The Function's class name.
        args: What ``Function.apply`` was given.
        out_shape: The shape of its output.

    Returns:
        The FLOPs; 0 for an op that multiplies nothing (pooling, reshapes).
    """
    if name == "ConvBatchNormEval":  # (x, w, stride, padding, groups, bn, ...)
        return 2 * prod(out_shape) * prod(_shape(args[1])[1:])
    if name == "InvertedResidualEval":  # (x, expand, depthwise, project, stride, residual)
        n, ci, h, w = _shape(args[0])
        ho, wo = out_shape[2:]
        ch, co = _shape(args[2][0])[0], out_shape[1]
        expand = 0 if args[1] is None else 2 * n * h * w * ch * ci
        return expand + 2 * n * ho * wo * ch * 9 + 2 * n * ho * wo * co * ch
    if name == "Linear":  # (x, w, b)
        return 2 * _shape(args[0])[0] * prod(_shape(args[1]))
    return 0


def profile(batch: int, repeats: int, size: int = 224, seed: int = 0) -> dict:
    """Per-op minima of the fused inference at one batch size (see the module).

    Args:
        batch: The images per forward.
        repeats: The timed forwards, after two untimed ones.
        size: The image side.
        seed: Weights and images.

    Returns:
        ``{"ops": [(name, input shape, flops, seconds)], "forward_min": s, "forward_median": s}``.
    """
    model, _ = make_pair(seed)
    model.eval()
    net = tinymbv2.fuse(model)
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    calls = []
    apply = autograd.Function.apply.__func__

    def timed(cls, *args, **kwargs):
        start = time.perf_counter()
        out = apply(cls, *args, **kwargs)
        calls.append((cls.__name__, _shape(args[0]), op_flops(cls.__name__, args, out.shape),
                      time.perf_counter() - start))
        return out

    def forward():
        calls.clear()
        start = time.perf_counter()
        with tinymbv2.no_grad():
            net(Tensor(x))
        return time.perf_counter() - start

    autograd.Function.apply = classmethod(timed)
    try:
        forward(), forward()
        runs, totals = [], []
        for _ in range(repeats):
            totals.append(forward())
            runs.append(list(calls))
    finally:
        autograd.Function.apply = classmethod(apply)
    minima = np.min([[c[3] for c in run] for run in runs], axis=0)
    ops = [(name, shape, flops, float(t)) for (name, shape, flops, _), t in zip(runs[0], minima)]
    return {"ops": ops, "forward_min": min(totals), "forward_median": statistics.median(totals)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    tinymbv2.backend.keep_freed_memory()
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"MobileNetV2-1.0 fused float32 inference at {args.size} px, "
          f"{numba.get_num_threads()} threads; minima of {args.repeats} runs")
    results = {}
    for batch in args.batches:
        result = results[batch] = profile(batch, args.repeats, args.size)
        print(f"\nbatch {batch}\n{'op':<22}{'input':<22}{'MFLOP':>8}{'ms':>9}{'GFLOP/s':>9}")
        for name, shape, flops, sec in result["ops"]:
            print(f"{name:<22}{str(shape):<22}{flops / 1e6:>8.1f}{1e3 * sec:>9.3f}"
                  f"{flops / sec / 1e9 if flops else 0:>9.0f}")
        total = sum(op[3] for op in result["ops"])
        flops = sum(op[2] for op in result["ops"])
        print(f"{'sum of the ops':<44}{flops / 1e6:>8.1f}{1e3 * total:>9.3f}"
              f"{flops / total / 1e9:>9.0f}")
        print(f"whole forward: minimum {1e3 * result['forward_min']:.3f} ms, median "
              f"{1e3 * result['forward_median']:.3f} ms")
    return results


if __name__ == "__main__":
    main()
