"""The numba set's dense convolution with a BatchNorm epilogue (inference) written into
channels-last pixels straight from bands of input rows (``numba/dense/direct.py``): the stem
at 224 px.

Against PyTorch's conv + BatchNorm (+ ReLU6) in float64; bit for bit the NCHW path
(im2col and a product, ``EVAL_PIXELS_UP_TO = 0``) in float32 and float64: batches of 1 to
3, strides 1 and 2, paddings 0 to 2, 1x1, 3x3 and 5x5 filters, output channels that fill
one vector, part of one, a wide block and a wide block and a part (the block shapes of
``tile.gathered_product``), planes whose rows do not fill the last band, an input wider
than the filter reads (its last column unused), one and two threads; which planes take it;
an empty batch.
"""

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import dense
from tinymbv2.kernels.numba.layout import is_channels_last

NUMBA = kernel_set("numba")


def _case(n, ci, co, h, w, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ci, h, w)).astype(dtype)
    wt = rng.standard_normal((co, ci, k, k)).astype(dtype)
    bn = (rng.standard_normal(co).astype(dtype), rng.uniform(0.5, 2, co).astype(dtype),
          rng.standard_normal(co).astype(dtype), rng.standard_normal(co).astype(dtype), 1e-5)
    return x, wt, bn


def _torch(x, w, stride, padding, bn, relu6):
    mean, var, gamma, beta, eps = (torch.from_numpy(np.asarray(a)) if isinstance(a, np.ndarray)
                                   else a for a in bn)
    y = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=padding)
    y = F.batch_norm(y, mean, var, gamma, beta, training=False, eps=eps)
    return (y.clamp(0, 6) if relu6 else y).numpy()


@pytest.mark.parametrize("relu6", [True, False])
@pytest.mark.parametrize("n,ci,co,h,w,k,stride,padding", [
    (1, 3, 32, 64, 64, 3, 2, 1),    # the stem, one image: two parts
    (2, 3, 32, 41, 38, 3, 2, 1),    # odd sizes, an even batch: an image a task
    (3, 5, 16, 33, 35, 3, 1, 1),    # stride 1
    (1, 4, 24, 40, 40, 1, 1, 0),    # a 1x1 kernel, no padding
    (2, 3, 70, 41, 39, 5, 2, 2),    # 5x5, padding 2: a wide block and one vector of columns
    (1, 3, 40, 19, 17, 3, 1, 1),    # 40 columns: a wide block with masked lanes; 19 rows, 3 bands
    (2, 2, 8, 38, 38, 3, 2, 0),     # no padding: input column 37 never read; half a vector
])
def test_the_eval_forward_into_pixels_is_pytorchs_and_the_nchw_paths_bits(
        monkeypatch, relu6, n, ci, co, h, w, k, stride, padding):
    x, wt, bn = _case(n, ci, co, h, w, k, np.float64)
    y = NUMBA.conv2d_bn_eval(x, wt, (stride, stride), (padding, padding), (*bn, relu6))
    assert is_channels_last(y)
    expected = _torch(x, wt, stride, padding, bn, relu6)
    assert np.abs(y - expected).max() <= 1e-12 * np.abs(expected).max()
    for dtype in (np.float32, np.float64):
        x, wt, bn = _case(n, ci, co, h, w, k, dtype, seed=1)
        args = (x, wt, (stride, stride), (padding, padding), (*bn, relu6))
        pixels = NUMBA.conv2d_bn_eval(*args)
        monkeypatch.setattr(dense, "EVAL_PIXELS_UP_TO", 0)
        nchw = NUMBA.conv2d_bn_eval(*args)
        monkeypatch.setattr(dense, "EVAL_PIXELS_UP_TO", 12544)
        assert nchw.flags.c_contiguous and np.array_equal(pixels, nchw)


def test_the_same_bits_for_any_thread_count():
    x, wt, bn = _case(3, 3, 32, 50, 50, 3, np.float32, seed=2)
    before = numba.get_num_threads()
    try:
        ys = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            ys.append(NUMBA.conv2d_bn_eval(x, wt, (2, 2), (1, 1), (*bn, True)))
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(ys[0], ys[1])


def test_only_inference_up_to_112x112_comes_here():
    x, wt, bn = _case(1, 3, 8, 224, 224, 3, np.float32)
    assert is_channels_last(NUMBA.conv2d_bn_eval(x, wt, (2, 2), (1, 1), (*bn, True)))  # 112x112
    big = NUMBA.conv2d_bn_eval(x[:, :, :226], wt, (1, 1), (1, 1), (*bn, True))  # 224 x 224: NCHW
    assert big.flags.c_contiguous
    assert NUMBA.conv2d_forward(x[:, :, :64, :64], wt, (2, 2), (1, 1)).flags.c_contiguous


def test_an_empty_batch():
    x, wt, bn = _case(1, 3, 32, 20, 20, 3, np.float32)
    y = NUMBA.conv2d_bn_eval(x[:0], wt, (2, 2), (1, 1), (*bn, True))
    assert y.shape == (0, 32, 10, 10) and is_channels_last(y)
