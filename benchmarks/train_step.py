"""Training-step and inference speed of tinymbv2 against PyTorch, same machine, same run.

    python -m benchmarks.train_step               # the issue's sizes, 5 repetitions
    python -m benchmarks.train_step --quick       # smaller, for a first look
    TINYMBV2_PROFILE=1 python -m benchmarks.train_step   # + time per layer type

Builds MobileNetV2-1.0 (1000 classes) in tinymbv2 and in torchvision with the
same weights, and times (tinymbv2's model fused by ``tinymbv2.fuse``, as the trainer
runs it; ``--no-fuse`` times the plain model, layer by layer), alternating the contestants inside every repetition
(after warm-up): a training step (forward, cross-entropy, backward, RMSprop
step) and an eval-mode inference, at 224 px batch 8 and 32 px batch 64. Prints
medians, the ratio to PyTorch (below 1 is faster) and images/s; then a per-op
table with achieved GFLOP/s or GB/s against this machine's measured GEMM rate
and copy bandwidth (see benchmarks/ops.py); then peak memory of a training step.

The process first asks glibc to keep freed memory (``keep_freed_memory``; both
contestants run in this process, so both get it): with the default policy every
array above 32 MiB is page-faulted in afresh on each use, and whether smaller
ones are reused depends on what the process freed before, which made PyTorch's
times swing by 2-3x between otherwise identical runs. ``--default-malloc`` turns
it off.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch
import torchvision

import tinymbv2
from tinymbv2 import optim
from tinymbv2.autograd import Tensor
from tinymbv2.functional import cross_entropy
from tinymbv2.models import mobilenet_v2


def make_pair(seed=0):
    model = mobilenet_v2(width_mult=1.0, num_classes=1000, seed=seed)
    tv = torchvision.models.mobilenet_v2(weights=None)
    tv.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return model, tv


def ours_train_step(model, opt, x, y):
    def step():
        loss = cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def torch_train_step(model, opt, x, y):
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        loss = lossf(model(tx), ty)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def ours_infer(model, x):
    def run():
        with tinymbv2.no_grad():
            return model(Tensor(x)).numpy()
    return run


def torch_infer(model, x):
    tx = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            return model(tx).numpy()
    return run


def with_kernels(name, fn):
    def run():
        with tinymbv2.use_kernels(name):
            return fn()
    return run


def time_alternating(contestants: dict, repeats: int, warmup: int, clock=time.perf_counter,
                     pause: float = 0.0) -> dict:
    """Median seconds per contestant; each repetition runs every contestant once, in turn.

    ``clock``: wall time by default; ``time.process_time`` counts this process's CPU time
    only, so that on a machine shared with other processes the time slices they take are
    not charged to the contestant (with several threads it is their sum, not the wall time).
    ``pause``: seconds to sleep before each timed call, so that the thread pool of the
    contestant before has stopped spinning and does not take a core from the next one.
    """
    for fn in contestants.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, fn in contestants.items():
            if pause:
                time.sleep(pause)
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_case(res, batch, repeats, warmup, kernel_sets, reference_repeats, fuse=True):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, res, res)).astype(np.float32)
    y = rng.integers(0, 1000, batch).astype(np.int64)
    rows = []
    for mode in ("train step", "inference"):
        contestants = {}
        model, tv = make_pair()
        net = tinymbv2.fuse(model) if fuse else model  # the same parameters either way
        if mode == "train step":
            net.train(), tv.train()
            kw = dict(lr=1e-4, alpha=0.9, momentum=0.9, eps=1e-3)
            contestants["pytorch"] = torch_train_step(tv, torch.optim.RMSprop(tv.parameters(), **kw), x, y)
            opt = optim.RMSprop(model.parameters(), **kw)
            for k in kernel_sets:
                contestants[f"tinymbv2-{k}"] = with_kernels(k, ours_train_step(net, opt, x, y))
        else:
            net.eval(), tv.eval()
            contestants["pytorch"] = torch_infer(tv, x)
            for k in kernel_sets:
                contestants[f"tinymbv2-{k}"] = with_kernels(k, ours_infer(net, x))
        fast = {k: v for k, v in contestants.items() if k != "tinymbv2-reference"}
        medians = time_alternating(fast, repeats, warmup) if len(fast) > 1 else {}
        if "tinymbv2-reference" in contestants:
            slow = {"pytorch": contestants["pytorch"],
                    "tinymbv2-reference": contestants["tinymbv2-reference"]}
            ref = time_alternating(slow, reference_repeats, 1)
            medians["tinymbv2-reference"] = ref["tinymbv2-reference"]
            medians["pytorch (vs reference)"] = ref["pytorch"]
        base = medians.get("pytorch")
        for name, sec in medians.items():
            if name.startswith("pytorch ("):
                continue
            denom = medians.get("pytorch (vs reference)", base) if name == "tinymbv2-reference" else base
            rows.append((f"{res}px b{batch}", mode, name, 1e3 * sec, sec / denom, batch / sec))
    return rows


def print_table(rows):
    print(f"\n{'case':<12}{'what':<12}{'implementation':<22}{'median ms':>11}"
          f"{'x PyTorch':>11}{'images/s':>10}")
    for case, mode, name, ms, ratio, ips in rows:
        print(f"{case:<12}{mode:<12}{name:<22}{ms:>11.1f}{ratio:>11.2f}{ips:>10.1f}")


def profile_step(res, batch, fuse=True):
    from tinymbv2.profiler import profile

    model, _ = make_pair()
    opt = optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.9, momentum=0.9, eps=1e-3)
    net = tinymbv2.fuse(model) if fuse else model
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, res, res)).astype(np.float32)
    y = rng.integers(0, 1000, batch).astype(np.int64)
    step = ours_train_step(net, opt, x, y)
    for _ in range(3):  # compile, and let the heap grow to its working size
        step()
    with profile() as prof:
        step()
    print(f"\ntime per layer type, one training step at {res}px batch {batch} "
          f"({tinymbv2.active_kernel_set()} kernels):")
    print(prof.table())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--no-reference", action="store_true", help="skip the NumPy kernels")
    parser.add_argument("--no-ops", action="store_true", help="skip the per-op table")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-fuse", dest="fuse", action="store_false",
                        help="time the plain model, layer by layer (default: tinymbv2.fuse)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (see tinymbv2.backend.keep_freed_memory)")
    args = parser.parse_args(argv)
    kept = False if args.default_malloc else tinymbv2.backend.keep_freed_memory()

    torch.set_num_threads(args.threads)
    kernel_sets = ["numba"] + ([] if args.no_reference else ["reference"])
    cases = [(224, 8), (32, 64)] if not args.quick else [(112, 4), (32, 16)]
    print(f"tinymbv2 {tinymbv2.__version__}, torch {torch.__version__}, "
          f"{args.threads} threads, {os.cpu_count()} cores; medians of {args.repeats} after "
          f"{args.warmup} warm-up; malloc keeps freed memory: {'yes' if kept else 'no'} "
          f"(both contestants, same process); tinymbv2 model {'fused' if args.fuse else 'plain'}")
    # The numba kernels' cases all run before any reference-kernel case: the reference
    # kernels' big temporaries leave the heap in a state that made the numba inference
    # that followed them 5-10% slower (46-49 ms against 42-43 ms in a fresh process).
    rows = []
    for res, batch in cases:
        rows += bench_case(res, batch, args.repeats, args.warmup, ["numba"], 0, args.fuse)
    if "reference" in kernel_sets:
        for res, batch in cases:
            ref_rows = bench_case(res, batch, args.repeats, args.warmup, ["reference"],
                                  reference_repeats=max(3, min(args.repeats, 5)), fuse=args.fuse)
            for row in (r for r in ref_rows if r[2] == "tinymbv2-reference"):
                at = next(i for i, r in enumerate(rows) if r[:2] == row[:2]
                          and r[2] == "tinymbv2-numba")
                rows.insert(at + 1, row)
    print_table(rows)
    if not args.no_ops:
        from benchmarks.ops import print_op_table

        print_op_table(quick=args.quick)
    from benchmarks.peak_memory import print_memory_table

    print_memory_table(*cases[0], fuse=args.fuse)
    if os.environ.get("TINYMBV2_PROFILE") == "1":
        for res, batch in cases:
            profile_step(res, batch, args.fuse)


if __name__ == "__main__":
    main()
