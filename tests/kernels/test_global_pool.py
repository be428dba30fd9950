"""Global average pooling (``global_average_pool``), the frozen model's head: the numba set's
kernel against NumPy's ``x.mean(axis=(2, 3))`` bit for bit on channels-last maps (float32
and float64, one image and several, planes of one pixel to 7x7 and more, one channel),
the layouts it leaves to NumPy, PyTorch in float64, the same bits at any thread count, and
its errors.
"""

import numba
import numpy as np
import pytest
import torch

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import global_pool
from tinymbv2.kernels.numba.layout import is_channels_last

NUMBA, REFERENCE = kernel_set("numba"), kernel_set("reference")


def _channels_last(shape, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1280, 7, 7), (8, 1280, 7, 7), (3, 17, 5, 9), (2, 40, 1, 1),
                                   (2, 1, 6, 6), (1, 24, 28, 28)])
def test_numpys_bits_on_channels_last_maps(dtype, shape):
    x = _channels_last(shape, dtype)
    assert is_channels_last(x)
    y = NUMBA.global_average_pool(x)
    assert y.shape == shape[:2] and y.dtype == dtype
    assert np.array_equal(y, x.mean(axis=(2, 3)))
    assert np.array_equal(y, REFERENCE.global_average_pool(x))
    expected = torch.from_numpy(x.astype(np.float64)).mean(dim=(2, 3)).numpy()
    assert np.abs(y - expected).max() <= (1e-5 if dtype == np.float32 else 1e-13)


def test_other_layouts_go_to_numpy():
    x = np.random.default_rng(1).standard_normal((2, 6, 9, 9)).astype(np.float32)  # NCHW
    assert np.array_equal(NUMBA.global_average_pool(x), x.mean(axis=(2, 3)))
    strided = _channels_last((2, 12, 9, 9), np.float32)[:, ::2]
    assert np.array_equal(NUMBA.global_average_pool(strided), strided.mean(axis=(2, 3)))
    empty = _channels_last((0, 8, 3, 3), np.float32)
    assert NUMBA.global_average_pool(empty).shape == (0, 8)


def test_the_same_bits_for_any_thread_count():
    x = _channels_last((5, 96, 7, 7), np.float32, seed=2)
    before = numba.get_num_threads()
    try:
        ys = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            ys.append(global_pool.global_average_pool(x))
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(ys[0], ys[1])


@pytest.mark.parametrize("kernels", [NUMBA, REFERENCE], ids=["numba", "reference"])
def test_not_a_map(kernels):
    with pytest.raises(ValueError, match=r"global_average_pool: expected a map \(N, C, H, W\), "
                                         r"got \(3, 4\)"):
        kernels.global_average_pool(np.zeros((3, 4), np.float32))
