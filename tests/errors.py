"""Relative-error checks that remember the worst error per (op, kernel set).

conftest.py prints the table at the end of the run, which is where the
figures in the project's notes come from.
"""
from __future__ import annotations

import numpy as np

import tinymbv2

WORST: dict[tuple[str, str], float] = {}


def rel_error(actual, expected) -> float:
    """max |a - e| / max(max |e|, 1e-300): one scale-free number per array."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def assert_close(op: str, actual, expected, tol: float, uses_kernels: bool = True) -> None:
    """Assert rel_error <= tol and record it under (op, active kernel set).

    Ops that never call a kernel set (elementwise NumPy) are recorded as "numpy".
    """
    err = rel_error(actual, expected)
    key = (op, tinymbv2.active_kernel_set() if uses_kernels else "numpy")
    WORST[key] = max(WORST.get(key, 0.0), err)
    assert err <= tol, f"{op} [{key[1]}]: relative error {err:.3e} > {tol:.0e}"
