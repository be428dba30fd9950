"""Chapter 14's checks answer common wrong answers with the hint meant for them."""
import statistics
import time

import numpy as np

from tinymbv2.exercises import check_fold_batchnorm, check_median_time, check_sliced_block


def _scale(gamma, var, eps):
    return gamma / np.sqrt(var + eps)


def test_fold_batchnorm_hints():
    def right(w, b, gamma, beta, mean, var, eps):
        s = _scale(gamma, var, eps)
        return w * s.reshape(-1, 1, 1, 1), s * ((0.0 if b is None else b) - mean) + beta
    assert check_fold_batchnorm(right).message == "correct (5 cases)"

    def no_eps(w, b, gamma, beta, mean, var, eps):
        return right(w, b, gamma, beta, mean, var, 0.0)
    assert "eps is left out of the square root" in check_fold_batchnorm(no_eps).message

    def by_variance(w, b, gamma, beta, mean, var, eps):
        s = gamma / (var + eps)
        return w * s.reshape(-1, 1, 1, 1), s * ((0.0 if b is None else b) - mean) + beta
    assert "divides by the variance" in check_fold_batchnorm(by_variance).message

    def input_axis(w, b, gamma, beta, mean, var, eps):
        s = _scale(gamma, var, eps)
        return w * s.reshape(1, -1, 1, 1), s * ((0.0 if b is None else b) - mean) + beta
    assert "you scaled the input channels (axis 1)" in check_fold_batchnorm(input_axis).message

    def no_mean(w, b, gamma, beta, mean, var, eps):
        s = _scale(gamma, var, eps)
        return w * s.reshape(-1, 1, 1, 1), s * (0.0 if b is None else b) + beta
    assert "folded bias: subtract the running mean" in check_fold_batchnorm(no_mean).message

    def bias_unscaled(w, b, gamma, beta, mean, var, eps):
        s = _scale(gamma, var, eps)
        return w * s.reshape(-1, 1, 1, 1), (0.0 if b is None else b) - s * mean + beta
    assert "the conv's own bias is scaled too" in check_fold_batchnorm(bias_unscaled).message

    def none_bias(w, b, gamma, beta, mean, var, eps):
        s = _scale(gamma, var, eps)
        return w * s.reshape(-1, 1, 1, 1), s * (b - mean) + beta
    assert "has bias None; count it as 0" in check_fold_batchnorm(none_bias).message

    def in_place(w, b, gamma, beta, mean, var, eps):
        s = _scale(gamma, var, eps)
        w *= s.reshape(-1, 1, 1, 1)
        return w, s * ((0.0 if b is None else b) - mean) + beta
    assert "changed its inputs in place" in check_fold_batchnorm(in_place).message


def _relu6(a):
    return np.clip(a, 0.0, 6.0)


def _pointwise(a, w):
    return np.einsum("oc,nchw->nohw", w, a)


def _depthwise3x3(a, w):
    h, wd = a.shape[2:]
    p = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(w[None, :, i, j, None, None] * p[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3))


def _middle(x, we, wd):
    return _relu6(_depthwise3x3(_relu6(_pointwise(x, we)), wd))


def test_sliced_block_hints():
    def right(x, we, wd, wp, m):
        out = 0.0
        for sl in np.array_split(np.arange(we.shape[0]), m):
            out = out + _pointwise(_middle(x, we[sl], wd[sl]), wp[:, sl])
        return out
    assert check_sliced_block(right).message == "correct (6 cases)"

    def drops_channels(x, we, wd, wp, m):
        k, out = we.shape[0] // m, 0.0
        for i in range(m):
            sl = slice(i * k, (i + 1) * k)
            out = out + _pointwise(_middle(x, we[sl], wd[sl]), wp[:, sl])
        return out
    assert "24 is not a multiple of 5" in check_sliced_block(drops_channels).message

    def concatenates(x, we, wd, wp, m):
        parts = [_middle(x, we[sl], wd[sl]) for sl in np.array_split(np.arange(we.shape[0]), m)]
        return _pointwise(np.concatenate(parts, axis=1), wp)
    message = check_sliced_block(concatenates).message
    assert "m=8 slices of 96 hidden channels: the peak of live arrays" in message
    assert "expand only the slice's channels" in message

    def whole(x, we, wd, wp, m):
        return _pointwise(_middle(x, we, wd), wp)
    assert "the peak of live arrays" in check_sliced_block(whole).message


def _times(fn, repeat, clock, warm_up=True):
    if warm_up:
        fn()
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append(clock() - start)
    return times


def test_median_time_hints():
    assert check_median_time(lambda fn, r, clock: statistics.median(_times(fn, r, clock))).passed
    mean = check_median_time(lambda fn, r, clock: statistics.mean(_times(fn, r, clock)))
    assert mean.message == ("not yet: 5 repeats, one of them interrupted: you returned the mean, "
                            "0.0684 s; return the median, 0.011 s: one slow run (a busy machine) "
                            "moves the mean, not the median")
    fastest = check_median_time(lambda fn, r, clock: min(_times(fn, r, clock)))
    assert "you returned the fastest run (the minimum)" in fastest.message
    total = check_median_time(lambda fn, r, clock: sum(_times(fn, r, clock)))
    assert "you returned the total of the runs" in total.message
    cold = check_median_time(lambda fn, r, clock: statistics.median(_times(fn, r, clock, warm_up=False)))
    assert "call it once first, untimed" in cold.message
    other_clock = check_median_time(lambda fn, r, clock: statistics.median(_times(fn, r, time.perf_counter)))
    assert "read the time from the clock you are given" in other_clock.message
