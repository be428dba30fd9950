r"""What data parallelism costs: the ring all-reduce and the step time it gives, as formulas.

**The ring all-reduce** (Patarasuk and Yuan, 2009; the algorithm of Horovod, NCCL and Open
MPI for large messages). $p$ workers in a ring each hold $N$ bytes of gradient, cut into $p$
chunks. In $p - 1$ steps of *reduce-scatter* each worker sends one chunk to its right
neighbour and adds the chunk it gets from its left one: after them, each worker holds the sum
of one chunk. In $p - 1$ steps of *all-gather* the summed chunks go round the ring. Each step
sends $N / p$ bytes on every link at once, so with a link of $\beta$ bytes a second and a
latency of $\alpha$ seconds a message,

$$T_{\text{all-reduce}}(p) = 2 (p - 1)\,\alpha + \frac{2 (p - 1)}{p} \frac{N}{\beta}.$$

The bandwidth term tends to $2 N / \beta$, whatever $p$: adding workers does not make the
all-reduce slower, only its $2 (p - 1)$ latencies grow with $p$.

**The step.** A worker computes its forward pass ($T_f$) and its backward pass ($T_b$) on its
$b$ images, and the all-reduce of each bucket starts as soon as the backward pass has filled
it (``DistributedDataParallel``). Two bounds of the step time, with $T_c = T_f + T_b$:

* no overlap (every all-reduce after the backward pass): $T_c + T_{\text{all-reduce}}$;
* full overlap (the all-reduce hidden behind the backward pass, as far as it is as long):
  $T_c + \max(0,\ T_{\text{all-reduce}} - T_b)$.

**Scaling.** *Weak* scaling keeps each worker's batch $b$: $p$ workers take $p b$ images a
step, the throughput is $p b / T_{\text{step}}$ and the efficiency $T_{\text{step}}(1) /
T_{\text{step}}(p)$. *Strong* scaling keeps the global batch $B$: each worker gets $B / p$
images, its compute shrinks and the all-reduce does not, so past some $p$ more workers make
each step no faster: that is where it stops scaling
([best_workers][tinymbv2.distributed.cost_model.best_workers]).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GBIT = 1e9 / 8  # bytes a second in one Gbit/s


def ring_allreduce_seconds(nbytes: float, workers: int, bandwidth: float, latency: float) -> float:
    r"""$2 (p - 1) \alpha + 2 (p - 1) / p \cdot N / \beta$: one ring all-reduce of ``nbytes``.

    Args:
        nbytes: $N$, the bytes each worker holds (the gradient: 4 bytes a float32 parameter).
        workers: $p$ (1: no communication, 0 seconds).
        bandwidth: $\beta$, bytes a second on each link.
        latency: $\alpha$, seconds a message.

    Returns:
        Seconds.

    Raises:
        ValueError: ``workers < 1``, a negative size or latency, or a bandwidth not above 0.
    """
    if workers < 1 or nbytes < 0 or latency < 0 or bandwidth <= 0:
        raise ValueError(f"ring_allreduce_seconds: expected workers >= 1, nbytes >= 0, "
                         f"bandwidth > 0 and latency >= 0, got {workers}, {nbytes}, {bandwidth}, "
                         f"{latency}")
    steps = 2 * (workers - 1)
    return steps * latency + steps / workers * nbytes / bandwidth


def bytes_sent_per_worker(nbytes: float, workers: int) -> float:
    """$2 (p - 1) / p \\cdot N$: what each worker sends (and receives) in one all-reduce.

    Args:
        nbytes: $N$.
        workers: $p$.

    Returns:
        Bytes.
    """
    return 2 * (workers - 1) / workers * nbytes


@dataclass(frozen=True)
class StepTime:
    """A worker's compute for one step: ``forward`` and ``backward`` seconds (measured)."""

    forward: float
    backward: float

    @property
    def compute(self) -> float:
        """$T_c = T_f + T_b$."""
        return self.forward + self.backward


def step_seconds(compute: StepTime, allreduce: float, overlap: bool) -> float:
    r"""One data-parallel step: $T_c + T_{ar}$ (no overlap) or $T_c + \max(0, T_{ar} - T_b)$.

    Args:
        compute: The worker's forward and backward seconds.
        allreduce: The all-reduce's seconds.
        overlap: Whether the all-reduce runs behind the backward pass.

    Returns:
        Seconds.
    """
    hidden = compute.backward if overlap else 0.0
    return compute.compute + max(0.0, allreduce - hidden)


