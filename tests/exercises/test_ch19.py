"""Chapter 19's checks pass the solutions and answer common wrong answers with their hints."""
import numpy as np

from tinymbv2.exercises import check_buckets, check_global_stats, check_ring_time


def _stats(counts, sums, sumsqs, kind="right"):
    m = np.sum(counts)
    if kind == "mean of means":
        mean = np.mean(sums / counts[:, None], axis=0)
        return mean, np.sum(sumsqs, axis=0) / m - mean ** 2
    mean = np.sum(sums, axis=0) / m
    if kind == "mean of variances":
        means = sums / counts[:, None]
        return mean, np.mean(sumsqs / counts[:, None] - means ** 2, axis=0)
    var = np.sum(sumsqs, axis=0) / m - mean ** 2
    if kind == "unbiased":
        return mean, var * m / (m - 1)
    if kind == "one":
        return mean
    return mean, var


def test_global_stats_hints():
    assert check_global_stats(_stats).passed
    assert "plain average of the workers' means" in check_global_stats(
        lambda *a: _stats(*a, kind="mean of means")).message
    assert "average of the workers' variances" in check_global_stats(
        lambda *a: _stats(*a, kind="mean of variances")).message
    assert "unbiased variance" in check_global_stats(lambda *a: _stats(*a, kind="unbiased")).message
    assert "expected a pair" in check_global_stats(lambda *a: _stats(*a, kind="one")).message


def _ring(n, p, bw, lat, kind="right"):
    if kind == "P steps":
        return 2 * p * lat + 2 * n / bw
    steps = (p - 1) if kind == "one phase" else 2 * (p - 1)
    per_step = n if kind == "whole N" else n / p
    return (0 if kind == "no latency" else steps * lat) + steps * per_step / bw


def test_ring_time_hints():
    assert check_ring_time(_ring).passed
    assert "P - 1 steps" in check_ring_time(lambda *a: _ring(*a, kind="P steps")).message
    assert "all-gather" in check_ring_time(lambda *a: _ring(*a, kind="one phase")).message
    assert "2(P - 1)/P * N" in check_ring_time(lambda *a: _ring(*a, kind="whole N")).message
    assert "add 2(P - 1) * latency" in check_ring_time(lambda *a: _ring(*a, kind="no latency")).message
    assert check_ring_time(lambda *a: 1.0).message.startswith("not yet: ")


def _buckets(nbytes, cap, kind="right"):
    order = range(len(nbytes)) if kind == "forward" else reversed(range(len(nbytes)))
    buckets, size = [], 0
    for i in order:
        if kind == "close after":
            if not buckets or size >= cap:
                buckets.append([])
                size = 0
        elif not buckets or size + nbytes[i] > cap:
            buckets.append([])
            size = 0
        buckets[-1].append(i)
        size += nbytes[i]
    return buckets


def test_buckets_hints():
    assert check_buckets(_buckets).passed
    assert "from the last parameter" in check_buckets(lambda *a: _buckets(*a, kind="forward")).message
    assert "over the cap" in check_buckets(lambda *a: _buckets(*a, kind="close after")).message
    assert "exactly one bucket" in check_buckets(lambda n, c: [[0]]).message
    assert "list of lists" in check_buckets(lambda n, c: 3).message
