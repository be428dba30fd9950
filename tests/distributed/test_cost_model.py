"""The cost model: the ring all-reduce simulated chunk by chunk sums the workers' arrays in
2(p - 1) steps, each worker sending 2(p - 1)/p of the bytes, as the formula says; step times,
weak and strong scaling and where strong scaling ends, on numbers worked by hand."""
import numpy as np
import pytest

from tinymbv2.distributed.cost_model import (GBIT, StepTime, best_workers, bytes_sent_per_worker,
                                             interpolated_compute, linear_compute,
                                             ring_allreduce_seconds, scaling, step_seconds)


def simulate_ring(arrays):
    """Ring all-reduce of p equal-length arrays: (results, steps, bytes sent by each worker)."""
    p = len(arrays)
    chunks = [np.array_split(a.astype(np.float64), p) for a in arrays]
    sent, steps = np.zeros(p), 0
    for s in range(p - 1):                 # reduce-scatter: worker r sends chunk (r - s) % p
        outgoing = [(r, (r - s) % p, chunks[r][(r - s) % p].copy()) for r in range(p)]
        for r, c, data in outgoing:
            chunks[(r + 1) % p][c] += data
            sent[r] += data.nbytes
        steps += 1
    for s in range(p - 1):                 # all-gather: worker r passes its summed chunk on
        outgoing = [(r, (r + 1 - s) % p, chunks[r][(r + 1 - s) % p].copy()) for r in range(p)]
        for r, c, data in outgoing:
            chunks[(r + 1) % p][c] = data
            sent[r] += data.nbytes
        steps += 1
    return [np.concatenate(c) for c in chunks], steps, sent


@pytest.mark.parametrize("p", [2, 3, 4, 8])
def test_the_simulated_ring_sums_in_2p_minus_2_steps_sending_what_the_formula_says(p):
    rng = np.random.default_rng(p)
    arrays = [rng.standard_normal(8 * p) for _ in range(p)]
    results, steps, sent = simulate_ring(arrays)
    for r in results:
        np.testing.assert_allclose(r, np.sum(arrays, axis=0), rtol=1e-12)
    assert steps == 2 * (p - 1)
    np.testing.assert_allclose(sent, bytes_sent_per_worker(arrays[0].nbytes, p))
    # the time of those steps: one latency and N/p bytes a step
    n = arrays[0].nbytes
    assert ring_allreduce_seconds(n, p, 1e6, 1e-5) == pytest.approx(steps * (1e-5 + n / p / 1e6))


def test_allreduce_times_worked_by_hand():
    grad = 14e6                                         # 3.5M float32 parameters
    assert ring_allreduce_seconds(grad, 1, 10 * GBIT, 1e-5) == 0.0
    assert ring_allreduce_seconds(grad, 2, 10 * GBIT, 0.0) == pytest.approx(14e6 / 1.25e9)
    assert ring_allreduce_seconds(grad, 8, 10 * GBIT, 0.0) == pytest.approx(1.75 * 14e6 / 1.25e9)
    # the bandwidth term tends to 2N/beta; the latency term grows as 2(p - 1) alpha
    assert ring_allreduce_seconds(grad, 512, 100 * GBIT, 5e-5) == pytest.approx(
        1022 * 5e-5 + 1022 / 512 * 14e6 / 12.5e9)
    with pytest.raises(ValueError, match="expected workers >= 1"):
        ring_allreduce_seconds(grad, 0, GBIT, 0.0)


def test_step_time_with_and_without_overlap():
    compute = StepTime(forward=0.1, backward=0.2)
    assert step_seconds(compute, 0.05, overlap=False) == pytest.approx(0.35)
    assert step_seconds(compute, 0.05, overlap=True) == pytest.approx(0.3)    # hidden
    assert step_seconds(compute, 0.5, overlap=True) == pytest.approx(0.6)     # 0.3 exposed


def test_weak_scaling_keeps_the_batch_and_strong_scaling_splits_it():
    def compute_of(b):
        return StepTime(0.01 + 0.01 * b, 0.02 + 0.02 * b)

    weak = scaling(compute_of, 14e6, [1, 8], 10 * GBIT, 0.0, 32, strong=False, overlap=False)
    ar = 1.75 * 14e6 / 1.25e9
    assert [r["per_worker_batch"] for r in weak] == [32, 32]
    assert weak[1]["step_s"] == pytest.approx(0.99 + ar)
    assert weak[1]["efficiency"] == pytest.approx(0.99 / (0.99 + ar))
    strong = scaling(compute_of, 14e6, [2, 8, 64], 10 * GBIT, 0.0, 32, strong=True, overlap=False)
    assert [r["workers"] for r in strong] == [2, 8]            # 64 workers: no image each
    assert strong[1]["per_worker_batch"] == 4
    assert strong[1]["speedup"] == pytest.approx(0.99 / (0.15 + ar))


def test_strong_scaling_ends_where_the_allreduce_outweighs_the_compute_it_saves():
    def compute_of(b):
        return StepTime(0.0, 0.01 * b)                          # 10 ms an image, no fixed cost

    # B = 64, N/beta = 0.1 s, no latency: T(p) = 0.64/p + 2(p - 1)/p * 0.1: T(1) = 0.64,
    # T(2) = 0.42, T(4) = 0.31, T(8) = 0.255, ..., T(64) = 0.206875, still falling: the
    # bandwidth term alone never stops it (it tends to 0.2); a latency does
    assert best_workers(compute_of, 0.1, 1.0, 0.0, 64, overlap=False) == 64
    # alpha = 5 ms: T(p) += 2(p - 1) 5 ms: T(4) = 0.34, T(8) = 0.325, T(16) = 0.3775
    assert best_workers(compute_of, 0.1, 1.0, 5e-3, 64, overlap=False) == 8


def test_linear_compute_fits_forward_and_backward():
    measured = {2: StepTime(0.03, 0.05), 4: StepTime(0.05, 0.09), 8: StepTime(0.09, 0.17)}
    compute_of = linear_compute(measured)
    assert compute_of(16).forward == pytest.approx(0.17)
    assert compute_of(16).backward == pytest.approx(0.33)
    with pytest.raises(ValueError, match="two batch sizes or more"):
        linear_compute({2: StepTime(0.1, 0.1)})
    with pytest.raises(ValueError, match="grow with the batch size"):
        linear_compute({1: StepTime(0.02, 0.02), 2: StepTime(0.01, 0.03)})


def test_interpolated_compute_scales_the_time_per_image():
    measured = {1: StepTime(0.03, 0.05), 4: StepTime(0.06, 0.12)}   # per image 0.015, 0.03
    compute_of = interpolated_compute(measured)
    assert compute_of(1).forward == pytest.approx(0.03)
    assert compute_of(2).forward == pytest.approx(2 * (0.03 - 0.015 / 3))   # between 1 and 4
    assert compute_of(8).backward == pytest.approx(8 * 0.03)               # as at the largest
    assert compute_of(4).compute == pytest.approx(0.18)
    with pytest.raises(ValueError, match="one batch size or more"):
        interpolated_compute({})
