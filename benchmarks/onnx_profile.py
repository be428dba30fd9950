"""Where float32 inference spends its time, step by step: the frozen tinymbv2 against
onnxruntime's own node profile, in the conditions of ``benchmarks.onnx_inference``'s race.

    python -m benchmarks.onnx_profile                  # batch 1, 2 threads
    python -m benchmarks.onnx_profile --batch 8 --repeats 21

Both run MobileNetV2-1.0 on the same weights and images, alternating as in the race (each
timed call after ``--pause-ms`` of sleep, PyTorch's run between them, so that each finds
the caches as the race leaves them). tinymbv2's steps are timed one by one
(``FrozenNet.prepared``, ``pool``, ``classify``); onnxruntime's nodes come from its
profiler (``enable_profiling``), summed over the nodes of each layer of the model (the
ONNX node names carry the layer's: ``features.5.conv.0.2``). Prints the median of each,
ours minus theirs, and the whole calls' medians (onnxruntime's profiler costs it a
little). The first step is tinymbv2's stem and block 1 in one pass (``features.0-1``),
against onnxruntime's nodes of both.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for every contestant)
import torch

import tinymbv2
from benchmarks.train_step import make_pair
from tinymbv2.export import to_onnx
from tinymbv2.kernels import kernels_for


def layer_of(node: str) -> str:
    """The model layer an ONNX node belongs to: ``features.N``, ``pool``, ``classifier`` or
    ``other`` (onnxruntime's layout reorders).

    Args:
        node: The node's name in onnxruntime's profile.

    Returns:
        The layer's name.
    """
    m = re.match(r"(features\.\d+)\.", node)
    if m:
        return m.group(1)
    for name in ("pool", "classifier"):
        if node.startswith(name):
            return name
    return "other"


def profile(batch=1, threads=2, repeats=41, size=224, pause_ms=5.0, seed=0):
    """Per-step medians of the frozen model and onnxruntime's per-layer sums, raced.

    Args:
        batch: Images per call.
        threads: Threads for each contestant.
        repeats: Timed rounds (each: onnxruntime, tinymbv2, PyTorch).
        size: Image size.
        pause_ms: Sleep before each timed call.
        seed: Weights and images.

    Returns:
        ``(rows, whole)``: rows of ``(step, ours ms, onnxruntime ms)`` and the whole calls'
        medians ``{"tinymbv2": ms, "onnxruntime": ms}``.
    """
    import onnxruntime

    model, tv = make_pair(seed)
    model.eval(), tv.eval()
    frozen = tinymbv2.freeze(model)
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    tx = torch.from_numpy(x)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mobilenet_v2.onnx"
        to_onnx(model, path, x.shape)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.force_spinning_stop", "1")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        runs = frozen.prepared(kernels_for(x))
        steps = collections.defaultdict(list)
        whole = {"tinymbv2": [], "onnxruntime": []}

        def ours(record):
            calls = [*zip(frozen.names, runs), ("pool", frozen.pool),
                     ("classifier", frozen.classify)]
            start, h = time.perf_counter(), x
            for step, run in calls:
                t = time.perf_counter()
                h = run(h)
                if record:
                    steps[step].append(time.perf_counter() - t)
            return time.perf_counter() - start

        def pytorch():
            with torch.inference_mode():
                tv(tx)

        for _ in range(3):
            session.run(None, {name: x}), ours(False), pytorch()
        for _ in range(repeats):
            time.sleep(pause_ms / 1e3)
            t = time.perf_counter()
            session.run(None, {name: x})
            whole["onnxruntime"].append(time.perf_counter() - t)
            time.sleep(pause_ms / 1e3)
            whole["tinymbv2"].append(ours(True))
            time.sleep(pause_ms / 1e3)
            pytorch()
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            nodes[e["name"][:-len("_kernel_time")]].append(e["dur"] / 1e3)
    theirs = collections.defaultdict(float)
    for node, times in nodes.items():
        theirs[layer_of(node)] += float(np.median(times[-repeats:]))
    theirs["features.0-1"] = theirs.pop("features.0", 0.0) + theirs.pop("features.1", 0.0)
    rows = [(step, 1e3 * float(np.median(steps[step])), theirs.pop(step, 0.0))
            for step in [*frozen.names, "pool", "classifier"]]
    rows += [(step, 0.0, ms) for step, ms in theirs.items()]
    return rows, {k: 1e3 * float(np.median(v)) for k, v in whole.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--pause-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    tinymbv2.backend.keep_freed_memory()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rows, whole = profile(args.batch, args.threads, args.repeats, args.size, args.pause_ms)
    print(f"MobileNetV2-1.0 float32 at {args.size} px, batch {args.batch}, {args.threads} "
          f"threads; medians of {args.repeats} raced calls (ms)")
    print(f"{'step':<14}{'tinymbv2':>10}{'onnxruntime':>13}{'difference':>12}")
    for step, ours, theirs in rows:
        print(f"{step:<14}{ours:>10.3f}{theirs:>13.3f}{ours - theirs:>+12.3f}")
    total_ours, total_theirs = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'sum':<14}{total_ours:>10.3f}{total_theirs:>13.3f}{total_ours - total_theirs:>+12.3f}")
    print(f"{'whole call':<14}{whole['tinymbv2']:>10.3f}{whole['onnxruntime']:>13.3f}")
    return rows, whole


if __name__ == "__main__":
    main()
