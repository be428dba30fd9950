"""Float32 inference of MobileNetV2-1.0 at 224 px: tinymbv2 against onnxruntime and PyTorch.

    python -m benchmarks.onnx_inference                 # batch 1 and batch 8, 2 threads
    python -m benchmarks.onnx_inference --batches 8 --threads 1

The same weights four ways: tinymbv2's model frozen by ``tinymbv2.freeze`` (its weights
copied and each op's kernel prepared once, as onnxruntime prepares a session: the deployed
form, "tinymbv2"), and the same model fused by ``tinymbv2.fuse`` in eval mode under
``no_grad`` (whole inverted residual blocks as one op, as ``tinymbv2 eval`` runs it, the
layers still the model's: "tinymbv2 fused"); the ONNX file ``tinymbv2.export.to_onnx``
writes of it (BatchNorm folded) run by onnxruntime's CPUExecutionProvider with the same
number of intra-op threads and sequential execution; and torchvision's ``mobilenet_v2`` in
eval mode under ``torch.inference_mode``. Random images; the outputs are first checked to
agree, then the contestants alternate inside every repetition after warm-up. Prints
medians and the ratio to onnxruntime (below 1: faster).

Between contestants the thread pools must be idle. onnxruntime's intra-op threads spin,
waiting for work, after a run ends, and so do GNU OpenMP's (PyTorch's and, in a race,
Numba's: ``benchmarks.openmp_wait``) for their spin count: on a machine with as many
cores as threads, a pool still spinning takes a core from the contestant after it, whose
own threads then wait for a time slice. So onnxruntime stops spinning at the end of
each run (``session.force_spinning_stop``, onnxruntime's option for requests that come
apart; it spins as usual inside a run), and each timed call starts after ``--pause-ms``
of sleep (5 by default), meant to outlast GNU OpenMP's spin. A much longer pause is not
fairer: after 50 ms of sleep every pool wakes cold, and onnxruntime's batch 1, the
shortest run, took twice its time (docs/benchmarks.md). ``--pause-ms 0 --ort-idle-spin``
races them back to back, as this benchmark did at first.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numba
import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for every contestant)
import torch

import tinymbv2
from benchmarks.train_step import make_pair, time_alternating
from tinymbv2.autograd import Tensor
from tinymbv2.export import to_onnx


def contestants(batch, threads, folder, size=224, seed=0, ort_idle_spin=False):
    """{name: one inference} for tinymbv2, onnxruntime and PyTorch on the same weights and images."""
    import onnxruntime

    model, tv = make_pair(seed)
    model.eval(), tv.eval()
    net, frozen = tinymbv2.fuse(model), tinymbv2.freeze(model)
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    path = Path(folder) / f"mobilenet_v2_b{batch}.onnx"
    to_onnx(model, path, x.shape)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if not ort_idle_spin:  # spin inside a run, not after it (see the module)
        options.add_session_config_entry("session.force_spinning_stop", "1")
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    tx = torch.from_numpy(x)

    def ours():
        return frozen(x)

    def fused():
        with tinymbv2.no_grad():
            return net(Tensor(x)).data

    def ort():
        return session.run(None, {name: x})[0]

    def theirs():
        with torch.inference_mode():
            return tv(tx).numpy()

    return {"onnxruntime": ort, "tinymbv2": ours, "tinymbv2 fused": fused, "pytorch": theirs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--pause-ms", type=float, default=5.0,
                        help="sleep before each timed call, so that no pool still spins")
    parser.add_argument("--ort-idle-spin", action="store_true",
                        help="let onnxruntime's threads spin after each run (its default)")
    args = parser.parse_args(argv)
    tinymbv2.backend.keep_freed_memory()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"MobileNetV2-1.0 float32 inference at {args.size} px; torch {torch.__version__}, "
          f"{args.threads} threads each; medians of {args.repeats} after {args.warmup} warm-up; "
          f"{args.pause_ms:g} ms pause before each; onnxruntime "
          f"{'spinning' if args.ort_idle_spin else 'not spinning'} between runs")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for batch in args.batches:
            calls = contestants(batch, args.threads, folder, args.size,
                                ort_idle_spin=args.ort_idle_spin)
            outs = {name: np.asarray(fn()) for name, fn in calls.items()}
            for name in ("tinymbv2", "pytorch"):  # the same network, to float32 rounding
                np.testing.assert_allclose(outs[name], outs["onnxruntime"], rtol=1e-3, atol=1e-4)
            np.testing.assert_array_equal(outs["tinymbv2 fused"], outs["tinymbv2"])
            medians = time_alternating(calls, args.repeats, args.warmup,
                                       pause=args.pause_ms / 1e3)
            results[batch] = medians
            for name, sec in medians.items():
                print(f"batch {batch:<3}{name:<16}{1e3 * sec:>9.2f} ms"
                      f"{sec / medians['onnxruntime']:>7.2f}x onnxruntime{batch / sec:>9.1f} images/s")
    return results


if __name__ == "__main__":
    main()
