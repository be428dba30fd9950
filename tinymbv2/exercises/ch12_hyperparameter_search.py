"""Checks for the exercises of chapter 12. Hyper-parameter search: grid vs random.

* ``check_log_uniform``: drawing a scale (a learning rate) log-uniformly from a given generator;
* ``check_best_trial``: choosing the winner of a search on the validation split only;
* ``check_trials_needed``: how many random trials make landing in the top fraction likely;
* ``check_share_explained``: how much of the accuracy's variance a hyper-parameter explains.
"""
from __future__ import annotations

import math

import numpy as np

from .checking import Hint, exercise, expect_equal

__all__ = ["check_log_uniform", "check_best_trial", "check_trials_needed", "check_share_explained"]


@exercise
def check_log_uniform(log_uniform) -> int:
    """``log_uniform(lo, hi, n, rng)`` must return ``n`` floats whose logarithm is uniform on
    ``[log lo, log hi]``, drawn from ``rng`` (a ``numpy.random.Generator``).

    Checked on three ranges with 20,000 draws each: the shape ``(n,)``; every value inside
    ``[lo, hi]``; the mean and standard deviation of ``log10`` of the draws (the midpoint and
    the width over sqrt(12), within six standard errors); that the same seed gives the same
    draws and another seed other draws. Hints name the usual slips: the logarithms returned
    instead of the values, a uniform draw on ``[lo, hi]``, the global ``np.random`` used
    instead of ``rng``.

    Args:
        log_uniform: your function, ``log_uniform(lo, hi, n, rng)`` -> an array of
            ``n`` floats.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    n = 20_000
    for lo, hi in ((1e-4, 1.0), (1e-6, 1e-2), (0.5, 2.0)):
        case = f"log_uniform({lo:g}, {hi:g}, n={n})"
        x = np.asarray(log_uniform(lo, hi, n, np.random.default_rng(3)), dtype=np.float64)
        expect_equal(x.shape, (n,), f"{case}: the shape")
        a, b = math.log10(lo), math.log10(hi)
        if not ((x >= lo) & (x <= hi)).all():
            for base, name in ((10.0, "log10"), (math.e, "ln")):
                la, lb = math.log(lo, base), math.log(hi, base)
                if ((x >= la - 1e-9) & (x <= lb + 1e-9)).all():
                    raise Hint(f"{case}: every value lies in [{name}(lo), {name}(hi)] = "
                               f"[{la:.3g}, {lb:.3g}]: you returned the logarithms; raise "
                               f"{'10' if base == 10 else 'e'} to them")
            bad = x[(x < lo) | (x > hi)][0]
            raise Hint(f"{case}: the value {bad:.4g} is outside [{lo:g}, {hi:g}]")
        logs = np.log10(x)
        mid, std = (a + b) / 2, (b - a) / math.sqrt(12)
        if abs(logs.mean() - mid) > 6 * std / math.sqrt(n):
            uniform = abs(np.median(x) - (lo + hi) / 2) < 0.05 * (hi - lo)
            raise Hint(f"{case}: the mean of log10(draws) is {logs.mean():.3f}, expected "
                       f"{mid:.3f} (the midpoint of [{a:g}, {b:g}])"
                       + ("; your median is near (lo + hi) / 2, as a uniform draw on [lo, hi] "
                          "gives: draw the exponent uniformly instead" if uniform else ""))
        if abs(logs.std() - std) > 0.05 * std:
            raise Hint(f"{case}: the standard deviation of log10(draws) is {logs.std():.3f}, "
                       f"expected {std:.3f} (the width of [{a:g}, {b:g}] over sqrt(12))")
    same = [np.asarray(log_uniform(1e-4, 1.0, 5, np.random.default_rng(11))) for _ in range(2)]
    if not np.array_equal(same[0], same[1]):
        raise Hint("two calls with np.random.default_rng(11) gave different draws: draw from "
                   "the rng you are given (rng.uniform), so that a seed reproduces the search")
    other = np.asarray(log_uniform(1e-4, 1.0, 5, np.random.default_rng(12)))
    if np.array_equal(same[0], other):
        raise Hint("seeds 11 and 12 gave the same draws: draw from the rng you are given")
    return 5


def _rows(val, test):
    return [{"trial": i + 1, "lr": 10.0 ** -(i + 1), "val_acc": v, "test_acc": t}
            for i, (v, t) in enumerate(zip(val, test))]


@exercise
def check_best_trial(best_trial) -> int:
    """``best_trial(rows)`` must return the row (a dict) with the highest ``val_acc``, skipping
    trials that diverged (``val_acc`` None), keeping the earlier trial on a tie, and return
    None when every trial diverged.

    The cases: a search whose best test accuracy is another trial than its best validation
    accuracy (choosing on the test split gets its own hint); a diverged trial first and in the
    middle; a tie; a single trial; every trial diverged.

    Args:
        best_trial: your function, ``best_trial(rows)`` -> the chosen row (a dict), or
            None.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    cases = [
        ("test and validation disagree", _rows([0.80, 0.91, 0.88], [0.83, 0.86, 0.93]), 1),
        ("the first trial diverged", _rows([None, 0.62, 0.95, 0.40], [None, 0.6, 0.9, 0.5]), 2),
        ("a trial in the middle diverged", _rows([0.70, None, 0.75], [0.71, None, 0.72]), 2),
        ("two trials tie", _rows([0.85, 0.90, 0.90], [0.93, 0.88, 0.86]), 1),
        ("a single trial", _rows([0.50], [0.52]), 0),
    ]
    for name, rows, want in cases:
        try:
            got = best_trial([dict(r) for r in rows])
        except TypeError as exc:
            if any(r["val_acc"] is None for r in rows):
                raise Hint(f"{name}: your code raised TypeError ({exc}): a diverged trial has "
                           f"val_acc None; leave it out before comparing") from None
            raise
        if got is None or not isinstance(got, dict):
            raise Hint(f"{name}: expected the best row (a dict), got {got!r}")
        if got.get("trial") == rows[want]["trial"]:
            continue
        by_test = max((r for r in rows if r["test_acc"] is not None), key=lambda r: r["test_acc"])
        if got.get("trial") == by_test["trial"]:
            raise Hint(f"{name}: you chose trial {got['trial']}, the best on the test split; "
                       f"choose on the validation split (val_acc): a test score that picked the "
                       f"winner no longer estimates its accuracy on new data")
        if name == "two trials tie":
            raise Hint(f"{name}: trials 2 and 3 both have val_acc 0.90; keep the earlier one, "
                       f"trial 2, as max() does (you gave trial {got.get('trial')})")
        raise Hint(f"{name}: you chose trial {got.get('trial')} (val_acc {got.get('val_acc')}), "
                   f"expected trial {rows[want]['trial']} (val_acc {rows[want]['val_acc']})")
    got = best_trial(_rows([None, None], [None, None]))
    expect_equal(got, None, "every trial diverged: the best")
    return len(cases) + 1


