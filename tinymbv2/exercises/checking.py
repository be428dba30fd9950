"""How an exercise answers back: run the learner's function on hidden cases, say what is wrong.

A chapter's exercise gives a starter (a function whose body raises ``NotImplementedError``) and a
check, ``check_something(your_function)``. The check calls the function on cases the learner does
not see and compares each result with the library's (or PyTorch's). It returns an
[Outcome][tinymbv2.exercises.checking.Outcome] that a notebook shows as one line:

* ``correct (5 cases)`` when every case matches;
* ``not yet: <hint>`` naming the first case that fails and how (which shape, which value), or
  that the starter still raises ``NotImplementedError``, or what the function raised.

A check is written as a function that runs the cases and raises [Hint][tinymbv2.exercises.checking.Hint]
at the first wrong one; the [exercise][tinymbv2.exercises.checking.exercise] decorator turns that
into an ``Outcome``. The helpers [expect_close][tinymbv2.exercises.checking.expect_close] and
[expect_equal][tinymbv2.exercises.checking.expect_equal] phrase the usual hints.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


class Hint(Exception):
    """Raised by a check at the first case the learner's answer gets wrong; its text is the hint."""


@dataclass(frozen=True)
class Outcome:
    """The verdict of a check: ``passed`` and the one-line ``message`` a notebook shows.

    ``bool(outcome)`` is ``passed``, so tests can write ``assert check_x(solution)``.
    """

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:  # what Jupyter prints under the cell
        return self.message

    __str__ = __repr__


def exercise(check):
    """Turn ``check(answer, ...)``, which raises ``Hint`` at a wrong case and returns the number of
    cases it ran, into a function returning an ``Outcome`` (never raising for a wrong answer).

    Args:
        check: the checking function; its first argument is the learner's answer.

    Returns:
        The wrapped check.
    """

    @functools.wraps(check)
    def run(answer, *args, **kwargs) -> Outcome:
        try:
            cases = check(answer, *args, **kwargs)
        except Hint as hint:
            return Outcome(False, f"not yet: {hint}")
        except NotImplementedError:
            return Outcome(False, "not yet: the function still raises NotImplementedError; "
                                  "replace that line with your code")
        except Exception as exc:  # the learner's code failed: say what and where
            return Outcome(False, f"not yet: your code raised {type(exc).__name__}: {exc}")
        suffix = f" ({cases} cases)" if isinstance(cases, int) and cases > 1 else ""
        return Outcome(True, f"correct{suffix}")

    return run


def _as_array(value, what: str) -> np.ndarray:
    data = getattr(value, "data", value)  # a Tensor or a torch tensor's .data, or an array
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    try:
        return np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise Hint(f"{what}: expected numbers (an array or a Tensor), got {type(value).__name__}") from None


def expect_equal(got, expected, what: str) -> None:
    """Raise a ``Hint`` unless ``got == expected`` (ints, tuples, strings: exact values).

    Args:
        got: the learner's value.
        expected: the right value.
        what: names the case in the hint, e.g. ``"output size for h=7, k=3, s=2, p=1"``.

    Raises:
        Hint: ``"{what}: you gave {got!r}, expected {expected!r}"``.
    """
    if got != expected:
        raise Hint(f"{what}: you gave {got!r}, expected {expected!r}")


def expect_close(got, expected, what: str, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Raise a ``Hint`` unless the arrays have the same shape and agree within
    $|g - e| \\le \\text{atol} + \\text{rtol}\\,|e|$ everywhere.

    Args:
        got: the learner's array (or Tensor, or number).
        expected: the right array.
        what: names the case in the hint.
        rtol: relative tolerance.
        atol: absolute tolerance.

    Raises:
        Hint: naming the shapes when they differ, else the first index that is off with both
            values and the largest error.
    """
    g, e = _as_array(got, what), _as_array(expected, what)
    if g.shape != e.shape:
        raise Hint(f"{what}: shape {g.shape}, expected {e.shape}")
    bad = ~np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=False)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {index}" if g.ndim else ""
        raise Hint(f"{what}{where}: you have {g[index]:.6g}, expected {e[index]:.6g} "
                   f"(largest error {np.nanmax(np.abs(g - e)):.2g}, {int(bad.sum())} of {g.size} values off)")
