"""The numba set's fused kernels against the compositions they override, in float64.

``ReferenceKernels`` composes every fused kernel of the simple ones; ``NumbaKernels``
computes some in one pass on what it takes (a conv's BatchNorm as an epilogue, both
gradients of a 1x1 convolution from one pass over gy, a whole block in bands, the
depthwise stage, RMSprop's update) and inherits the composition for the rest. Here each
is checked both ways -- on shapes and arrays that take the one-pass kernel and on ones that
fall back -- against the reference set's numbers, and, where the kernels say so, against
the bits of the composition run on the numba set's own simple kernels (``Composed``).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from kernel_cases import channels_last_max, fused_inference_calls, run_stage, stage_problem
from test_kernels import assert_close
from tinymbv2.kernels import FUSED_KERNELS, kernel_set
from tinymbv2.kernels.numba import NumbaKernels, block, stage
from tinymbv2.kernels.numba.layout import channels_last_plane
from tinymbv2.kernels.reference import ReferenceKernels

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
TIGHT = 1e-12  # float64: max |got - want| <= TIGHT * max(1, max |want|)


class Composed(NumbaKernels):
    """The numba set's simple kernels, composed into the fused ones as the reference does."""


for _name in FUSED_KERNELS:
    setattr(Composed, _name, vars(ReferenceKernels)[_name])
COMPOSED = Composed()


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


# (shape, stride): the block's output plane decides its path (kernels/numba/block.py)
BLOCK_CASES = [
    ((2, 6, 18, 17), 1),   # 18x17 = 306 px output, NCHW: fused bands
    ((2, 6, 33, 35), 2),   # 17x18 output: fused bands, odd width at stride 2
    ((2, 6, 9, 8), 1),     # 72 px output, kept channels-last: layer by layer
    ((3, 4, 11, 9), 2),    # 6x5 output, under FUSED_FROM: layer by layer
]


@pytest.mark.parametrize("layout_max", [None, 0], ids=["default-layout", "layout-off"])
@pytest.mark.parametrize("shape,stride", BLOCK_CASES)
def test_fused_inference_kernels_match_the_reference(shape, stride, layout_max):
    """conv + BatchNorm-eval (dense, depthwise, pointwise), both gradients of a 1x1
    convolution and the inverted residual block, with and without expansion: the
    reference set's numbers, whichever way the numba set takes."""
    rng = np.random.default_rng(sum(shape) + stride)
    x = rng.standard_normal(shape)
    calls = fused_inference_calls(x, rng, stride)
    with contextlib.nullcontext() if layout_max is None else channels_last_max(layout_max):
        for label, (name, args) in calls.items():
            want = as_tuple(getattr(REFERENCE, name)(*args))
            got = as_tuple(getattr(NUMBA, name)(*args))
            assert len(got) == len(want), label
            for k, (a, b) in enumerate(zip(got, want)):
                assert a.dtype == np.float64 and a.shape == b.shape, f"{label}[{k}]"
                assert_close(a, b, TIGHT, f"{label}[{k}] {shape} s{stride}", floor=1.0)


def test_the_block_cases_reach_both_paths():
    """Guard for BLOCK_CASES: two take the fused bands, two run layer by layer; with the
    channels-last layout off, the 9x8 one is fused too."""
    fused = [block.fused_planes(np.empty(shape), stride) for shape, stride in BLOCK_CASES]
    assert fused == [True, True, False, False]
    with channels_last_max(0):
        assert block.fused_planes(np.empty((2, 6, 9, 8)), 1)
    assert not channels_last_plane(18, 17) and channels_last_plane(9, 8)  # pointwise's two ways


@pytest.mark.parametrize("shape,stride", [((2, 6, 18, 17), 1), ((2, 6, 9, 8), 1),
                                          ((2, 6, 33, 35), 2), ((1, 6, 1, 1), 1)])
def test_bn_eval_epilogues_give_the_bits_of_the_separate_kernels(shape, stride):
    """The ``*_bn_eval`` kernels run BatchNorm-eval as an epilogue of the convolution, with
    its scale computed as ``batch_norm_forward_eval`` computes it: the bits of the
    convolution followed by the BatchNorm kernel, on NCHW and channels-last planes. One
    exception: on a channels-last plane the 3x3 depthwise forward with an epilogue runs in
    vector registers (numba/depthwise/rows3x3_bn.py, strides 1 and 2), its sum in another
    order than the separate forward's (tap by tap at stride 2): equal up to rounding."""
    rng = np.random.default_rng(shape[2] * 10 + stride)
    registers = channels_last_plane(*shape[2:])
    for dtype in (np.float64, np.float32):
        x = rng.standard_normal(shape).astype(dtype)
        for label, (name, args) in fused_inference_calls(x, rng, stride).items():
            if name.endswith("_bn_eval"):
                got, want = getattr(NUMBA, name)(*args), getattr(COMPOSED, name)(*args)
                assert got.dtype == dtype, label
                if registers and name == "depthwise_conv2d_bn_eval":
                    tol = TIGHT if dtype == np.float64 else 1e-5
                    assert_close(got, want, tol, f"{label} {dtype}", floor=1.0)
                else:
                    assert np.array_equal(got, want), f"{label} {dtype}"