def scaling(compute_of, grad_bytes: float, workers, bandwidth: float, latency: float,
            batch: int, strong: bool, overlap: bool = True) -> list[dict]:
    """The expected step time, throughput and efficiency at each number of workers.

    Args:
        compute_of: ``compute_of(b) -> StepTime``: a worker's measured compute on ``b`` images.
        grad_bytes: $N$.
        workers: The $p$ to model (1 first gives the baseline; it is added when missing).
        bandwidth: $\\beta$, bytes a second.
        latency: $\\alpha$, seconds a message.
        batch: Each worker's $b$ (weak scaling) or the global $B$ (strong: each worker
            ``B // p``; a $p$ that leaves a worker no image is left out).
        strong: Strong scaling (the global batch fixed) rather than weak.
        overlap: The all-reduce hidden behind the backward pass as far as it can be.

    Returns:
        One ``{"workers", "per_worker_batch", "compute_s", "allreduce_s", "step_s",
        "images_per_s", "speedup", "efficiency"}`` dict per $p$ (speedup and efficiency
        against one worker on the same global work per step).
    """
    counts = sorted(set(workers) | {1})
    rows = []
    for p in counts:
        b = batch // p if strong else batch
        if b < 1:
            continue
        compute = compute_of(b)
        allreduce = ring_allreduce_seconds(grad_bytes, p, bandwidth, latency)
        step = step_seconds(compute, allreduce, overlap)
        rows.append({"workers": p, "per_worker_batch": b, "compute_s": compute.compute,
                     "allreduce_s": allreduce, "step_s": step, "images_per_s": p * b / step})
    base = rows[0]["images_per_s"]
    for row in rows:
        row["speedup"] = row["images_per_s"] / base
        row["efficiency"] = row["speedup"] / row["workers"]
    return [row for row in rows if row["workers"] in set(workers)]


def best_workers(compute_of, grad_bytes: float, bandwidth: float, latency: float,
                 global_batch: int, overlap: bool = True) -> int:
    """Strong scaling's end: the number of workers, among the powers of 2 up to the global
    batch, whose step is the fastest (more make each step no faster).

    Args:
        compute_of: ``compute_of(b) -> StepTime``.
        grad_bytes: $N$.
        bandwidth: $\\beta$, bytes a second.
        latency: $\\alpha$, seconds a message.
        global_batch: $B$.
        overlap: As in [scaling][tinymbv2.distributed.cost_model.scaling].

    Returns:
        $p$.
    """
    counts = [1 << k for k in range(global_batch.bit_length()) if (1 << k) <= global_batch]
    rows = scaling(compute_of, grad_bytes, counts, bandwidth, latency, global_batch, True, overlap)
    return min(rows, key=lambda r: (r["step_s"], r["workers"]))["workers"]


def linear_compute(measured: dict) -> callable:
    """``compute_of(b)`` from measured step times at a few batch sizes: forward and backward
    each a least-squares line $t = t_0 + b\\,t_1$ in $b$ (a fixed cost a step: Python, the
    optimizer, and a cost an image).

    Args:
        measured: ``{b: StepTime}``, at least two batch sizes.

    Returns:
        ``compute_of(b) -> StepTime``.

    Raises:
        ValueError: Fewer than two batch sizes, or times that fall as the batch grows (a
            noisy measurement: a model of it would make large batches free).
    """
    if len(measured) < 2:
        raise ValueError(f"linear_compute: expected step times at two batch sizes or more, got "
                         f"{sorted(measured)}")
    sizes = sorted(measured)

    def fit(values):
        n = len(sizes)
        mx, my = sum(sizes) / n, sum(values) / n
        slope = (sum((x - mx) * (y - my) for x, y in zip(sizes, values))
                 / sum((x - mx) ** 2 for x in sizes))
        return my - slope * mx, slope

    f0, f1 = fit([measured[b].forward for b in sizes])
    b0, b1 = fit([measured[b].backward for b in sizes])
    if f1 <= 0 or b1 <= 0:
        raise ValueError(f"linear_compute: expected step times that grow with the batch size, "
                         f"got {{b: (forward, backward)}} = "
                         f"{ {b: (measured[b].forward, measured[b].backward) for b in sizes} }")

    def compute_of(b):
        return StepTime(max(f0 + f1 * b, 0.0), max(b0 + b1 * b, 0.0))

    return compute_of


def interpolated_compute(measured: dict):
    """``compute_of(b)`` from measured step times: ``b`` times the measured forward and
    backward time *per image*, interpolated between the measured batch sizes (below the
    smallest, as at the smallest; above the largest, as at the largest).

    A worker's time per image is not constant: it falls while a step's fixed cost (Python,
    the optimizer) is shared by more images, and can rise again when the activations
    outgrow the processor's caches, so a line (``linear_compute``) can miss both ends.

    Args:
        measured: ``{b: StepTime}``, at least one batch size.

    Returns:
        ``compute_of(b) -> StepTime``.

    Raises:
        ValueError: No measurement.
    """
    if not measured:
        raise ValueError("interpolated_compute: expected step times at one batch size or more, "
                         "got none")
    sizes = sorted(measured)
    forward = [measured[b].forward / b for b in sizes]
    backward = [measured[b].backward / b for b in sizes]

    def compute_of(b):
        return StepTime(b * float(np.interp(b, sizes, forward)),
                        b * float(np.interp(b, sizes, backward)))

    return compute_of
