r"""Checks for the exercises of chapter 19. Data parallelism.

* ``check_global_stats``: SyncBatchNorm's mean and biased variance of the whole batch from the
  workers' counts, sums and sums of squares, $\mu = S / M$, $\sigma^2 = Q / M - \mu^2$;
* ``check_ring_time``: the ring all-reduce's seconds, $2 (P - 1)\,\alpha + 2 (P - 1) / P
  \cdot N / \beta$ (``tinymbv2.distributed.cost_model.ring_allreduce_seconds``);
* ``check_buckets``: DistributedDataParallel's buckets, reverse parameter order, closed before
  a gradient that would take them over the cap (``tinymbv2.distributed.assign_buckets``).
"""
from __future__ import annotations

import numpy as np

from ..distributed.buckets import assign_buckets
from ..distributed.cost_model import ring_allreduce_seconds
from .checking import Hint, exercise, expect_close

__all__ = ["check_global_stats", "check_ring_time", "check_buckets"]


def _shards(rng, counts, channels):
    """Per-worker activations (count_r, C), with shifted means so that the shards differ."""
    return [rng.standard_normal((n, channels)) * (1 + r) + 0.5 * r for r, n in enumerate(counts)]


@exercise
def check_global_stats(answer) -> int:
    """``global_stats(counts, sums, sumsqs)`` must give the mean and biased variance of every
    channel over the concatenation of the workers' values.

    Cases: 2 to 4 workers, equal and unequal counts, 1 to 5 channels. Hints for: the plain
    average of the workers' means (unequal counts), the average of the workers' variances, the
    unbiased variance ($M - 1$), and a result that is not a pair of $(C,)$ arrays.

    Args:
        answer: your function, ``global_stats(counts (P,), sums (P, C), sumsqs (P, C))`` ->
            ``(mean (C,), var (C,))``.

    Returns:
        The number of cases run.
    """
    rng = np.random.default_rng(19)
    cases = [((4, 4), 3), ((6, 2), 2), ((5, 5, 5), 1), ((3, 8, 1, 4), 5)]
    for counts, channels in cases:
        shards = _shards(rng, counts, channels)
        counts_a = np.array(counts, dtype=np.float64)
        sums = np.stack([s.sum(axis=0) for s in shards])
        sumsqs = np.stack([np.square(s).sum(axis=0) for s in shards])
        whole = np.concatenate(shards)
        mean, var = whole.mean(axis=0), whole.var(axis=0)
        case = f"global_stats with counts {list(counts)} and {channels} channel(s)"
        got = answer(counts_a.copy(), sums.copy(), sumsqs.copy())
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Hint(f"{case}: expected a pair (mean, var), got {type(got).__name__}")
        got_mean, got_var = (np.asarray(getattr(v, "data", v), dtype=np.float64) for v in got)
        means = sums / counts_a[:, None]
        if got_mean.shape == mean.shape and len(set(counts)) > 1 \
                and np.allclose(got_mean, means.mean(axis=0)):
            raise Hint(f"{case}: your mean is the plain average of the workers' means, which "
                       f"weighs a value of a small shard more; add up the sums and the counts "
                       f"first, then divide")
        expect_close(got_mean, mean, f"{case}: the mean", rtol=1e-9, atol=1e-12)
        if got_var.shape == var.shape:
            if np.allclose(got_var, np.mean([s.var(axis=0) for s in shards], axis=0)):
                raise Hint(f"{case}: the average of the workers' variances leaves out how far "
                           f"their means are from the global mean; use the sums of squares: "
                           f"Q / M - mean^2")
            m = counts_a.sum()
            if np.allclose(got_var, var * m / (m - 1)):
                raise Hint(f"{case}: that is the unbiased variance (divided by M - 1); BatchNorm "
                           f"normalises with the biased one, divided by M")
        expect_close(got_var, var, f"{case}: the variance", rtol=1e-9, atol=1e-12)
    return len(cases)


