"""The numba set's inverted residual block for inference, in bands (kernels/numba/block.py).

``block.inverted_residual_eval`` computes a block band by band on the output planes that
``block.fused_planes`` names (at least ``FUSED_FROM`` pixels, not kept channels-last);
``NumbaKernels.inverted_residual_eval`` sends the other planes through the composition it
inherits, layer by layer. Checked here against PyTorch's separate layers in float64: bands
of any height, both ways on one block, any thread count, and the errors it names.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

from block_cases import CASES, block_case, torch_block
from errors import assert_close
from kernel_cases import channels_last_max
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import block

TOL64 = 1e-10
NUMBA = kernel_set("numba")


@pytest.mark.parametrize("band_bytes", [1, 3000, 20000])
@pytest.mark.parametrize("case", CASES)
def test_bands_of_any_height_give_the_same_block(monkeypatch, band_bytes, case):
    """Bands of 1 row up to the whole image (halo rows expanded twice): the same result."""
    *shape, stride, residual = case
    parts = block_case(*shape, stride, residual, seed=1)
    expected = torch_block(*parts, stride, residual)
    monkeypatch.setattr(block, "BAND_BYTES", band_bytes)
    with channels_last_max(0):  # these small planes would otherwise not run in NCHW bands
        assert block.fused_planes(parts[0], stride)
        y = block.inverted_residual_eval(*parts, stride, residual)
    assert_close("inverted_residual_eval", y, expected, TOL64)
    assert y.flags.c_contiguous


def test_the_fused_block_is_bit_identical_for_any_thread_count():
    x, expand, depthwise, project = block_case(4, 8, 40, 36, 6, 8, 1, True, seed=2)
    x, expand, depthwise, project = (
        x.astype(np.float32),
        *((p[0].astype(np.float32), tuple(np.float32(a) if isinstance(a, np.ndarray) else a
                                          for a in p[1])) for p in (expand, depthwise, project)),
    )
    assert block.fused_planes(x, 1)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append(NUMBA.inverted_residual_eval(x, expand, depthwise, project, 1, True))
    finally:
        numba.set_num_threads(before)
    again = NUMBA.inverted_residual_eval(x, expand, depthwise, project, 1, True)
    assert results[0].dtype == np.float32
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], again)


@pytest.mark.parametrize("ho,rows,groups,below,expected", [
    (28, 28, 1, 8, 14),   # one 28x28 image in one band: two bands, one per thread
    (56, 19, 1, 8, 14),   # three bands of 19 rows: four of 14
    (28, 28, 8, 8, 28),   # eight images: tasks enough, whole images
    (56, 19, 3, 8, 19),   # nine tasks: left as they are
    (28, 28, 1, 0, 28),   # switched off
    (1, 1, 1, 8, 1),      # a one-row image cannot be cut
])
def test_few_tasks_are_made_even(ho, rows, groups, below, expected):
    assert block.even_tasks(ho, rows, groups, below) == expected


def test_the_bands_batch_one_is_cut_into_change_no_bit(monkeypatch):
    """Cutting an image into more bands for the threads (``even_tasks``) moves only where
    the bands fall: every output is the same sum, to the bit."""
    parts = block_case(1, 8, 28, 28, 6, 8, 1, True, seed=4)
    assert block.fused_planes(parts[0], 1)
    results = []
    for below in (0, 8):
        monkeypatch.setattr(block, "EVEN_TASKS_BELOW", below)
        results.append(block.inverted_residual_eval(*parts, 1, True))
    assert np.array_equal(results[0], results[1])
    assert_close("inverted_residual_eval", results[1], torch_block(*parts, 1, True), TOL64)


@pytest.mark.parametrize("change,message", [
    (lambda p: (p[0], p[1], (p[2][0][:, :, :2], p[2][1]), p[3]),
     r"depthwise weight must have shape \(24, 1, 3, 3\), got \(24, 1, 2, 3\)"),
    (lambda p: (p[0], p[1], p[2], (p[3][0][:, :5], p[3][1])),
     r"project weight must have shape \(Co, 24, 1, 1\), got \(4, 5, 1, 1\)"),
    (lambda p: (p[0], (p[1][0][:, :3], p[1][1]), p[2], p[3]),
     r"expand weight must have shape \(24, 4, 1, 1\), got \(24, 3, 1, 1\)"),
    (lambda p: (p[0].astype(np.float32), *p[1:]),
     r"all arrays must share one dtype, got \{'x': dtype\('float32'\), 'expand': dtype\('float64'\)"),
])
def test_the_block_kernel_names_what_it_expected(change, message):
    parts = change(block_case(1, 4, 6, 6, 6, 4, 1, True))
    with pytest.raises((ValueError, TypeError), match=message):
        block.inverted_residual_eval(*parts, 1, True)


def test_the_block_kernel_rejects_what_it_cannot_compute():
    parts = block_case(1, 4, 6, 6, 6, 4, 2, False)
    with pytest.raises(ValueError, match="the residual needs stride 1 and Co = Ci, got stride 2"):
        block.inverted_residual_eval(*parts, 2, True)
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        block.inverted_residual_eval(*parts, 3, False)
    with pytest.raises(ValueError, match=r"output planes of 3x3 run layer by layer"):
        block.inverted_residual_eval(*parts, 2, False)  # not a plane fused_planes names
    for kset in (NUMBA, kernel_set("reference")):  # the kernel set says the same
        with pytest.raises(ValueError, match="the residual needs stride 1 and Co = Ci"):
            kset.inverted_residual_eval(*parts, 2, True)
        with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
            kset.inverted_residual_eval(*parts, 3, False)
