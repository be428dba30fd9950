"""Peak activation memory of the normal and the chunked (paper section 5.1) forward.

    python -m benchmarks.memory [--resolution 224] [--width 1.0] [--batch 1]
                                [--chunks 1 2 4 8] [--kernels numba|reference]

tracemalloc sees every NumPy allocation (including arrays made inside Numba
kernels), so "peak" is the largest amount of array memory alive at once during
the forward, above what was alive before it (the model's weights and the input).
Both forwards run in eval mode under no_grad, so no graph keeps tensors alive.
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

import tinymbv2
from tinymbv2.models import memory_efficient_inference, mobilenet_v2, summary


def peak_bytes(fn):
    """(result, peak bytes allocated above the starting level, seconds) of ``fn()``."""
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - start, seconds


def measure(width=1.0, resolution=224, batch=1, chunks=(1, 2, 4, 8), dtype=np.float32):
    """Rows (label, peak bytes, seconds, max |logit difference| to the normal forward)."""
    model = mobilenet_v2(width_mult=width, seed=0).to(dtype).eval()
    x = tinymbv2.Tensor(np.random.default_rng(0).standard_normal(
        (batch, 3, resolution, resolution)).astype(dtype))

    fused = tinymbv2.fuse(model)  # as evaluation runs it: each block band by band

    def normal():
        with tinymbv2.no_grad():
            return fused(x).data

    normal()  # warm up (Numba compilation, caches) outside the measurement
    ref, peak, secs = peak_bytes(normal)
    rows = [("normal forward", peak, secs, 0.0)]
    for m in chunks:
        memory_efficient_inference(model, x, chunks=m)
        out, peak, secs = peak_bytes(
            lambda m=m: memory_efficient_inference(model, x, chunks=m).data)
        rows.append((f"chunked, {m} slice(s)", peak, secs, float(np.abs(out - ref).max())))
    return model, rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                description=__doc__.split("\n")[0])
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--kernels", choices=("numba", "reference"), default=None)
    args = p.parse_args(argv)
    if args.kernels:
        tinymbv2.use_kernels(args.kernels)
    model, rows = measure(args.width, args.resolution, args.batch, tuple(args.chunks))
    s = summary(model, (3, args.resolution, args.resolution), batch_size=args.batch)
    res = args.resolution
    print(f"MobileNetV2 width {args.width}, {args.batch}x3x{res}x{res} float32, eval, "
          f"kernels: {tinymbv2.active_kernel_set()}")
    print(f"largest single activation (analytic): {s.max_activation_bytes / 2**20:.2f} MiB")
    base = rows[0][1]
    print(f"{'forward':<22}{'peak MiB':>10}{'vs normal':>11}{'seconds':>9}{'max |dlogit|':>14}")
    for label, peak, secs, diff in rows:
        print(f"{label:<22}{peak / 2**20:>10.2f}{peak / base:>10.2f}x{secs:>9.2f}{diff:>14.2e}")


if __name__ == "__main__":
    main()
