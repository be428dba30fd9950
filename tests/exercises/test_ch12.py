"""Chapter 12's checks answer common wrong answers with the hint meant for them."""
import math

import numpy as np

from tinymbv2.exercises import check_best_trial, check_log_uniform, check_share_explained, check_trials_needed


def test_log_uniform_hints():
    def right(lo, hi, n, rng):
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))

    assert check_log_uniform(right).message == "correct (5 cases)"
    logs = check_log_uniform(lambda lo, hi, n, rng: rng.uniform(np.log10(lo), np.log10(hi), n))
    assert "you returned the logarithms; raise 10" in logs.message
    uniform = check_log_uniform(lambda lo, hi, n, rng: rng.uniform(lo, hi, n))
    assert "mean of log10(draws)" in uniform.message and "uniform draw on [lo, hi]" in uniform.message
    global_rng = check_log_uniform(lambda lo, hi, n, rng: np.exp(np.random.uniform(np.log(lo), np.log(hi), n)))
    assert "draw from the rng you are given" in global_rng.message
    narrow = check_log_uniform(lambda lo, hi, n, rng: np.exp(rng.normal((np.log(lo) + np.log(hi)) / 2, 0.1, n)))
    assert "standard deviation of log10(draws)" in narrow.message


def test_best_trial_hints():
    def right(rows):
        done = [r for r in rows if r["val_acc"] is not None]
        return max(done, key=lambda r: r["val_acc"]) if done else None

    assert check_best_trial(right).message == "correct (6 cases)"
    by_test = check_best_trial(lambda rows: max(rows, key=lambda r: r["test_acc"] or 0))
    assert "the best on the test split; choose on the validation split" in by_test.message
    no_skip = check_best_trial(lambda rows: max(rows, key=lambda r: r["val_acc"]))
    assert "val_acc None; leave it out" in no_skip.message
    last_of_ties = check_best_trial(
        lambda rows: max(reversed([r for r in rows if r["val_acc"] is not None]), key=lambda r: r["val_acc"]))
    assert "keep the earlier one" in last_of_ties.message
    raises = check_best_trial(lambda rows: max((r for r in rows if r["val_acc"] is not None),
                                               key=lambda r: r["val_acc"]))
    assert raises.message.startswith("not yet: your code raised ValueError")


def test_trials_needed_hints():
    assert check_trials_needed(lambda t, c: math.ceil(math.log(1 - c) / math.log(1 - t))).passed
    floor = check_trials_needed(lambda t, c: math.floor(math.log(1 - c) / math.log(1 - t)))
    assert floor.message == ("not yet: trials_needed(top=0.05, confidence=0.95): with 58 trials the "
                             "chance is only 0.9490 < 0.95; round the number of trials up, not down")
    plus_one = check_trials_needed(lambda t, c: math.ceil(math.log(1 - c) / math.log(1 - t)) + 1)
    assert "59 trials already give 0.9515 >= 0.95; you gave 60, expected 59" in plus_one.message
    not_whole = check_trials_needed(lambda t, c: math.log(1 - c) / math.log(1 - t))
    assert "expected a whole number of trials" in not_whole.message


def test_share_explained_hints():
    def right(values, accs, groups):
        parts = np.array_split(accs[np.argsort(values)], groups)
        return sum(len(p) * (p.mean() - accs.mean()) ** 2 for p in parts) / ((accs - accs.mean()) ** 2).sum()

    assert check_share_explained(right).message == "correct (4 cases)"
    assert abs(right(np.array([3.0, 1.0, 2.0, 4.0]), np.array([0.9, 0.1, 0.5, 0.7]), 2) - 0.25 / 0.35) < 1e-12
    unsorted = check_share_explained(lambda v, a, g: right(np.arange(len(a)), a, g))
    assert unsorted.message == ("not yet: four trials by hand: you gave 0.0286, the share for the trials "
                                "grouped in the order given; sort them by the values first (np.argsort), "
                                "expected 0.7143")

    def unweighted(values, accs, groups):
        parts = np.array_split(accs[np.argsort(values)], groups)
        return np.mean([(p.mean() - accs.mean()) ** 2 for p in parts]) / accs.var()

    assert "ten trials in four groups (3, 3, 2, 2)" in check_share_explained(unweighted).message
    assert "weight each group's squared deviation by its size" in check_share_explained(unweighted).message
    sample_variance = check_share_explained(lambda v, a, g: right(v, a, g) * len(a) / (len(a) - 1))
    assert sample_variance.message.startswith("not yet: four trials by hand: you gave 0.9524, expected 0.7143")
    assert "expected a number" in check_share_explained(lambda v, a, g: "high").message
