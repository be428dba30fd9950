"""A tinymbv2 training step in a process that imported PyTorch first, against one without it.

    python -m benchmarks.torch_first                         # 5 rounds, quiet and one busy core
    python -m benchmarks.torch_first --background none spin train --rounds 7
    python -m benchmarks.torch_first --steps 3 --warmup 1 --rounds 1 --batch 4   # a first look

Most of the course's chapters import PyTorch before tinymbv2. PyTorch's wheels load their own
GNU OpenMP runtime into the process's global symbol scope; Numba's OpenMP layer, loaded later,
would run its loops on that runtime, which by default spins between loops, and on a busy
machine a step then took several times as long (``tinymbv2/kernels/numba/pool.py``: what the
numba kernel set does about it). This script races, each in a fresh process, alternating
inside every round, the same training step (the chapters' MobileNetV2: width 0.35, 10
classes, one input channel, the small-input stem, fused, SGD with momentum, numba kernels) in
three kinds of process:

* ``no torch``: PyTorch never imported;
* ``torch first``: ``import torch`` before ``import tinymbv2``;
* ``torch first + op``: the same, and a PyTorch convolution and element-wise op (both run
  on PyTorch's OpenMP threads) before every tinymbv2 step, as in a chapter that times the
  two side by side; only the tinymbv2 step is timed.

It does so on the machine as it is (``none``) and beside background processes that it starts
and stops itself: ``spin`` (a Python loop holding one core), ``train`` (a second tinymbv2
training loop, no PyTorch). Each process reports the median of its timed steps; the table
gives, per process kind, the median over the rounds and its ratio to ``no torch`` in the
same background. Nothing is asserted: the numbers are for reading, next to the machine's
load, which the script prints before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# No tinymbv2 or torch at module level: the child process chooses the order of those imports.

ROOT = Path(__file__).resolve().parents[1]
PROCESS_KINDS = {"no torch": "none", "torch first": "torch", "torch first + op": "torch-op"}
BACKGROUNDS = ("none", "spin", "train")
SPIN = "while True:\n    pass"


# ---------------------------------------------------------------- the child: one process kind
def child(kind: str, steps: int, warmup: int, batch: int, resolution: int, width: float) -> dict:
    """Run ``warmup`` then ``steps`` training steps in this process, PyTorch imported first
    or not as ``kind`` says; return the step times (seconds) and how Numba's pool runs.
    ``steps`` = 0: train until killed (a background load)."""
    torch_op = None
    if kind in ("torch", "torch-op"):
        import torch  # first, before anything imports tinymbv2

        if kind == "torch-op":
            image = torch.randn(8, 16, 32, 32)
            weight = torch.randn(16, 16, 3, 3)

            def torch_op():
                torch.nn.functional.conv2d(image, weight, padding=1).relu_().add_(1.0).sum().item()
    elif kind != "none":
        raise ValueError(f"unknown process kind {kind!r}: expected one of {sorted(PROCESS_KINDS.values())}")

    import numba
    import numpy as np

    import tinymbv2
    from tinymbv2 import optim
    from tinymbv2.autograd import Tensor
    from tinymbv2.functional import cross_entropy
    from tinymbv2.kernels.numba import pool
    from tinymbv2.models import mobilenet_v2

    model = mobilenet_v2(width_mult=width, num_classes=10, in_channels=1, small_input=True, seed=0)
    net = tinymbv2.fuse(model)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, resolution, resolution)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)

    def step():
        loss = cross_entropy(net(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with tinymbv2.use_kernels("numba"):
        for _ in range(warmup):
            if torch_op:
                torch_op()
            step()
        times = []
        while steps == 0 or len(times) < steps:
            if torch_op:
                torch_op()
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return dict(kind=kind, times=times, layer=numba.threading_layer(), passive=pool.PASSIVE_POOL,
                threads=numba.get_num_threads())


# ---------------------------------------------------------------- the parent: the race
def _python(*args) -> list[str]:
    return [sys.executable, "-m", "benchmarks.torch_first", *args]


def _child_args(args, kind: str, steps: int) -> list[str]:
    return ["--child", kind, "--steps", str(steps), "--warmup", str(args.warmup),
            "--batch", str(args.batch), "--resolution", str(args.resolution), "--width", str(args.width)]


def _clean_env() -> dict:
    """The environment of every child: the caller's, less what would choose Numba's threading
    for it (the race is about what the library chooses)."""
    chosen = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")
    return {k: v for k, v in os.environ.items() if k not in chosen}


def start_background(kind: str, args) -> subprocess.Popen | None:
    """Start the background load ``kind`` ("none", "spin", "train"); the caller stops it."""
    if kind == "none":
        return None
    if kind == "spin":
        command = [sys.executable, "-c", SPIN]
    elif kind == "train":
        command = _python(*_child_args(args, "none", 0))
    else:
        raise ValueError(f"unknown background {kind!r}: expected one of {BACKGROUNDS}")
    return subprocess.Popen(command, cwd=ROOT, env=_clean_env(), stdout=subprocess.DEVNULL)


def run_child(args, kind: str) -> dict:
    done = subprocess.run(_python(*_child_args(args, kind, args.steps)), cwd=ROOT, env=_clean_env(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind!r} process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def race(args, background: str) -> dict:
    """{process kind: [child reports, one per round]}, the kinds alternating in every round,
    beside the background load ``background`` (started once a warm-up process has run, so
    that a ``train`` background does not compile kernels during the race)."""
    load = start_background(background, args)
    try:
        if load is not None:
            time.sleep(args.settle)
        reports = {name: [] for name in PROCESS_KINDS}
        for _ in range(args.rounds):
            for name, kind in PROCESS_KINDS.items():
                reports[name].append(run_child(args, kind))
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return reports


def summarise(reports: dict) -> list[tuple]:
    """Rows (process kind, median ms over rounds, its ratio to ``no torch``, each round's
    median ms, Numba's threading layer, whether its threads sleep when idle)."""
    per_round = {name: [1e3 * statistics.median(r["times"]) for r in rs] for name, rs in reports.items()}
    base = statistics.median(per_round["no torch"])
    rows = []
    for name, medians in per_round.items():
        mid = statistics.median(medians)
        last = reports[name][-1]
        rows.append((name, mid, mid / base, medians, last["layer"], last["passive"]))
    return rows


def print_table(background: str, rows: list[tuple]) -> None:
    print(f"\nbackground: {background}")
    print(f"{'process':<20}{'median ms':>11}{'x no torch':>12}  {'layer':<10}{'sleeps':<8}each round (ms)")
    for name, mid, ratio, medians, layer, passive in rows:
        rounds = " ".join(f"{m:.0f}" for m in medians)
        print(f"{name:<20}{mid:>11.1f}{ratio:>12.2f}  {layer:<10}{'yes' if passive else 'no':<8}{rounds}")


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # not on this platform
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="processes per kind and background")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, heap)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument("--background", nargs="+", choices=BACKGROUNDS, default=["none", "spin"])
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds a background load runs before the race (a training one compiles)")
    parser.add_argument("--child", choices=sorted(PROCESS_KINDS.values()), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("rounds", "steps", "warmup", "batch", "resolution"):
        low = 0 if name == "warmup" or (name == "steps" and args.child) else 1
        if getattr(args, name) < low:
            parser.error(f"--{name} must be at least {low}, got {getattr(args, name)}")

    if args.child:
        print(json.dumps(child(args.child, args.steps, args.warmup, args.batch, args.resolution,
                               args.width)))
        return None
    print(f"{os.cpu_count()} cores; MobileNetV2 width {args.width}, batch {args.batch} of 1 x "
          f"{args.resolution} x {args.resolution}, numba kernels; {args.rounds} rounds of one fresh "
          f"process per kind, alternating; each: {args.warmup} untimed steps, the median of "
          f"{args.steps}. Load average before: {load_average()}")
    tables = {}
    for background in args.background:
        tables[background] = summarise(race(args, background))
        print_table(background, tables[background])
    print(f"\nload average after: {load_average()}")
    return tables


if __name__ == "__main__":
    main()
