"""Shared fixtures, and the table of worst errors against PyTorch printed at the end."""
from __future__ import annotations

import pytest

import tinymbv2
from errors import WORST

KERNEL_SETS = ("reference", "numba")


@pytest.fixture(params=KERNEL_SETS)
def kernel_set(request):
    """Run the test once with each CPU kernel set active."""
    with tinymbv2.use_kernels(request.param):
        yield request.param


def pytest_terminal_summary(terminalreporter):
    if not WORST:
        return
    terminalreporter.section("largest relative error against PyTorch")
    for (op, kset), err in sorted(WORST.items()):
        terminalreporter.write_line(f"{op:<40} {kset:<10} {err:.2e}")
