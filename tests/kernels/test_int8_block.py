"""The fused int8 inverted residual block (``numba.int8_block``) against its layers run one by
one: the same integers on every output, for blocks with and without expansion and residual
sum, strides 1 and 2 on odd and even sizes, 1-row and 1-column planes, bands of one row
to whole images, 1 and 2 threads; the reference kernel set's layers agree too; which
blocks it takes; the input checks; ``Int8Net`` with and without fused blocks."""

import numba
import numpy as np
import pytest

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import int8_block
from tinymbv2.kernels.numba.int8_dot import VNNI

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
pytestmark = pytest.mark.skipif(not VNNI, reason="the fused block runs on AVX-512 VNNI's "
                                                 "GEMM; without it Int8Net runs layer by layer")


def _layer(rng, kset, x_qparams, ci, co, kind, stride=1, relu6=True, residual=None):
    """A prepared convolution (1x1 or depthwise 3x3) with random weights and quantization;
    returns it and its output's (scale, zero point)."""
    k, groups = (3, ci) if kind == "depthwise" else (1, 1)
    wq = rng.integers(-128, 128, (co, ci // groups, k, k)).astype(np.int8)
    y_scale = np.float32(rng.uniform(0.02, 0.2))
    y_zp = np.uint8(0 if relu6 else rng.integers(60, 200))
    conv = kset.prepare_qlinear_conv2d(
        np.float32(x_qparams[0]), np.uint8(x_qparams[1]), np.uint8, wq,
        rng.uniform(0.001, 0.01, co).astype(np.float32), np.int8(0),
        rng.integers(-3000, 3000, co).astype(np.int32), y_scale, y_zp, stride,
        (k - 1) // 2, groups, relu6=relu6, residual=residual)
    return conv, (y_scale, y_zp)


def _block(kset, seed, ci, ch, co, s, expand=True, add=None):
    """The block's prepared convolutions in one kernel set (the same draws for each set)."""
    rng = np.random.default_rng(seed)
    qx = (np.float32(rng.uniform(0.02, 0.1)), np.uint8(rng.integers(0, 256)))
    convs, q = [], qx
    if expand:
        conv, q = _layer(rng, kset, q, ci, ch, "pointwise")
        convs.append(conv)
    conv, q = _layer(rng, kset, q, ch, ch, "depthwise", stride=s)
    convs.append(conv)
    residual = None
    if add:
        residual = (qx[0], qx[1], np.float32(rng.uniform(0.05, 0.3)),
                    np.uint8(rng.integers(80, 180)))
    conv, _ = _layer(rng, kset, q, ch, co, "pointwise", relu6=False, residual=residual)
    convs.append(conv)
    return convs


def _layered(convs, xq, add):
    y = xq
    for conv in convs[:-1]:
        y = conv(y)
    return convs[-1](y, xq) if add else convs[-1](y)


CASES = [  # (n, ci, ch, co, h, w, stride, expansion, residual sum)
    (2, 8, 48, 8, 9, 11, 1, True, True),
    (3, 16, 96, 24, 12, 13, 2, True, False),
    (2, 24, 144, 24, 8, 6, 2, True, False),
    (1, 32, 32, 16, 10, 10, 1, False, False),
    (2, 12, 12, 12, 7, 9, 1, False, True),
    (2, 6, 36, 6, 1, 7, 1, True, True),
    (1, 8, 16, 8, 5, 1, 2, True, False),
    (1, 20, 120, 20, 1, 1, 1, True, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}-{}-{}-{}-{}x{}-s{}-{}-{}".format(*c))
@pytest.mark.parametrize("band_bytes", [1, 1 << 20], ids=["one-row-bands", "whole-images"])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_fused_block_is_its_layers_integers(monkeypatch, case, band_bytes, threads):
    n, ci, ch, co, h, w, s, expand, add = case
    monkeypatch.setattr(int8_block, "BAND_BYTES", band_bytes)
    convs = _block(NUMBA, 7, ci, ch, co, s, expand, add)
    block = NUMBA.prepare_qlinear_block(convs)
    assert block is not None
    xq = np.random.default_rng(1).integers(0, 256, (n, ci, h, w)).astype(np.uint8)
    saved = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        got = block(xq)
    finally:
        numba.set_num_threads(saved)
    want = _layered(convs, xq, add)
    reference = _layered(_block(REFERENCE, 7, ci, ch, co, s, expand, add), xq, add)
    assert got.dtype == np.uint8 and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(want, reference)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) > 10  # the case reaches many integers, not only the clamps


def test_blocks_the_kernel_does_not_take_are_left_to_the_layers():
    rng = np.random.default_rng(0)
    expand, q = _layer(rng, NUMBA, (0.05, 10), 8, 48, "pointwise")
    dw, q2 = _layer(rng, NUMBA, q, 48, 48, "depthwise")
    proj, _ = _layer(rng, NUMBA, q2, 48, 8, "pointwise", relu6=False)
    assert NUMBA.prepare_qlinear_block([expand, dw, proj]) is not None
    odd, qo = _layer(rng, NUMBA, (0.05, 10), 8, 6, "pointwise")  # 6 hidden channels
    dw6, q6 = _layer(rng, NUMBA, qo, 6, 6, "depthwise")
    proj6, _ = _layer(rng, NUMBA, q6, 6, 8, "pointwise", relu6=False)
    assert NUMBA.prepare_qlinear_block([odd, dw6, proj6]) is None
    mid, _ = _layer(rng, NUMBA, q, 48, 48, "pointwise")
    assert NUMBA.prepare_qlinear_block([expand, mid, proj]) is None  # no depthwise filter
    assert NUMBA.prepare_qlinear_block([dw]) is None
    assert NUMBA.prepare_qlinear_block([lambda x: x, dw, proj]) is None  # not prepared here
    int8_in = NUMBA.prepare_qlinear_conv2d(  # int8 activations in
        np.float32(0.05), np.int8(3), np.int8, np.ones((48, 8, 1, 1), np.int8),
        np.full(48, 0.01, np.float32), np.int8(0), np.zeros(48, np.int32), np.float32(0.1),
        np.uint8(0), 1, 0, 1)
    assert NUMBA.prepare_qlinear_block([int8_in, dw, proj]) is None
    assert REFERENCE.prepare_qlinear_block(_block(REFERENCE, 0, 8, 48, 8, 1)) is None


def test_the_fused_block_checks_its_input():
    block = NUMBA.prepare_qlinear_block(_block(NUMBA, 1, 8, 32, 8, 1, True, False))
    with pytest.raises(TypeError, match=r"prepare_qlinear_block: xq must be .*uint8.*, got "
                                        r"ndarray int8"):
        block(np.zeros((1, 8, 5, 5), np.int8))
    with pytest.raises(ValueError, match="prepare_qlinear_block: .*8"):
        block(np.zeros((1, 7, 5, 5), np.uint8))


@pytest.mark.parametrize("batch", [1, 3])
def test_int8net_with_fused_blocks_is_int8net_layer_by_layer(monkeypatch, batch):
    from benchmarks.int8_inference import build, images
    from tinymbv2.quant.int8_net import _Block

    _, int8, _ = build(48, 2)
    x = images(batch, 48, seed=batch)
    monkeypatch.setattr(_Block, "FUSE", False)
    want = int8.features(x)[0]
    logits = int8(x)
    monkeypatch.setattr(_Block, "FUSE", True)
    got = int8.features(x)[0]
    assert sum(f is not None for step in int8.steps for f in step.fused.values()) == 17
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(int8(x), logits)
