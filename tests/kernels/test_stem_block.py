"""The stem and the first block in one pass (kernels/numba/stem_block.py) and the kernel-set
op that prepares it (``prepare_stem_block_eval``).

Against PyTorch's stem and block layer by layer in float64; bit for bit the two prepared
steps one after the other (the numba set's stem, ``dense.direct``, then its block) in
float32 and float64: 224 px at batches 1 and 3, odd and non-square images, block strides
1 and 2, paddings 0 and 1, several bands or one, any thread count; where the planes fall
outside the pass (a small image) it runs the two steps; the reference set's composition;
an empty batch; the blocks it refuses.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from block_cases import bn_eval_params, torch_block
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import block_channels_last as bcl, stem_block
from tinymbv2.kernels.numba.layout import is_channels_last
from tinymbv2.kernels.numba.stem_block import PreparedStemBlock

NUMBA, REFERENCE = kernel_set("numba"), kernel_set("reference")


def _case(n, h, w, cs, co, stride, padding, block_stride, dtype, seed=0, ci=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ci, h, w))
    wst = rng.standard_normal((cs, ci, 3, 3))
    bn = bn_eval_params(rng, cs, True)
    depthwise = (rng.standard_normal((cs, 1, 3, 3)), bn_eval_params(rng, cs, True))
    project = (rng.standard_normal((co, cs, 1, 1)), bn_eval_params(rng, co, False))

    def cast(a):
        return a.astype(dtype) if isinstance(a, np.ndarray) else a

    bn, depthwise, project = (tuple(cast(a) for a in bn),
                              (cast(depthwise[0]), tuple(cast(a) for a in depthwise[1])),
                              (cast(project[0]), tuple(cast(a) for a in project[1])))
    return cast(x), cast(wst), (stride, stride), (padding, padding), bn, depthwise, project, \
        block_stride


def _steps(kernels, case):
    x, w, stride, padding, bn, depthwise, project, s = case
    stem = (lambda x: kernels.conv2d_bn_eval(x, w, stride, padding, bn))
    block = kernels.prepare_inverted_residual_eval(None, depthwise, project, s, False)
    fused = kernels.prepare_stem_block_eval(stem, block, w, stride, padding, bn)
    return stem, block, fused


def _torch(case):
    x, w, stride, padding, bn, depthwise, project, s = case
    mean, var, gamma, beta, eps, _ = (torch.tensor(a) if isinstance(a, np.ndarray) else a
                                      for a in bn)
    h = F.batch_norm(F.conv2d(torch.tensor(x), torch.tensor(w), stride=stride, padding=padding),
                     mean, var, gamma, beta, False, 0.1, eps).clamp(0, 6).numpy()
    return torch_block(h, None, depthwise, project, s, False)


# (n, h, w, stem channels, block output channels, stem stride, stem padding, block stride)
CASES = [
    (1, 224, 224, 32, 16, 2, 1, 1),   # MobileNetV2's at 224 px, one image
    (3, 224, 224, 32, 16, 2, 1, 1),   # an odd batch
    (2, 71, 53, 24, 40, 2, 1, 2),     # odd, not square; the block at stride 2
    (1, 40, 66, 16, 8, 1, 0, 1),      # stem stride 1, no padding
]


@pytest.mark.parametrize("case", CASES)
def test_one_pass_is_pytorchs_and_the_two_steps_bits(case):
    c64 = _case(*case, np.float64)
    stem, block, fused = _steps(NUMBA, c64)
    assert isinstance(fused, PreparedStemBlock) and fused._planes(c64[0]) is not None
    y = fused(c64[0])
    assert is_channels_last(y)
    expected = _torch(c64)
    assert np.abs(y - expected).max() <= 1e-10 * np.abs(expected).max()
    for dtype in (np.float32, np.float64):
        c = _case(*case, dtype, seed=1)
        stem, block, fused = _steps(NUMBA, c)
        two = block(stem(c[0]))
        one = fused(c[0])
        assert one.dtype == dtype and one.strides == two.strides
        assert np.array_equal(one, two)


def test_many_bands_and_any_thread_count(monkeypatch):
    c = _case(2, 60, 48, 16, 8, 2, 1, 1, np.float32, seed=2)
    stem, block, fused = _steps(NUMBA, c)
    two = block(stem(c[0]))
    monkeypatch.setattr(bcl, "BAND_BYTES", 4000)  # bands of one or two rows
    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            assert np.array_equal(fused(c[0]), two)
    finally:
        numba.set_num_threads(before)


def test_planes_outside_the_pass_run_the_two_steps(monkeypatch):
    c = _case(2, 24, 24, 16, 8, 2, 1, 1, np.float32, seed=3)  # the stem's 12x12: a small plane
    stem, block, fused = _steps(NUMBA, c)
    assert fused._planes(c[0]) is None
    called = []
    monkeypatch.setattr(stem_block, "_stem_blocks", lambda *a: called.append(a))
    assert np.array_equal(fused(c[0]), block(stem(c[0]))) and not called
    empty = fused(c[0][:0])
    assert empty.shape == (0, 8, 12, 12)


def test_the_reference_set_composes_the_two_steps():
    c = _case(1, 30, 30, 8, 4, 2, 1, 1, np.float64, seed=4)
    stem, block, fused = _steps(REFERENCE, c)
    assert not isinstance(fused, PreparedStemBlock)
    assert np.array_equal(fused(c[0]), block(stem(c[0])))
    assert np.abs(fused(c[0]) - _torch(c)).max() <= 1e-10 * np.abs(_torch(c)).max()


def test_a_block_with_expansion_or_residual_is_not_taken():
    x, w, stride, padding, bn, depthwise, project, s = _case(1, 30, 30, 8, 8, 2, 1, 1,
                                                             np.float64)
    rng = np.random.default_rng(5)
    expand = (rng.standard_normal((8, 8, 1, 1)), bn_eval_params(rng, 8, True))
    stem = (lambda x: NUMBA.conv2d_bn_eval(x, w, stride, padding, bn))
    for block in (NUMBA.prepare_inverted_residual_eval(expand, depthwise, project, 1, False),
                  NUMBA.prepare_inverted_residual_eval(None, depthwise, project, 1, True)):
        fused = NUMBA.prepare_stem_block_eval(stem, block, w, stride, padding, bn)
        assert not isinstance(fused, PreparedStemBlock)
        assert np.array_equal(fused(x), block(stem(x)))
        with pytest.raises(ValueError, match="PreparedStemBlock: expected a block without "
                                             "expansion or residual on the stem's 8 channels"):
            PreparedStemBlock(stem, w, stride, padding, bn, block)
