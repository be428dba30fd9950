"""How far data parallelism would carry MobileNetV2-1.0: the cost model on measured step times.

    python -m benchmarks.ddp_scaling                    # 224 px, batches 1 to 32, one thread
    python -m benchmarks.ddp_scaling --quick            # 64 px, batches 1, 4
    python -m benchmarks.ddp_scaling --latency-10g 25e-6 --latency-100g 2e-6

A worker here is one core (one Numba thread). The script times one worker's training step of
MobileNetV2-1.0 (1000 classes, fused as the trainer runs it; forward with the loss, then
backward with the optimizer step, each the median of ``--repeats``) at batch sizes 1 to 32,
interpolates the time per image between them
([interpolated_compute][tinymbv2.distributed.cost_model.interpolated_compute]), and feeds
that and the gradient's bytes (4 a parameter) to [the cost model][tinymbv2.distributed.cost_model]:

* weak scaling, each worker's batch fixed (``--batch``, 32): step time, all-reduce time,
  images/s and efficiency at 8, 64 and 512 workers on 10 and 100 Gbit/s links, with the
  all-reduce hidden behind the backward pass and without;
* strong scaling, the global batch fixed (``--global-batch``, 1024): the same, and the number
  of workers past which a step gets no faster.

The latencies a message are assumptions, not measurements (this machine has no network):
25 us for 10 Gbit/s Ethernet through TCP, 2 us for 100 Gbit/s InfiniBand-class links by
default. ``--json`` writes the measured step times and the tables.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numba
import numpy as np

import tinymbv2
from tinymbv2 import optim
from tinymbv2.autograd import Tensor
from tinymbv2.distributed.cost_model import (GBIT, StepTime, best_workers, interpolated_compute,
                                             scaling)
from tinymbv2.functional import cross_entropy
from tinymbv2.models import mobilenet_v2

WORKERS = (8, 64, 512)


def measure_step(batch: int, size: int, repeats: int, warmup: int = 2) -> StepTime:
    """One worker's medians: forward with the loss, backward with the SGD step."""
    model = mobilenet_v2(width_mult=1.0, num_classes=1000, seed=0)
    net = tinymbv2.fuse(model)
    net.train()
    opt = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 1000, batch)
    forward, backward = [], []
    for k in range(warmup + repeats):
        start = time.perf_counter()
        loss = cross_entropy(net(Tensor(x)), y)
        middle = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        end = time.perf_counter()
        if k >= warmup:
            forward.append(middle - start)
            backward.append(end - middle)
    return StepTime(statistics.median(forward), statistics.median(backward))


def gradient_bytes() -> int:
    """MobileNetV2-1.0's float32 gradient: 4 bytes a parameter."""
    model = mobilenet_v2(width_mult=1.0, num_classes=1000, seed=0)
    return 4 * sum(p.size for p in model.parameters())


def table(rows) -> str:
    lines = [f"{'workers':>8}{'batch/worker':>13}{'compute ms':>11}{'all-reduce ms':>14}"
             f"{'step ms':>9}{'images/s':>10}{'efficiency':>11}"]
    for r in rows:
        lines.append(f"{r['workers']:>8}{r['per_worker_batch']:>13}{1e3 * r['compute_s']:>11.1f}"
                     f"{1e3 * r['allreduce_s']:>14.2f}{1e3 * r['step_s']:>9.1f}"
                     f"{r['images_per_s']:>10.1f}{r['efficiency']:>11.1%}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=32, help="each worker's, weak scaling")
    parser.add_argument("--global-batch", type=int, default=1024, help="strong scaling")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-10g", type=float, default=25e-6)
    parser.add_argument("--latency-100g", type=float, default=2e-6)
    parser.add_argument("--quick", action="store_true", help="64 px, batches 1 and 4")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batches, args.repeats = 64, [1, 4], 3
    if not args.batches or min(args.batches) < 1:
        parser.error(f"expected batch sizes of 1 or more, got {args.batches}")
    numba.set_num_threads(1)    # a worker is one core
    tinymbv2.backend.keep_freed_memory()

    measured = {b: measure_step(b, args.size, args.repeats) for b in args.batches}
    grad = gradient_bytes()
    print(f"MobileNetV2-1.0 at {args.size} px, one worker = one thread; gradient "
          f"{grad / 1e6:.2f} MB; medians of {args.repeats}")
    for b, t in measured.items():
        print(f"  batch {b:>3}: forward {1e3 * t.forward:8.1f} ms, backward + step "
              f"{1e3 * t.backward:8.1f} ms")
    compute_of = interpolated_compute(measured)
    links = {"10 Gbit/s": (10 * GBIT, args.latency_10g), "100 Gbit/s": (100 * GBIT, args.latency_100g)}
    result = {"size": args.size, "gradient_bytes": grad,
              "measured": {b: [t.forward, t.backward] for b, t in measured.items()}, "tables": {}}
    for link, (bandwidth, latency) in links.items():
        for strong, batch in ((False, args.batch), (True, args.global_batch)):
            for overlap in (True, False):
                rows = scaling(compute_of, grad, WORKERS, bandwidth, latency, batch, strong, overlap)
                kind = f"{'strong, global batch' if strong else 'weak, batch/worker'} {batch}"
                name = f"{link} (latency {latency * 1e6:g} us), {kind}, " \
                       f"{'overlapped' if overlap else 'no overlap'}"
                print(f"\n{name}:\n{table(rows)}")
                result["tables"][name] = rows
        p = best_workers(compute_of, grad, bandwidth, latency, args.global_batch)
        print(f"\n{link}: strong scaling of a global batch of {args.global_batch} is fastest at "
              f"{p} workers")
        result["tables"][f"{link} best workers"] = p
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