@exercise
def check_trials_needed(trials_needed) -> int:
    """``trials_needed(top, confidence)`` must return the smallest ``n`` such that ``n``
    independent random trials land at least one in the best fraction ``top`` of the space
    with probability at least ``confidence``: ``1 - (1 - top) ** n >= confidence``.

    Checked on six (top, confidence) pairs, among them the classic 5% / 95% (59 trials). A
    wrong ``n`` gets the probability it actually gives, so too few (a floor instead of a
    ceiling) and one too many are told apart.

    Args:
        trials_needed: your function, ``trials_needed(top, confidence)`` -> an int.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    cases = [(0.05, 0.95), (0.01, 0.99), (0.1, 0.9), (0.2, 0.5), (0.02, 0.8), (0.3, 0.999)]
    for top, confidence in cases:
        expected = math.ceil(math.log(1 - confidence) / math.log(1 - top))
        got = trials_needed(top, confidence)
        case = f"trials_needed(top={top:g}, confidence={confidence:g})"
        if not isinstance(got, (int, np.integer)):
            if isinstance(got, float) and got.is_integer():
                got = int(got)
            else:
                raise Hint(f"{case}: expected a whole number of trials, got {got!r}")
        if got == expected:
            continue
        chance = 1 - (1 - top) ** got
        if chance < confidence:
            raise Hint(f"{case}: with {got} trials the chance is only {chance:.4f} < "
                       f"{confidence:g}; round the number of trials up, not down")
        raise Hint(f"{case}: {got - 1} trials already give {1 - (1 - top) ** (got - 1):.4f} "
                   f">= {confidence:g}; you gave {got}, expected {expected}")
    return len(cases)


def _share(values, accs, groups, *, sort=True, weighted=True):
    """The between-group share of the variance; ``sort``/``weighted`` False give two slips."""
    accs = np.asarray(accs, dtype=np.float64)
    ordered = accs[np.argsort(values, kind="stable")] if sort else accs
    parts = np.array_split(ordered, groups)
    if weighted:
        between = sum(len(p) * (p.mean() - accs.mean()) ** 2 for p in parts) / len(accs)
    else:
        between = np.mean([(p.mean() - accs.mean()) ** 2 for p in parts])
    return float(between / accs.var())


@exercise
def check_share_explained(share_explained) -> int:
    """``share_explained(values, accs, groups)`` must sort the trials by ``values``, cut them into
    ``groups`` consecutive groups of (nearly) equal size as ``np.array_split`` does, and return
    the share of the variance of ``accs`` that lies between the groups' means:
    $\\sum_g n_g (\\bar a_g - \\bar a)^2 / \\sum_i (a_i - \\bar a)^2$.

    The cases: four trials by hand; a hyper-parameter that decides the accuracy (share 1); ten
    trials in four groups of unequal sizes (3, 3, 2, 2); 48 trials whose accuracy is unrelated
    to the values. Hints name the usual slips: grouping in the given order instead of by the
    values, and averaging the groups without weighting each by its size.

    Args:
        share_explained: your function, ``share_explained(values, accs, groups)`` -> a float
            in [0, 1].

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(5)
    ten = rng.uniform(0, 1, 10)
    unrelated = rng.uniform(-4, 0, 48)
    cases = [
        ("four trials by hand", [3.0, 1.0, 2.0, 4.0], [0.9, 0.1, 0.5, 0.7], 2),
        ("the accuracy is a step of the value", list(range(8)), [0.1] * 4 + [0.9] * 4, 2),
        ("ten trials in four groups (3, 3, 2, 2)", list(ten), list(np.round(ten ** 2 + 0.1 * np.sin(9 * ten), 3)), 4),
        ("48 trials, accuracy unrelated to the value", list(unrelated), list(rng.uniform(0.1, 0.9, 48)), 4),
    ]
    for name, values, accs, groups in cases:
        expected = _share(values, accs, groups)
        got = share_explained(np.array(values), np.array(accs), groups)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise Hint(f"{name}: expected a number, got {got!r}") from None
        if abs(got - expected) <= 1e-9:
            continue
        if abs(got - _share(values, accs, groups, sort=False)) <= 1e-9:
            raise Hint(f"{name}: you gave {got:.4f}, the share for the trials grouped in the order "
                       f"given; sort them by the values first (np.argsort), expected {expected:.4f}")
        if abs(got - _share(values, accs, groups, weighted=False)) <= 1e-9:
            raise Hint(f"{name}: you gave {got:.4f}, expected {expected:.4f}: weight each group's "
                       f"squared deviation by its size (np.array_split's groups differ by one)")
        raise Hint(f"{name}: you gave {got:.4f}, expected {expected:.4f}")
    return len(cases)