# ---------------------------------------------------------------- depthwise stage
STAGE_CASES = [((2, 3, 17, 17), 1, True), ((2, 4, 20, 19), 2, True),   # above 256 px: fused
               ((2, 3, 9, 8), 1, False), ((2, 3, 11, 9), 2, False)]    # channels-last: composed


@pytest.mark.parametrize("shape,stride,fused", STAGE_CASES)
def test_depthwise_stage_matches_the_reference(shape, stride, fused):
    """Forward and backward, fused or composed: the reference set's numbers. The fused
    forward hands the backward no ``a`` (it recomputes it from e); the composed one does."""
    e, bn1, w_dw, bn2, gh = stage_problem(shape, stride, np.random.default_rng(shape[2]))
    assert stage.stage_supported(e, w_dw, stride) == fused
    assert (NUMBA.depthwise_stage_forward_train(e, bn1, w_dw, stride, bn2)[1] is None) == fused
    want = run_stage(REFERENCE, e, bn1, w_dw, stride, bn2, gh)
    got = run_stage(NUMBA, e, bn1, w_dw, stride, bn2, gh)
    names = (("h", "d", "mean1", "invstd1", "mean2", "invstd2"),
             ("dL/de", "dL/dweight1", "dL/dbias1", "dL/dw_dw", "dL/dweight2", "dL/dbias2"))
    for part_names, part_got, part_want in zip(names, got, want):
        for name, a, b in zip(part_names, part_got, part_want):
            assert a.dtype == np.float64 and a.shape == b.shape, name
            assert_close(a, b, TIGHT, f"{name} {shape} s{stride}", floor=1.0)


# ---------------------------------------------------------------- RMSprop
RMSPROP = [dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0),
           dict(lr=0.05, alpha=0.9, eps=1e-6, weight_decay=4e-5, momentum=0.9)]


def rmsprop_state(rng, shape, dtype):
    p, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    v, buf = rng.uniform(0, 1, shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    return p, g, v, buf


@pytest.mark.parametrize("kwargs", RMSPROP)
@pytest.mark.parametrize("size", [1000, (1 << 16) + 3])  # in the calling thread; on the pool
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsprop_update_gives_the_reference_bits(dtype, size, kwargs):
    """The one-pass update does the reference's arithmetic in its order: the same bits,
    for the parameter, the running average and the momentum buffer."""
    rng = np.random.default_rng(size)
    ours = rmsprop_state(rng, (size,), dtype)
    theirs = tuple(a.copy() for a in ours)
    for _ in range(3):
        NUMBA.rmsprop_update(*ours[:4], **kwargs)
        REFERENCE.rmsprop_update(*theirs[:4], **kwargs)
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype and np.array_equal(a, b)


def test_rmsprop_update_falls_back_for_what_the_kernel_does_not_take():
    """The centered form and non-contiguous arrays run the inherited NumPy update: the
    reference bits too."""
    rng = np.random.default_rng(1)
    kwargs = RMSPROP[1]
    big = rmsprop_state(rng, (40, 30), np.float64)
    for make_case in (lambda: tuple(a.copy() for a in big) + (np.zeros((40, 30)),),  # centered
                      lambda: tuple(a.copy()[:, ::2] for a in big) + (None,)):        # strided
        ours, theirs = make_case(), make_case()
        for _ in range(2):
            NUMBA.rmsprop_update(*ours[:4], **kwargs, grad_avg=ours[4])
            REFERENCE.rmsprop_update(*theirs[:4], **kwargs, grad_avg=theirs[4])
        for a, b in zip(ours, theirs):
            assert a is None or np.array_equal(a, b)


# ---------------------------------------------------------------- SGD
SGD = [dict(lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
       dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=4e-5, nesterov=False),
       dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.0, nesterov=False),
       dict(lr=0.02, momentum=0.8, dampening=0.0, weight_decay=1e-4, nesterov=True)]


@pytest.mark.parametrize("kwargs", SGD)
@pytest.mark.parametrize("size", [1000, (1 << 16) + 3])  # in the calling thread; on the pool
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_update_gives_the_reference_bits(dtype, size, kwargs):
    """The one-pass step does the reference's arithmetic in its order: the same bits for the
    parameter and the velocity, over a first step (the velocity set to the gradient) and two
    more."""
    rng = np.random.default_rng(size)
    ours = [rng.standard_normal(size).astype(dtype), np.zeros(size, dtype)]
    theirs = [a.copy() for a in ours]
    for step in range(3):
        g = rng.standard_normal(size).astype(dtype)
        NUMBA.sgd_update(ours[0], g, ours[1], **kwargs, first=step == 0)
        REFERENCE.sgd_update(theirs[0], g, theirs[1], **kwargs, first=step == 0)
        for a, b in zip(ours, theirs):
            assert a.dtype == dtype and np.array_equal(a, b)
    assert not np.array_equal(ours[1], 0) or kwargs["momentum"] == 0


def test_sgd_update_falls_back_for_strided_arrays():
    rng = np.random.default_rng(2)
    big = rng.standard_normal((40, 30))
    ours, theirs = big.copy()[:, ::2], big.copy()[:, ::2]
    g, buf_a, buf_b = rng.standard_normal((40, 15)), np.ones((40, 15)), np.ones((40, 15))
    NUMBA.sgd_update(ours, g, buf_a, **SGD[1])
    REFERENCE.sgd_update(theirs, g, buf_b, **SGD[1])
    assert np.array_equal(ours, theirs) and np.array_equal(buf_a, buf_b)
