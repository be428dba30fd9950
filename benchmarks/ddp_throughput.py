"""Data parallelism on one machine: 2 ranks x 1 thread against 1 process x 2 threads.

    python -m benchmarks.ddp_throughput                   # MobileNetV2-1.0, 224 px, batch 16
    python -m benchmarks.ddp_throughput --quick           # width 0.35, 64 px, batch 8
    python -m benchmarks.ddp_throughput --no-sync-bn      # the ranks' BatchNorms their own
    python -m benchmarks.ddp_throughput --no-sync-bn --bucket-cap-mb 1   # 14 buckets

Both contestants train the same network (MobileNetV2, 1000 classes, fused as the trainer
runs it; SGD with momentum) on the same global batch of random images, each in a fresh
process, the two alternating ``--repeats`` times:

* **1 x 2**: one process, two Numba threads, the whole batch;
* **2 x 1**: ``mpirun -n 2``, one thread each, each rank half the batch, its BatchNorms
  ``SyncBatchNorm`` (``--no-sync-bn``: plain), ``DistributedDataParallel`` with 25 MiB
  buckets (``--bucket-cap-mb``), so the two ranks take the step the one process takes.

Each run times ``--steps`` steps after ``--warmup`` and reports the median. The 2 x 1 run
also reports, per step, on rank 0:

* **all-reduce exposed**: the end of the backward pass (DistributedDataParallel's callback:
  waiting for the buckets' ``Iallreduce``, then the averages copied into the gradients);
* **all-reduce alone**: a blocking ``Allreduce`` of the same buckets after the steps, timed
  by itself: what the gradients' all-reduce costs with nothing to hide behind;
* **SyncBatchNorm**: the seconds in its all-reduces, forward and backward (they wait for the
  other rank too, so load imbalance shows up here).

The overlap is ``1 - exposed / alone`` (at most 1: exposed time below zero is not counted).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class TimedComm:
    """A communicator that adds up the seconds its ``Allreduce`` calls take."""

    def __init__(self, comm):
        self.comm, self.seconds = comm, 0.0

    def __getattr__(self, name):
        return getattr(self.comm, name)

    def Allreduce(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.comm.Allreduce(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def worker(args) -> dict:
    """One contestant's run in this process: ``{"step_s": median, ...}`` (rank 0's)."""
    import numba

    import tinymbv2
    from tinymbv2 import optim
    from tinymbv2.autograd import Tensor
    from tinymbv2.functional import cross_entropy
    from tinymbv2.models import mobilenet_v2

    numba.set_num_threads(args.threads)
    tinymbv2.backend.keep_freed_memory()
    model = mobilenet_v2(width_mult=args.width, num_classes=1000, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    y = rng.integers(0, 1000, args.batch)
    rank, size, ddp, sync = 0, 1, None, None
    if args.worker == "ddp":
        from tinymbv2.distributed import DistributedDataParallel, convert_sync_batchnorm, get_world

        world = get_world()
        rank, size = world.rank, world.size
        if args.batch % size:
            raise ValueError(f"ddp_throughput: expected a batch that {size} ranks split evenly, "
                             f"got {args.batch}")
        shard = slice(rank * args.batch // size, (rank + 1) * args.batch // size)
        x, y = x[shard], y[shard]
        if args.sync_bn:
            sync = TimedComm(world.comm)
            model = convert_sync_batchnorm(model, comm=sync)
    net = tinymbv2.fuse(model)   # as the trainer runs it (a SyncBatchNorm is left unfused)
    net.train()
    exposed = []
    if args.worker == "ddp":
        net = ddp = DistributedDataParallel(net, bucket_cap_mb=args.bucket_cap_mb, comm=world.comm)
        finish = ddp._finish    # the end-of-backward callback: the wait, then the copies

        def timed_finish():
            start = time.perf_counter()
            try:
                finish()
            finally:
                exposed.append(time.perf_counter() - start)

        ddp._finish = timed_finish
    opt = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    steps = []
    for k in range(args.warmup + args.steps):
        if sync is not None and k == args.warmup:
            sync.seconds = 0.0
        if k == args.warmup:
            exposed.clear()
        start = time.perf_counter()
        loss = cross_entropy(net(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps.append(time.perf_counter() - start)
    result = {"step_s": statistics.median(steps[args.warmup:]), "ranks": size}
    if ddp is not None:
        comm, mpi = ddp.comm, __import__("mpi4py.MPI", fromlist=["MPI"])
        alone = []
        for _ in range(args.steps):
            comm.Barrier()
            start = time.perf_counter()
            for bucket in ddp.buckets:
                comm.Allreduce(mpi.IN_PLACE, bucket.flat, op=mpi.SUM)
            alone.append(time.perf_counter() - start)
        result.update(exposed_s=statistics.median(exposed), alone_s=statistics.median(alone),
                      buckets=len(ddp.buckets),
                      sync_bn_s=(sync.seconds / args.steps) if sync is not None else 0.0)
    if rank == 0 and args.json_out:
        Path(args.json_out).write_text(json.dumps(result))
    return result


def run_contestant(kind: str, args) -> dict:
    """One fresh run of ``kind`` (``"plain"`` or ``"ddp"``), its rank 0's result."""
    from tinymbv2.distributed.launch import mpirun_command, mpirun_env

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        argv = [sys.executable, "-m", "benchmarks.ddp_throughput", "--worker", kind,
                "--json-out", str(out), "--width", str(args.width), "--size", str(args.size),
                "--batch", str(args.batch), "--steps", str(args.steps), "--warmup",
                str(args.warmup), "--bucket-cap-mb", str(args.bucket_cap_mb)]
        if not args.sync_bn:
            argv.append("--no-sync-bn")
        if kind == "ddp":
            command, env = mpirun_command(2, argv + ["--threads", "1"]), mpirun_env(threads=1)
        else:
            command, env = argv + ["--threads", "2"], mpirun_env(threads=2)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=args.timeout)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"ddp_throughput: the {kind} run failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return json.loads(out.read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16, help="the global batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-sync-bn", dest="sync_bn", action="store_false")
    parser.add_argument("--bucket-cap-mb", type=float, default=25.0)
    parser.add_argument("--quick", action="store_true", help="width 0.35, 64 px, batch 8")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", choices=("plain", "ddp"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.size, args.batch, args.steps, args.repeats = 0.35, 64, 8, 3, 1
    if args.worker:
        return worker(args)
    if args.batch % 2 or args.steps < 1 or args.repeats < 1:
        parser.error(f"expected an even --batch, --steps >= 1 and --repeats >= 1, got "
                     f"{args.batch}, {args.steps}, {args.repeats}")
    runs = {"1 x 2": [], "2 x 1": []}
    for _ in range(args.repeats):   # alternating, each run in fresh processes
        runs["1 x 2"].append(run_contestant("plain", args))
        runs["2 x 1"].append(run_contestant("ddp", args))
    plain = statistics.median(r["step_s"] for r in runs["1 x 2"])
    ddp = statistics.median(r["step_s"] for r in runs["2 x 1"])
    exposed = statistics.median(r["exposed_s"] for r in runs["2 x 1"])
    alone = statistics.median(r["alone_s"] for r in runs["2 x 1"])
    sync_bn = statistics.median(r["sync_bn_s"] for r in runs["2 x 1"])
    overlap = max(0.0, 1.0 - exposed / alone) if alone > 0 else 0.0
    print(f"MobileNetV2-{args.width} at {args.size} px, global batch {args.batch}, "
          f"{'SyncBatchNorm' if args.sync_bn else 'plain BatchNorm'}, {args.bucket_cap_mb:g} MiB "
          f"buckets; medians of {args.repeats} "
          f"runs of {args.steps} steps after {args.warmup}")
    print(f"1 process x 2 threads {1e3 * plain:9.1f} ms a step {args.batch / plain:8.1f} images/s")
    print(f"2 ranks x 1 thread    {1e3 * ddp:9.1f} ms a step {args.batch / ddp:8.1f} images/s "
          f"({plain / ddp:.2f}x the throughput)")
    print(f"  gradients' all-reduce: {runs['2 x 1'][0]['buckets']} buckets, {1e3 * alone:.2f} ms "
          f"alone, {1e3 * exposed:.2f} ms exposed at the end of the backward pass "
          f"(overlap {overlap:.0%})")
    print(f"  SyncBatchNorm's all-reduces: {1e3 * sync_bn:.2f} ms a step")
    result = {"plain_step_s": plain, "ddp_step_s": ddp, "exposed_s": exposed, "alone_s": alone,
              "overlap": overlap, "sync_bn_s": sync_bn, "runs": runs}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
