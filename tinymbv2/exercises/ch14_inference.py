"""Checks for the exercises of chapter 14. Inference and deployment.

* ``check_fold_batchnorm``: a convolution and the eval-mode BatchNorm after it as one convolution;
* ``check_sliced_block``: the paper's memory-efficient block (section 5.1), with its memory measured;
* ``check_median_time``: timing a function properly (warm-up, repeats, median), on a fake clock.
"""
from __future__ import annotations

import tracemalloc

import numpy as np

from .checking import Hint, exercise, expect_close

__all__ = ["check_fold_batchnorm", "check_sliced_block", "check_median_time"]


def _bn_scale(gamma, var, eps):
    return gamma / np.sqrt(var + eps)


@exercise
def check_fold_batchnorm(fold_batchnorm) -> int:
    """``fold_batchnorm(weight, bias, gamma, beta, mean, var, eps)`` must return the folded
    ``(weight', bias')`` of a convolution (``weight`` of shape ``(Co, Ci/groups, kh, kw)``,
    ``bias`` of shape ``(Co,)`` or None) followed by an eval-mode BatchNorm:
    ``s = gamma / sqrt(var + eps)``, ``weight' = s[o] * weight[o]``,
    ``bias' = s * (bias - mean) + beta``.

    Cases (float64, to 1e-12): a dense 3x3 conv with a bias, one without (None), a depthwise
    3x3 conv ``(C, 1, 3, 3)``, a 1x1 conv with as many inputs as outputs, and a large ``eps``.
    Hints name the usual slips (eps left out, the variance where its square root belongs, the
    scale applied to the input channels, the running mean or ``beta`` forgotten, a None bias,
    the inputs changed in place).

    Args:
        fold_batchnorm: your function,
            ``fold_batchnorm(weight, bias, gamma, beta, mean, var, eps)`` ->
            ``(weight', bias')``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    g = np.random.default_rng(14)
    cases = [("1x1 conv, 6 -> 6 channels", (6, 6, 1, 1), True, 1e-5),
             ("3x3 conv with a bias", (6, 4, 3, 3), True, 1e-5),
             ("3x3 conv without a bias (None)", (5, 3, 3, 3), False, 1e-5),
             ("depthwise 3x3 conv", (8, 1, 3, 3), False, 1e-5),
             ("eps = 0.5", (4, 2, 3, 3), True, 0.5)]
    for name, shape, has_bias, eps in cases:
        co = shape[0]
        w = g.standard_normal(shape)
        b = g.standard_normal(co) if has_bias else None
        gamma, beta = g.uniform(0.5, 2, co), g.standard_normal(co)
        mean, var = g.standard_normal(co), g.uniform(0.05, 0.3, co)
        inputs = [a.copy() for a in (w, gamma, beta, mean, var)] + ([b.copy()] if has_bias else [])
        try:
            got = fold_batchnorm(w, b, gamma, beta, mean, var, eps)
        except TypeError as exc:
            if not has_bias:
                raise Hint(f"{name}: your code raised TypeError ({exc}): a conv without a bias "
                           f"has bias None; count it as 0") from None
            raise
        if not (isinstance(got, tuple) and len(got) == 2):
            raise Hint(f"{name}: expected a pair (folded weight, folded bias), got "
                       f"{type(got).__name__}")
        unchanged = [w, gamma, beta, mean, var] + ([b] if has_bias else [])
        if any(not np.array_equal(a, c) for a, c in zip(unchanged, inputs)):
            raise Hint(f"{name}: your function changed its inputs in place (the model's own "
                       f"conv and BatchNorm); compute new arrays instead")
        w_got, b_got = (np.asarray(getattr(a, "data", a), dtype=np.float64) for a in got)
        s = _bn_scale(gamma, var, eps)
        b0 = b if has_bias else 0.0
        w_want, b_want = w * s.reshape(-1, 1, 1, 1), s * (b0 - mean) + beta
        slips = {
            "eps is left out of the square root": gamma / np.sqrt(var),
            "the scale divides by the variance; it is gamma / sqrt(var + eps)": gamma / (var + eps),
        }
        for slip, wrong_s in slips.items():
            if w_got.shape == shape and np.allclose(w_got, w * wrong_s.reshape(-1, 1, 1, 1), rtol=1e-9):
                raise Hint(f"{name}: folded weight: {slip}")
        if (w_got.shape == shape and shape[1] == co
                and np.allclose(w_got, w * s.reshape(1, -1, 1, 1), rtol=1e-9)):
            raise Hint(f"{name}: folded weight: you scaled the input channels (axis 1); BatchNorm "
                       f"scales each output channel o, so scale weight[o] (axis 0)")
        expect_close(w_got, w_want, f"{name}: folded weight", rtol=1e-12, atol=1e-12)
        for slip, wrong_b in (("subtract the running mean: s * (bias - mean) + beta", s * b0 + beta),
                              ("add BatchNorm's shift beta", s * (b0 - mean)),
                              ("the conv's own bias is scaled too: s * (bias - mean)",
                               b0 - s * mean + beta)):
            if b_got.shape == (co,) and np.allclose(b_got, wrong_b, rtol=1e-9) and not np.allclose(
                    wrong_b, b_want, rtol=1e-9):
                raise Hint(f"{name}: folded bias: {slip}")
        expect_close(b_got, b_want, f"{name}: folded bias", rtol=1e-12, atol=1e-12)
    return len(cases)


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def _pointwise(x, w):
    return np.einsum("oc,nchw->nohw", w, x)


def _depthwise3x3(x, w):
    h, wd = x.shape[2:]
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out += w[None, :, i, j, None, None] * p[:, :, i:i + h, j:j + wd]
    return out


def _block(x, w_expand, w_dw, w_project):
    return _pointwise(_relu6(_depthwise3x3(_relu6(_pointwise(x, w_expand)), w_dw)), w_project)


def _peak_bytes(fn):
    """Peak bytes of NumPy arrays allocated while ``fn()`` runs (above what was live before)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        out = fn()
        _, top = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, top - start


