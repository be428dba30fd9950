"""Software prefetch (kernels/numba/prefetch.py): a hint that changes no value.

The depthwise stage's routines take planes to prefetch while they work (``ahead``); with
or without them, and for reading or writing, every output and the prefetched planes
themselves keep their bits. (The stage as a whole against the separate kernels: test_numba_stage.py.)
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from tinymbv2.kernels.numba.depthwise import planes3x3, planes3x3_s2
from tinymbv2.kernels.numba.prefetch import prefetch_line, prefetch_line_for_write, prefetch_part


@njit
def _ask_for_all(flat, parts, write):
    for k in range(parts):
        prefetch_part(flat, k, parts, write)
    for i in range(flat.shape[0]):
        prefetch_line(flat, i)
        prefetch_line_for_write(flat, i)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size,parts", [(1, 1), (17, 5), (4096, 64), (1000, 3)])
def test_prefetching_a_plane_leaves_it_as_it_was(size, parts, dtype):
    flat = np.random.default_rng(size).standard_normal(size).astype(dtype)
    before = flat.copy()
    for write in (False, True):
        _ask_for_all(flat, parts, write)
        np.testing.assert_array_equal(flat, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h,w", [(9, 7), (16, 16), (33, 20)])
def test_the_routines_give_the_same_bits_with_a_plane_to_prefetch(h, w, dtype):
    rng = np.random.default_rng(h * w)
    x = rng.standard_normal((h, w)).astype(dtype)
    k = rng.standard_normal((3, 3)).astype(dtype)
    ahead = rng.standard_normal(h * w + 5).astype(dtype), rng.standard_normal(7).astype(dtype)
    kept = [a.copy() for a in ahead]
    outs = {}
    for key, extra in (("none", ()), ("read", (ahead, False)), ("write", (ahead, True))):
        # stride 1, padding 1: the correlation and its weight gradient
        pad = np.empty(planes3x3.padded_size(h, w, 1, 1), dtype)
        y = np.empty((h, w), dtype)
        planes3x3.correlate3x3_padded(y, x, k, 1, 1, pad, np.empty(h * (w + 2), dtype), *extra)
        gw = np.zeros((3, 3), dtype)
        planes3x3.weight3x3_padded(gw, y, x, 1, 1, pad,
                                   np.empty(planes3x3.weight_scratch_size(h, w, 1), dtype), *extra)
        # stride 2, padding 1: phases (with the BatchNorm + ReLU6 on the way), weight, scatter
        ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        size = planes3x3_s2.phase_size(h, w)
        ph = np.empty((4, size), dtype)
        planes3x3_s2.split_phases(x, ph, dtype(0.1), dtype(1.5), dtype(-0.2), True, *extra)
        y2 = np.empty((ho, wo), dtype)
        planes3x3_s2.correlate_phases(y2, ph, k, planes3x3_s2.phase_width(w),
                                      np.empty(planes3x3_s2.scratch_size(h, w), dtype))
        gw2 = np.zeros((3, 3), dtype)
        scratch = np.empty(planes3x3_s2.weight_scratch_size(ho, w), dtype)
        planes3x3_s2.weight3x3_s2(gw2, y2, x, scratch, *extra)
        gx = np.empty((h, w), dtype)
        planes3x3_s2.scatter3x3_s2(gx, y2, k, *extra)
        outs[key] = (y, gw, ph, y2, gw2, gx)
        for a, b in zip(ahead, kept):
            np.testing.assert_array_equal(a, b)
    for key in ("read", "write"):
        for a, b in zip(outs["none"], outs[key]):
            np.testing.assert_array_equal(a, b)
    assert np.isfinite(outs["none"][0]).all() and np.abs(outs["none"][0]).max() > 0
