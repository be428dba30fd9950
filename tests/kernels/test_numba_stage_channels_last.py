"""The numba set's depthwise stage in training on channels-last planes (``stage_channels_last``).

relu6(BN2(depthwise3x3(relu6(BN1(e))))) with training-mode BatchNorms, the filter dilated
or not: on the small planes the set keeps channels-last, at stride 1 (with enough channels
and pixels, ``supported``), ``NumbaKernels`` runs it a block of channels at a time, one
kernel per direction, every step the routine of
the separate kernels in their order. So it must give the bits of the composition it
overrides run on the numba set's own simple kernels (BatchNorm's runs of rows, the register
loops of ``depthwise.rows3x3``, sub-grid by sub-grid when dilated), for any thread count,
small tensors (one thread) and large (the pool) alike. (Against PyTorch: the op,
``tests/functional/test_fused_stage.py``.)
"""
from __future__ import annotations

import numpy as np
import pytest

from kernel_cases import stage_problem, three_runs
from tinymbv2.kernels.numba import NumbaKernels, stage, stage_channels_last
from tinymbv2.kernels.numba.layout import as_channels_last, is_channels_last
from tinymbv2.kernels.reference import ReferenceKernels

NUMBA = NumbaKernels()


class Composed(NumbaKernels):
    """The numba set's simple kernels, composed into the stage as the reference does."""

    depthwise_stage_forward_train = ReferenceKernels.depthwise_stage_forward_train
    depthwise_stage_backward_train = ReferenceKernels.depthwise_stage_backward_train


class Kernel(NumbaKernels):
    """The numba set with this kernel taking every stage it can run, whatever its size."""

    def depthwise_stage_forward_train(self, e, bn1, w_dw, stride, bn2, dilation=1):
        h, d, mean1, invstd1, mean2, invstd2 = stage_channels_last.stage_forward_train(
            e, bn1, w_dw, dilation, bn2)
        return h, None, d, mean1, invstd1, mean2, invstd2

    def depthwise_stage_backward_train(self, gh, e, a, d, bn1, w_dw, stride, bn2, dilation=1):
        return stage_channels_last.stage_backward_train(gh, e, d, bn1, w_dw, dilation, bn2)


def _run(kset, shape, dilation, seed, dtype, gh_layout=as_channels_last):
    e, bn1, w_dw, bn2, gh = stage_problem(shape, 1, np.random.default_rng(seed), dtype)
    e = as_channels_last(e)
    h, a, d, mean1, invstd1, mean2, invstd2 = kset.depthwise_stage_forward_train(
        e, bn1, w_dw, 1, bn2, dilation)
    grads = kset.depthwise_stage_backward_train(
        gh_layout(gh), e, a, d, (bn1[0], bn1[1], mean1, invstd1), w_dw, 1,
        (bn2[0], bn2[1], mean2, invstd2), dilation)
    return (h, d, mean1, invstd1, mean2, invstd2), grads, a