@exercise
def check_sliced_block(sliced_block) -> int:
    """``sliced_block(x, w_expand, w_dw, w_project, m)`` must compute the block
    ``project(relu6(depthwise(relu6(expand(x)))))`` (the chapter's ``block``, no BatchNorm)
    with its hidden channels in ``m`` slices, ``sum_i B_i(N(A_i(x)))``, so that only one
    slice of the wide hidden tensor is alive at a time.

    Values: ``m`` = 1, 2, 3, 4 and 5 on 24 hidden channels (5 does not divide 24: the slices
    must still cover every channel), to 1e-10 in float64. Memory: measured with ``tracemalloc``,
    the peak of live arrays for ``m = 8`` on a 96-channel hidden tensor must stay under 1.5
    times the size of that whole tensor (the whole-tensor ``block`` peaks at over 4 times:
    the expanded tensor, its ReLU6, the padded copy, the filter's running sum and term;
    sliced, each of those is an eighth as large).

    Args:
        sliced_block: your function, ``sliced_block(x, w_expand, w_dw, w_project, m)``
            -> the block's output, ``(N, C_out, H, W)``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    g = np.random.default_rng(5)
    x = g.standard_normal((2, 4, 9, 9))
    w_expand, w_dw, w_project = g.standard_normal((24, 4)), g.standard_normal((24, 3, 3)) / 3, \
        g.standard_normal((5, 24))
    want = _block(x, w_expand, w_dw, w_project)
    for m in (1, 2, 3, 4, 5):
        got = sliced_block(x, w_expand, w_dw, w_project, m)
        case = f"m={m} slices of 24 hidden channels"
        got_a = np.asarray(getattr(got, "data", got), dtype=np.float64)
        if got_a.shape == want.shape and not np.allclose(got_a, want, rtol=1e-10, atol=1e-10) \
                and 24 % m:
            raise Hint(f"{case}: 24 is not a multiple of {m}, and the result is off: do your "
                       f"slices cover every hidden channel? (np.array_split splits unevenly)")
        expect_close(got_a, want, case, rtol=1e-10, atol=1e-10)
    big = g.standard_normal((2, 16, 32, 32))
    we, wd, wp = g.standard_normal((96, 16)), g.standard_normal((96, 3, 3)) / 3, g.standard_normal((16, 96))
    hidden = big.shape[0] * we.shape[0] * big.shape[2] * big.shape[3] * big.itemsize
    sliced, peak = _peak_bytes(lambda: sliced_block(big, we, wd, wp, 8))
    expect_close(np.asarray(getattr(sliced, "data", sliced), dtype=np.float64),
                 _block(big, we, wd, wp), "m=8 slices of 96 hidden channels", rtol=1e-10, atol=1e-10)
    if peak >= 1.5 * hidden:
        raise Hint(f"m=8 slices of 96 hidden channels: the peak of live arrays is "
                   f"{peak / 2**20:.2f} MiB, {peak / hidden:.1f} times the whole hidden tensor "
                   f"({hidden / 2**20:.2f} MiB), where an eighth of it at a time should "
                   f"stay under 1.5 times: expand only the slice's channels (rows of w_expand), "
                   f"and add each slice's projection to the output before the next slice, "
                   f"rather than keeping every slice")
    return 6


class _FakeClock:
    """A clock that only moves when the fake function under test says it ran."""

    def __init__(self):
        self.now, self.calls = 100.0, 0

    def __call__(self):
        return self.now


@exercise
def check_median_time(median_time) -> int:
    """``median_time(fn, repeat, clock)`` must call ``fn()`` once to warm up (untimed), then
    time ``repeat`` calls one by one with ``clock()`` and return the median of those times.

    The check passes a fake clock and a fake ``fn`` whose runs "take" set durations: a slow
    first call (a compile), then typical runs with one outlier (the machine was busy). With
    an odd and an even ``repeat``. Hints say which mistake the result shows: no warm-up, the
    mean, the minimum, the total, the wrong number of calls, time read from another clock.

    Args:
        median_time: your function, ``median_time(fn, repeat, clock)`` -> the median
            time, in the clock's unit.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    cases = [("5 repeats, one of them interrupted", [5.0, 0.010, 0.012, 0.011, 0.300, 0.009], 5),
             ("4 repeats", [2.0, 0.020, 0.026, 0.022, 0.500], 4),
             ("7 repeats", [1.0, 0.004, 0.006, 0.005, 0.090, 0.004, 0.007, 0.005], 7)]
    for name, durations, repeat in cases:
        clock = _FakeClock()

        def fn(clock=clock, durations=durations):
            if clock.calls < len(durations):
                clock.now += durations[clock.calls]
            clock.calls += 1

        got = float(median_time(fn, repeat, clock))
        timed = durations[1:]
        want = float(np.median(timed))
        if abs(got - want) <= 1e-12:
            if clock.calls != repeat + 1:
                raise Hint(f"{name}: fn was called {clock.calls} times; expected 1 warm-up "
                           f"call and {repeat} timed ones")
            continue
        if clock.calls == repeat:
            raise Hint(f"{name}: fn was called {repeat} times, all timed: call it once first, "
                       f"untimed (the first call compiles the kernels and says nothing about "
                       f"the speed)")
        if clock.calls != repeat + 1:
            raise Hint(f"{name}: fn was called {clock.calls} times; expected 1 warm-up call "
                       f"and {repeat} timed ones")
        wrong = {"the mean": np.mean(timed), "the fastest run (the minimum)": min(timed),
                 "the total of the runs": sum(timed)}
        for what, value in wrong.items():
            if abs(got - value) <= 1e-12:
                raise Hint(f"{name}: you returned {what}, {got:.4g} s; return the median, "
                           f"{want:.4g} s: one slow run (a busy machine) moves the mean, not "
                           f"the median")
        if abs(got) < 1e-6:
            raise Hint(f"{name}: you measured {got:.3g} s: read the time from the clock you "
                       f"are given, clock(), before and after each call")
        raise Hint(f"{name}: you returned {got:.6g} s, expected {want:.6g} s (the median of "
                   f"the {repeat} timed calls)")
    return len(cases)
