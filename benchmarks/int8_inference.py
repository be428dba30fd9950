"""Int8 inference of MobileNetV2-1.0 at 224 px: Int8Net against tinymbv2's float32 model and onnxruntime.

    python -m benchmarks.int8_inference                 # batch 1 and batch 8, 2 threads
    python -m benchmarks.int8_inference --batches 8 --threads 1 --repeats 5

One network three ways: tinymbv2's float32 model frozen by ``tinymbv2.freeze`` (its
deployed form: weights copied, each op's kernel prepared once; the fused model's logits to
the bit, and faster: ``benchmarks.onnx_inference``); the same model quantized per channel
(``quantize_model``, ``calibrate`` on ``--calib`` random images) and run in integers by
``Int8Net`` (the numba set's int8 kernels); and the QDQ ONNX file of that calibrated view
(``to_qdq_onnx``) run by onnxruntime's CPUExecutionProvider, which fuses the QDQ pairs into
its own int8 kernels, with the same number of intra-op threads and sequential execution,
its threads not spinning after a run (they would hold the cores the next contestant needs).
Random weights, with BatchNorm's running statistics and affine parameters drawn away from
their fresh 0 and 1 (a fresh network's activations would all be alike). Before timing, the
int8 predictions are checked: Int8Net's class must equal onnxruntime's on at least
``--agree`` of the images. The contestants then alternate inside every repetition after
warm-up; prints medians and the ratio to tinymbv2's float32 time (below 1: faster).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numba
import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for every contestant)
import tinymbv2
from benchmarks.train_step import time_alternating
from tinymbv2 import nn
from tinymbv2.models import mobilenet_v2
from tinymbv2.quant import Int8Net, calibrate, quantize_model
from tinymbv2.quant.onnx_qdq import to_qdq_onnx


def random_model(seed=0, width=1.0):
    """MobileNetV2 (1000 classes) in eval mode, its BatchNorms' statistics and affine
    parameters random (a fresh one's are 0 and 1)."""
    model = mobilenet_v2(width_mult=width, num_classes=1000, seed=seed)
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.data[...] = rng.normal(0, 0.2, m.num_features)
            m.running_var.data[...] = rng.uniform(0.5, 2.0, m.num_features)
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[...] = rng.normal(0, 0.2, m.num_features)
    return model.eval()


def images(n, size, seed):
    """n random (3, size, size) float32 images, normalised-looking (mean 0, std 1)."""
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def build(size, calib, seed=0):
    """(float model frozen, Int8Net, calibrated view) of one random MobileNetV2-1.0."""
    model = random_model(seed)
    qnet = calibrate(quantize_model(model), images(calib, size, seed + 1), batch_size=calib)
    return tinymbv2.freeze(model), Int8Net.from_view(qnet), qnet


def ort_session(qnet, shape, threads, folder):
    """onnxruntime on the view's QDQ file, ``threads`` intra-op threads, sequential."""
    import onnxruntime

    path = to_qdq_onnx(qnet, Path(folder) / f"mobilenet_v2_int8_b{shape[0]}.onnx", shape)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # its pool's threads spin after each run by default, on the cores that the contestant
    # after it in the alternation (Int8Net's numba threads) then waits for
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def contestants(net, int8, ort, x):
    """{name: one inference of x} for Int8Net, the frozen float32 model and onnxruntime int8."""
    return {"int8net": lambda: int8(x), "float32": lambda: net(x),
            "onnxruntime-int8": lambda: ort(x)}


def agreement(int8, ort, x) -> float:
    """The share of images whose predicted class is the same from Int8Net and onnxruntime."""
    return float(np.mean(int8(x).argmax(1) == ort(x).argmax(1)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calib", type=int, default=4, help="calibration images")
    parser.add_argument("--check", type=int, default=16, help="images for the agreement check")
    parser.add_argument("--agree", type=float, default=0.9,
                        help="the least share of the check's images whose class must agree")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    tinymbv2.backend.keep_freed_memory()
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    net, int8, qnet = build(args.size, args.calib)
    print(f"MobileNetV2-1.0 inference at {args.size} px, per-channel int8 calibrated on "
          f"{args.calib} images; {args.threads} threads each; medians of {args.repeats} after "
          f"{args.warmup} warm-up, alternating")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        check = images(args.check, args.size, seed=7)
        share = agreement(int8, ort_session(qnet, check.shape, args.threads, folder), check)
        print(f"Int8Net's class equals onnxruntime's on {share:.3f} of {args.check} images")
        if share < args.agree:
            raise SystemExit(f"int8_inference: Int8Net agrees with onnxruntime on {share:.3f} "
                             f"of the images, expected at least {args.agree}")
        results["agreement"] = share
        for batch in args.batches:
            x = images(batch, args.size, seed=batch)
            ort = ort_session(qnet, x.shape, args.threads, folder)
            medians = time_alternating(contestants(net, int8, ort, x), args.repeats, args.warmup)
            results[batch] = medians
            for name, sec in medians.items():
                print(f"batch {batch:<3}{name:<18}{1e3 * sec:>9.2f} ms"
                      f"{sec / medians['float32']:>7.2f}x float32{batch / sec:>9.1f} images/s")
    return results


if __name__ == "__main__":
    main()