@exercise
def check_ring_time(answer) -> int:
    """``ring_time(nbytes, workers, bandwidth, latency)`` must give
    ``ring_allreduce_seconds``'s seconds.

    Cases: 1 worker (0 seconds), 2 to 512 workers, latency 0 and not. Hints for: $P$ steps
    instead of $P - 1$, one phase instead of two, the bandwidth term without its $(P - 1)/P$,
    and the latency left out.

    Args:
        answer: your function, ``ring_time(nbytes, workers, bandwidth, latency)`` -> seconds.

    Returns:
        The number of cases run.
    """
    cases = [(14e6, 8, 1.25e9, 25e-6), (14e6, 2, 1.25e9, 0.0), (1e6, 512, 12.5e9, 2e-6),
             (3e5, 1, 1.25e9, 25e-6), (7.5e7, 64, 12.5e9, 5e-6)]
    for nbytes, p, bw, lat in cases:
        case = f"ring_time({nbytes:g}, {p}, {bw:g}, {lat:g})"
        expected = ring_allreduce_seconds(nbytes, p, bw, lat)
        try:
            got = float(answer(nbytes, p, bw, lat))
        except (TypeError, ValueError):
            raise Hint(f"{case}: expected a number of seconds") from None
        if np.isclose(got, expected, rtol=1e-9, atol=1e-15):
            continue
        if p == 1:
            raise Hint(f"{case}: you gave {got:.6g}; one worker has nobody to send to: 0 seconds")
        wrong = {
            "2P latencies and bandwidth steps instead of 2(P - 1): a ring of P workers needs P - 1 "
            "steps per phase": 2 * p * lat + 2 * nbytes / bw,
            "that is one phase; the reduce-scatter is followed by an all-gather of as many steps "
            "(a factor 2)": (p - 1) * lat + (p - 1) / p * nbytes / bw,
            "each step sends one chunk of N/P bytes, so the bandwidth term is 2(P - 1)/P * N / "
            "bandwidth": 2 * (p - 1) * lat + 2 * (p - 1) * nbytes / bw,
            "the latency is paid once a step: add 2(P - 1) * latency": 2 * (p - 1) / p * nbytes / bw,
        }
        for hint, value in wrong.items():
            if lat > 0 and np.isclose(got, value, rtol=1e-9):
                raise Hint(f"{case}: you gave {got:.6g} s, expected {expected:.6g}: {hint}")
        raise Hint(f"{case}: you gave {got:.6g} s, expected {expected:.6g}")
    return len(cases)


@exercise
def check_buckets(answer) -> int:
    """``make_buckets(nbytes, cap)`` must give the members of ``assign_buckets``'s buckets.

    Cases: small tensors that fill buckets exactly and not, a tensor larger than the cap,
    one tensor. Hints for: forward order instead of reverse, and a bucket allowed past the cap
    (closed after the gradient that overflows it rather than before).

    Args:
        answer: your function, ``make_buckets(nbytes list, cap)`` -> list of lists of indices.

    Returns:
        The number of cases run.
    """
    cases = [([40, 40, 40, 40], 80), ([12, 400, 8, 8, 20, 4], 100), ([100], 10),
             ([8, 16, 24, 32, 40, 48], 64), ([4] * 7 + [300, 4], 16)]
    for nbytes, cap in cases:
        case = f"make_buckets({nbytes}, cap={cap})"
        arrays = [np.empty(n // 4, np.float32) for n in nbytes]
        expected = [list(b.members) for b in assign_buckets(arrays, cap)]
        got = answer(list(nbytes), cap)
        try:
            got = [[int(i) for i in bucket] for bucket in got]
        except TypeError:
            raise Hint(f"{case}: expected a list of lists of indices, got {got!r}") from None
        if got == expected:
            continue
        flat = [i for bucket in got for i in bucket]
        if flat == list(range(len(nbytes))):
            raise Hint(f"{case}: you gave {got}, expected {expected}: go from the last parameter "
                       f"to the first (the backward pass finishes the last layers first)")
        if sorted(flat) != list(range(len(nbytes))):
            raise Hint(f"{case}: you gave {got}: every parameter must be in exactly one bucket")
        over = [b for b in got if len(b) > 1 and sum(nbytes[i] for i in b) > cap]
        if over:
            raise Hint(f"{case}: bucket {over[0]} holds {sum(nbytes[i] for i in over[0])} bytes, "
                       f"over the cap of {cap}: start a new bucket before a gradient that would "
                       f"overflow the open one")
        raise Hint(f"{case}: you gave {got}, expected {expected}")
    return len(cases)
