"""Bad input raises ValueError/TypeError naming the function, what it expected and what came."""
from __future__ import annotations

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F


def x4(shape=(2, 3, 8, 8), dtype=np.float32):
    return Tensor(np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize(
    "call,error,pattern",
    [
        (lambda: F.conv2d(x4(), x4((4, 5, 3, 3))), ValueError,
         r"conv2d: expected input with 5 channels.*got 3 channels"),
        (lambda: F.conv2d(x4((3, 8, 8)), x4((4, 3, 3, 3))), ValueError,
         r"conv2d: expected input of rank 4, got rank 3"),
        (lambda: F.conv2d(Tensor(np.zeros((2, 3, 8, 8), np.int64)), x4((4, 3, 3, 3))),
         TypeError, r"conv2d: expected input with a floating dtype, got int64"),
        (lambda: F.conv2d(x4(), x4((4, 3, 11, 11)), padding=1), ValueError,
         r"conv2d: kernel 11x11 is larger than the padded input 10x10"),
        (lambda: F.conv2d(x4(), x4((4, 3, 3, 3), np.float64)), TypeError,
         r"conv2d: expected one floating dtype.*input=float32, weight=float64"),
        (lambda: F.conv2d(x4(), x4((4, 1, 3, 3)), groups=2), ValueError,
         r"conv2d: expected groups=2 to divide both input channels \(3\)"),
        (lambda: F.conv2d(x4(), x4((4, 3, 3, 3)), stride=0), ValueError,
         r"conv2d: expected stride >= 1, got \(0, 0\)"),
        (lambda: F.conv2d(x4(), x4((4, 3, 3, 3)), padding="same"), TypeError,
         r"conv2d: expected padding as an int or a pair of ints, got 'same'"),
        (lambda: F.conv2d(np.zeros((2, 3, 8, 8)), x4((4, 3, 3, 3))), TypeError,
         r"conv2d: expected input to be a Tensor, got ndarray"),
        (lambda: F.batch_norm(x4(), np.zeros(4), np.ones(4)), ValueError,
         r"batch_norm: expected running_mean of shape \(3,\), got \(4,\)"),
        (lambda: F.batch_norm(x4((2, 3)), None, None), ValueError,
         r"batch_norm: expected input of rank 4, got rank 2"),
        (lambda: F.batch_norm(x4((1, 3, 1, 1)), None, None, training=True), ValueError,
         r"batch_norm: expected more than 1 value per channel"),
        (lambda: F.linear(x4((2, 5)), x4((4, 6))), ValueError,
         r"linear: expected input with last dimension 6.*got input \(2, 5\)"),
        (lambda: F.relu6(Tensor(np.arange(3))), TypeError,
         r"relu6: expected input with a floating dtype, got int64"),
        (lambda: F.dropout(x4(), p=1.5), ValueError,
         r"dropout: expected probability p in \[0, 1\], got 1.5"),
        (lambda: F.matmul(x4((2, 3)), x4((4, 2))), ValueError,
         r"matmul: inner dimensions differ"),
        (lambda: tinymbv2.use_kernels("fortran"), ValueError,
         r"use_kernels: expected 'reference' or 'numba', got 'fortran'"),
    ],
)
def test_bad_input_names_function_expected_and_got(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_use_kernels_works_as_call_and_as_context_manager():
    previous = tinymbv2.active_kernel_set()
    try:
        tinymbv2.use_kernels("reference")
        assert tinymbv2.active_kernel_set() == "reference"
        with tinymbv2.use_kernels("numba"):
            assert tinymbv2.active_kernel_set() == "numba"
        assert tinymbv2.active_kernel_set() == "reference"
    finally:
        tinymbv2.use_kernels(previous)


def test_numba_is_the_default_kernel_set():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import tinymbv2; print(tinymbv2.active_kernel_set())"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "numba"
