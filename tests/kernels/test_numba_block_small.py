"""The numba set's inverted residual block on small channels-last planes
(kernels/numba/block_small.py) and the block prepared once (kernels/numba/block_prepared.py).

Checked against PyTorch's separate layers in float64, and bit for bit against the numba
set's own layers one by one (``ReferenceKernels.inverted_residual_eval`` on the numba
kernels, what the 7x7 blocks ran before): inputs in either layout, with and without
expansion and residual, strides 1 and 2, planes from 1x1 to 7x7, the rows cut among the
threads or not, any thread count; and the prepared block against the unprepared one on
every plane range.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

from block_cases import block_case, torch_block
from errors import assert_close
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import block, block_channels_last as bcl, block_small
from tinymbv2.kernels.numba.block_prepared import PreparedBlock
from tinymbv2.kernels.numba.layout import as_channels_last, is_channels_last
from tinymbv2.kernels.reference import ReferenceKernels

TOL64 = 1e-10
NUMBA = kernel_set("numba")

# (n, ci, h, w, expansion t, co, stride, residual), all with outputs under 8x8
CASES = [
    (2, 16, 7, 7, 6, 16, 1, True),     # 7x7 with the residual, as at 224 px
    (3, 12, 14, 13, 6, 20, 2, False),  # 14 -> 7 rows, odd width, stride 2
    (1, 24, 5, 6, 1, 8, 2, False),     # no expansion
    (4, 8, 1, 1, 6, 8, 1, True),       # 1x1 planes (a 32 px model's last stage)
    (2, 20, 1, 3, 2, 20, 1, True),     # one row
    (2, 24, 3, 1, 6, 8, 2, False),     # one column, 144 channels (a part-vector at the end)
]


def _float32(parts):
    return tuple(None if p is None else (
        p[0].astype(np.float32),
        tuple(a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in p[1]))
        for p in parts)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_the_small_plane_block_is_pytorchs_and_the_layers_bits(monkeypatch, layout, split, case):
    """Float64 against PyTorch's layers; float32 and float64 bit for bit the numba layers one
    by one, the rows cut among the threads (``split``) or in one task."""
    *shape, stride, residual = case
    monkeypatch.setattr(block_small, "PARALLEL_MACS", 0 if split else 1 << 62)
    x, *parts = block_case(*shape, stride, residual, seed=4)
    assert block_small.supported(x, stride) and not bcl.supported(x, stride)
    x_in = as_channels_last(x) if layout == "channels_last" else x
    y = NUMBA.inverted_residual_eval(x_in, *parts, stride, residual)
    assert_close("inverted_residual_eval", y, torch_block(x, *parts, stride, residual), TOL64)
    assert is_channels_last(y)
    for xs, ps in ((x_in, parts), (x_in.astype(np.float32), _float32(parts))):
        layers = ReferenceKernels.inverted_residual_eval(NUMBA, xs, *ps, stride, residual)
        assert np.array_equal(NUMBA.inverted_residual_eval(xs, *ps, stride, residual), layers)


def test_the_small_plane_block_is_bit_identical_for_any_thread_count():
    x, *parts = block_case(8, 32, 7, 7, 6, 32, 1, True, seed=5)
    x, parts = x.astype(np.float32), _float32(parts)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append(NUMBA.inverted_residual_eval(x, *parts, 1, True))
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(results[0], results[1])


def test_an_empty_batch_gives_an_empty_output():
    x, *parts = block_case(1, 8, 7, 7, 6, 8, 1, True)
    y = NUMBA.inverted_residual_eval(x[:0], *parts, 1, True)
    assert y.shape == (0, 8, 7, 7)


@pytest.mark.parametrize("size,stride", [(7, 1), (14, 2), (28, 1), (56, 2), (240, 2)])
def test_the_prepared_block_is_the_block_on_every_plane(size, stride):
    """Prepared once and called twice, on the planes of each kernel (small, channels-last,
    NCHW bands): the unprepared kernel's bits."""
    x, *parts = block_case(2, 8, size, size, 6, 8, stride, False, seed=6)
    x, parts = x.astype(np.float32), _float32(parts)
    prepared = NUMBA.prepare_inverted_residual_eval(*parts, stride, False)
    assert isinstance(prepared, PreparedBlock)
    expected = ReferenceKernels.inverted_residual_eval(NUMBA, x, *parts, stride, False)
    for _ in range(2):
        y = prepared(x)
        assert np.array_equal(y, NUMBA.inverted_residual_eval(x, *parts, stride, False))
        assert_close("prepared block", y.astype(np.float64), expected.astype(np.float64), 1e-5)
    kernel = ("small" if block_small.supported(x, stride) else "channels_last"
              if bcl.supported(x, stride) else "bands" if block.fused_planes(x, stride) else "")
    assert kernel == {7: "small", 14: "small", 28: "channels_last", 56: "channels_last",
                      240: "bands"}[size]


def test_the_reference_sets_prepared_block_calls_its_kernel():
    ref = kernel_set("reference")
    x, *parts = block_case(1, 4, 9, 8, 6, 4, 1, True, seed=7)
    run = ref.prepare_inverted_residual_eval(*parts, 1, True)
    assert np.array_equal(run(x), ref.inverted_residual_eval(x, *parts, 1, True))


def test_the_prepared_block_names_what_it_expected():
    x, *parts = block_case(1, 4, 7, 7, 6, 4, 1, True)
    prepared = NUMBA.prepare_inverted_residual_eval(*parts, 1, True)
    with pytest.raises(ValueError, match=r"expected an input \(N, 4, H, W\), got \(1, 5, 7, 7\)"):
        prepared(np.zeros((1, 5, 7, 7)))
    with pytest.raises(ValueError, match=r"expected an input \(N, 4, H, W\), got \(4, 7, 7\)"):
        prepared(np.zeros((4, 7, 7)))
    with pytest.raises(TypeError, match="all arrays must share one dtype"):
        prepared(x.astype(np.float32))
    with pytest.raises(ValueError, match=r"depthwise weight must have shape \(24, 1, 3, 3\)"):
        NUMBA.prepare_inverted_residual_eval(parts[0], (parts[1][0][:, :, :2], parts[1][1]),
                                             parts[2], 1, False)
    with pytest.raises(ValueError, match="the residual needs stride 1 and Co = Ci"):
        NUMBA.prepare_inverted_residual_eval(*parts, 2, True)
    with pytest.raises(TypeError, match="expected float32 or float64 weights, got int64"):
        NUMBA.prepare_inverted_residual_eval(None, (np.zeros((4, 1, 3, 3), np.int64), None),
                                             parts[2], 1, False)
