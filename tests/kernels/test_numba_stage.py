"""The numba set's depthwise stage in training, one kernel per direction (kernels/numba/stage.py).

relu6(BN2(depthwise3x3(relu6(BN1(e))))) with training-mode BatchNorms: on the NCHW planes it
takes (``stage.stage_supported``) ``NumbaKernels`` runs it channel by channel in one pass
each way, every step the very routine of the separate kernels, so it must give the bits of
the composition it overrides run on the numba set's own simple kernels; for any thread
count, and on inputs in any layout. (Against the reference set's numbers, fused and
composed: ``test_numba_fused.py``; the op and the model: ``F.depthwise_stage_train``.)
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

from kernel_cases import run_stage, stage_problem
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import NumbaKernels, stage
from tinymbv2.kernels.reference import ReferenceKernels

NUMBA = kernel_set("numba")


class Composed(NumbaKernels):
    """The numba set's simple kernels, composed into the stage as the reference does."""

    depthwise_stage_forward_train = ReferenceKernels.depthwise_stage_forward_train
    depthwise_stage_backward_train = ReferenceKernels.depthwise_stage_backward_train


def _run(shape, stride, seed, dtype, kset=NUMBA):
    e, bn1, w_dw, bn2, gh = stage_problem(shape, stride, np.random.default_rng(seed), dtype)
    assert stage.stage_supported(e, w_dw, stride)
    return run_stage(kset, e, bn1, w_dw, stride, bn2, gh)


# d above batchnorm.FLAT_MAX values, so that the separate BatchNorms run the NCHW kernels too
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,stride", [((2, 16, 96, 96), 1), ((4, 18, 128, 128), 2)])
def test_the_stage_gives_the_bits_of_the_separate_kernels(shape, stride, dtype):
    expected = _run(shape, stride, 1, dtype, Composed())
    got = _run(shape, stride, 1, dtype)
    for part_expected, part_got in zip(expected, got):
        for a, b in zip(part_expected, part_got):
            assert b.dtype == dtype and np.array_equal(a, b)


def test_the_stage_is_bit_identical_for_any_thread_count():
    before = numba.get_num_threads()
    try:
        runs = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS, 1):
            numba.set_num_threads(threads)
            runs.append(_run((3, 7, 30, 26), 2, 2, np.float32))
    finally:
        numba.set_num_threads(before)
    for run in runs[1:]:
        for part0, part in zip(runs[0], run):
            assert all(np.array_equal(a, b) for a, b in zip(part0, part))


def test_the_stage_takes_inputs_in_any_layout():
    """Channels-last or strided inputs (as a caller may hand them over) give the same bits
    as C-contiguous ones, and the outputs are C-contiguous NCHW."""
    e, bn1, w_dw, bn2, gh = stage_problem((2, 5, 20, 18), 2, np.random.default_rng(3),
                                          np.float32)
    expected = run_stage(NUMBA, e, bn1, w_dw, 2, bn2, gh)
    e_cl = np.ascontiguousarray(e.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    g_strided = np.repeat(gh, 2, axis=3)[..., ::2]
    assert not e_cl.flags.c_contiguous and not g_strided.flags.c_contiguous
    assert stage.stage_supported(e_cl, w_dw, 2)
    got = run_stage(NUMBA, e_cl, bn1, w_dw, 2, bn2, g_strided)
    for part_expected, part_got in zip(expected, got):
        for a, b in zip(part_expected, part_got):
            assert np.array_equal(a, b)
    assert got[0][0].flags.c_contiguous and got[1][0].flags.c_contiguous


def test_stage_supported_names_the_calls_it_takes():
    e, w = np.zeros((2, 3, 17, 17)), np.zeros((3, 1, 3, 3))
    assert stage.stage_supported(e, w, 1) and stage.stage_supported(e, w, 2)
    assert not stage.stage_supported(e, w, 3)                            # stride
    assert not stage.stage_supported(np.zeros((2, 3, 16, 16)), w, 1)     # channels-last plane
    assert not stage.stage_supported(np.zeros((0, 3, 17, 17)), w, 1)     # empty batch
    assert not stage.stage_supported(e, np.zeros((3, 1, 5, 5)), 1)       # filter size
    assert not stage.stage_supported(e, w.astype(np.float32), 1)         # dtypes differ
    assert not stage.stage_supported(e.astype(np.int64), w.astype(np.int64), 1)