# (N, C, H, W), dilation: channels not a multiple of the block or the vector, planes up to
# 16 x 16 and not square, dilations past the plane; the last two above SERIAL_MAX (the pool)
CASES = [((2, 7, 5, 9), 1), ((3, 33, 16, 16), 1), ((1, 70, 4, 13), 2), ((2, 17, 16, 11), 3),
         ((4, 40, 7, 7), 6), ((2, 5, 1, 16), 1), ((2, 24, 16, 16), 17),
         ((4, 96, 16, 16), 1), ((4, 160, 16, 16), 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,dilation", CASES)
def test_the_stage_gives_the_bits_of_the_separate_kernels(shape, dilation, dtype):
    expected, expected_grads, a_kept = _run(Composed(), shape, dilation, 1, dtype)
    got, got_grads, a = _run(Kernel(), shape, dilation, 1, dtype)
    assert a_kept is not None and a is None  # the kernel recomputes a in the backward
    for x, y in zip(expected + expected_grads, got + got_grads):
        assert y.dtype == dtype and x.shape == y.shape and np.array_equal(x, y)
    for y in (got[0], got[1], got_grads[0]):  # h, d and dL/de stay channels-last
        assert is_channels_last(y)


def test_cases_run_on_one_thread_and_on_the_pool():
    sizes = [np.prod(shape) for shape, _ in CASES]
    assert min(sizes) <= stage_channels_last.SERIAL_MAX < max(sizes)


def test_the_stage_is_bit_identical_for_any_thread_count():
    first, *others = three_runs(lambda: _run(Kernel(), (4, 150, 16, 16), 2, 2, np.float32))
    for run in others:
        for x, y in zip(first[0] + first[1], run[0] + run[1]):
            assert np.array_equal(x, y)


def test_an_nchw_upstream_gradient_gives_the_same_bits():
    expected = _run(Kernel(), (2, 20, 9, 9), 2, 3, np.float32)
    got = _run(Kernel(), (2, 20, 9, 9), 2, 3, np.float32, gh_layout=np.ascontiguousarray)
    assert all(np.array_equal(x, y) for x, y in zip(expected[1], got[1]))


def test_numba_sends_each_stage_to_its_kernel(monkeypatch):
    """Channels-last planes at stride 1 (dilated too) with enough channels and pixels: this
    kernel; fewer, or at stride 2: the three simple kernels; larger NCHW planes: ``.stage``,
    which has no dilation (the simple kernels take a dilated filter there)."""
    calls = []
    for module, name in ((stage_channels_last, "stage_forward_train"),
                         (stage, "stage_forward_train")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _real=real, _module=module:
                            calls.append(_module.__name__.rsplit(".", 1)[1]) or _real(*args))
    rng = np.random.default_rng(0)
    most = stage_channels_last.MIN_CHANNELS
    for shape, stride, dilation, want in (((2, most, 16, 16), 1, 1, ["stage_channels_last"]),
                                          ((2, most + 5, 8, 8), 1, 4, ["stage_channels_last"]),
                                          ((2, most - 1, 16, 16), 1, 1, []),
                                          ((2, most, 7, 9), 1, 2, []),
                                          ((2, most, 16, 16), 2, 1, []),
                                          ((2, 8, 20, 20), 1, 1, ["stage"]),
                                          ((2, 8, 20, 20), 1, 2, [])):
        e, bn1, w_dw, bn2, _ = stage_problem(shape, stride, rng, np.float32)
        calls.clear()
        out = NUMBA.depthwise_stage_forward_train(as_channels_last(e), bn1, w_dw, stride, bn2,
                                                  dilation)
        assert calls == want, (shape, stride, dilation)
        assert (out[1] is None) == bool(want)  # a: kept by the simple kernels only


def test_supported_names_the_calls_it_takes():
    c = stage_channels_last.MIN_CHANNELS
    e = as_channels_last(np.zeros((2, c, 16, 16), np.float32))
    w = np.zeros((c, 1, 3, 3), np.float32)
    assert stage_channels_last.supported(e, w, 1, 1) and stage_channels_last.supported(e, w, 1, 5)
    assert not stage_channels_last.supported(e, w, 2, 1)  # stride 2
    assert not stage_channels_last.supported(np.ascontiguousarray(e), w, 1, 1)  # NCHW memory
    assert not stage_channels_last.supported(as_channels_last(np.zeros((2, c, 17, 16))),
                                             w.astype(np.float64), 1, 1)  # a larger plane
    assert not stage_channels_last.supported(e, w.astype(np.float64), 1, 1)  # two dtypes
    assert not stage_channels_last.supported(e, np.zeros((c, 1, 5, 5), np.float32), 1, 1)
    fewer = as_channels_last(np.zeros((2, c - 1, 16, 16), np.float32))
    assert not stage_channels_last.supported(fewer, w[:-1], 1, 1)  # too few channels
    small = as_channels_last(np.zeros((2, c, 7, 9), np.float32))
    assert stage_channels_last.supported(as_channels_last(np.zeros((2, c, 8, 8), np.float32)),
                                         w, 1, 1)
    assert not stage_channels_last.supported(small, w, 1, 1)  # too few pixels
