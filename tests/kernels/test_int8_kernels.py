"""The int8 inference kernels (``qlinear_conv2d``, ``qgemm``) of both CPU sets against
onnxruntime: one-node ONNX models (``QLinearConv``, opset 17, and ``com.microsoft.QGemm``) on
the CPUExecutionProvider, the same integers on every output, over drawn shapes (dense 3x3 at
stride 1 and 2 with padding, depthwise 3x3 at stride 1 and 2, pointwise, the Linear), uint8
and int8 activations, per-channel weight scales; the rounding at exact halves (half to even,
as MLAS); the fused ReLU6 clamp; the numba set equal to the reference, at 1 and 2 threads;
the errors for wrong dtypes and shapes."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymbv2.kernels import kernel_set

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
KSETS = pytest.mark.parametrize("kset", [REFERENCE, NUMBA], ids=lambda m: m.name)
ONNX_TYPE = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}


def _session(node, x_name, x, inits, y_dtype, extra_opsets=()):
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(x_name, ONNX_TYPE[x.dtype], x.shape)],
        [helper.make_tensor_value_info("y", ONNX_TYPE[np.dtype(y_dtype)], None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def ort_qlinear_conv(c):
    """onnxruntime's QLinearConv on a case of ``conv_case``."""
    kh, kw = c["wq"].shape[2:]
    (sh, sw), (ph, pw) = c["stride"], c["padding"]
    node = helper.make_node("QLinearConv", ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "b"],
                            ["y"], strides=[sh, sw], pads=[ph, pw, ph, pw], group=c["groups"],
                            kernel_shape=[kh, kw])
    inits = dict(xs=np.float32(c["x_scale"]), xzp=c["x_zero_point"], w=c["wq"], ws=c["w_scale"],
                 wzp=np.zeros(c["w_scale"].shape, np.int8), ys=np.float32(c["y_scale"]),
                 yzp=c["y_zero_point"], b=c["bias_q"])
    sess = _session(node, "x", c["xq"], inits, c["y_zero_point"].dtype)
    return sess.run(None, {"x": c["xq"]})[0]


def ort_qgemm(c):
    """onnxruntime's QGemm (com.microsoft, transB=1) on a case of ``gemm_case``."""
    node = helper.make_node("QGemm", ["a", "as", "azp", "b", "bs", "bzp", "c", "ys", "yzp"], ["y"],
                            domain="com.microsoft", transB=1)
    inits = {"as": np.float32(c["a_scale"]), "azp": c["a_zero_point"], "b": c["bq"],
             "bs": c["b_scale"], "bzp": np.zeros(c["b_scale"].shape, np.int8), "c": c["bias_q"],
             "ys": np.float32(c["y_scale"]), "yzp": c["y_zero_point"]}
    sess = _session(node, "a", c["aq"], inits, c["y_zero_point"].dtype, ["com.microsoft"])
    return sess.run(None, {"a": c["aq"]})[0]


def _quantized(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype), \
        np.array(rng.integers(info.min, info.max + 1), dtype)


@st.composite
def conv_case(draw, kind=None):
    """A QLinearConv case: dense 3x3, depthwise 3x3 or pointwise, with its quantization."""
    kind = kind or draw(st.sampled_from(["dense", "depthwise", "pointwise"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.uint8, np.int8]))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 12))
    h, w = draw(st.integers(1, 19)), draw(st.integers(1, 19))
    k = 1 if kind == "pointwise" else 3
    stride = 1 if kind == "pointwise" else draw(st.sampled_from([1, 2]))
    pad = 0 if kind == "pointwise" else draw(st.sampled_from([0, 1])) if min(h, w) >= 3 else 1
    co, groups = (c, c) if kind == "depthwise" else (draw(st.integers(1, 20)), 1)
    xq, x_zp = _quantized(rng, dtype, (n, c, h, w))
    y_dtype = dtype  # onnxruntime's QLinearConv wants the output's type to be the input's
    wq = rng.integers(-128, 128, (co, c // groups, k, k)).astype(np.int8)
    return dict(xq=xq, x_scale=rng.uniform(0.005, 0.05), x_zero_point=x_zp, wq=wq,
                w_scale=rng.uniform(0.001, 0.02, co).astype(np.float32), bias_q=rng.integers(
                    -20000, 20000, co).astype(np.int32), y_scale=rng.uniform(0.005, 0.3),
                y_zero_point=_quantized(rng, y_dtype, ())[1], stride=(stride, stride),
                padding=(pad, pad), groups=groups)


def run_conv(kset, c, **kw):
    return kset.qlinear_conv2d(c["xq"], c["x_scale"], c["x_zero_point"], c["wq"], c["w_scale"],
                               np.int8(0), c["bias_q"], c["y_scale"], c["y_zero_point"],
                               c["stride"], c["padding"], c["groups"], **kw)


@st.composite
def gemm_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.uint8, np.int8]))
    m, k, n = draw(st.integers(1, 9)), draw(st.integers(1, 300)), draw(st.integers(1, 40))
    aq, a_zp = _quantized(rng, dtype, (m, k))
    return dict(aq=aq, a_scale=rng.uniform(0.005, 0.05), a_zero_point=a_zp,
                bq=rng.integers(-128, 128, (n, k)).astype(np.int8),
                b_scale=rng.uniform(0.001, 0.02, n).astype(np.float32),
                bias_q=rng.integers(-20000, 20000, n).astype(np.int32),
                y_scale=rng.uniform(0.005, 0.3),
                y_zero_point=_quantized(rng, dtype, ())[1])  # onnxruntime: the type of aq


def run_gemm(kset, c, **kw):
    return kset.qgemm(c["aq"], c["a_scale"], c["a_zero_point"], c["bq"], c["b_scale"], np.int8(0),
                      c["bias_q"], c["y_scale"], c["y_zero_point"], **kw)


# ------------------------------------------------------------------ against onnxruntime
@KSETS
@pytest.mark.parametrize("kind", ["dense", "depthwise", "pointwise"])
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_qlinear_conv_equals_onnxruntime(kset, kind, data):
    c = data.draw(conv_case(kind))
    want = ort_qlinear_conv(c)
    got = run_conv(kset, c)
    assert got.dtype == want.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


@KSETS
@settings(max_examples=12, deadline=None)
@given(c=gemm_case())
def test_qgemm_equals_onnxruntime(kset, c):
    want = ort_qgemm(c)
    got = run_gemm(kset, c)
    assert got.dtype == want.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


@KSETS
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_exact_halves_round_to_even_as_onnxruntime(kset, dtype):
    """m = 0.5 exactly: every odd sum is a tie. MLAS rounds half to even (it adds and
    subtracts 1.5 * 2**23); half away from zero would differ on half of them."""
    q = np.arange(0, 120) if dtype == np.uint8 else np.arange(-60, 60)
    c = dict(xq=q.astype(dtype).reshape(120, 1, 1, 1), x_scale=1.0, x_zero_point=np.array(0, dtype),
             wq=np.ones((1, 1, 1, 1), np.int8), w_scale=np.array([0.5], np.float32),
             bias_q=np.zeros(1, np.int32), y_scale=1.0, y_zero_point=np.array(0, dtype),
             stride=(1, 1), padding=(0, 0), groups=1)
    want = ort_qlinear_conv(c)
    np.testing.assert_array_equal(want.ravel(), np.rint(q / 2))
    np.testing.assert_array_equal(run_conv(kset, c), want)


@KSETS
def test_mobilenet_like_shapes_equal_onnxruntime(kset):
    """A stem, an expansion, a depthwise at stride 2 and a projection with K > 512, larger than
    the drawn cases (planes of 29 px, sums of 576 terms)."""
    rng = np.random.default_rng(7)
    for kind, c_in, co, k, s, hw in [("dense", 3, 16, 3, 2, 29), ("pointwise", 16, 96, 1, 1, 15),
                                     ("depthwise", 96, 96, 3, 2, 15),
                                     ("pointwise", 576, 24, 1, 1, 8)]:
        groups = c_in if kind == "depthwise" else 1
        xq, _ = _quantized(rng, np.uint8, (2, c_in, hw, hw))
        c = dict(xq=xq, x_scale=0.02, x_zero_point=np.array(0, np.uint8),
                 wq=rng.integers(-127, 128, (co, c_in // groups, k, k)).astype(np.int8),
                 w_scale=rng.uniform(1e-4, 3e-3, co).astype(np.float32),
                 bias_q=rng.integers(-5000, 5000, co).astype(np.int32), y_scale=0.05,
                 y_zero_point=np.array(0, np.uint8), stride=(s, s), padding=(k // 2,) * 2,
                 groups=groups)
        np.testing.assert_array_equal(run_conv(kset, c), ort_qlinear_conv(c))


def test_depthwise_on_every_stride_and_padding_equals_the_reference():
    """The numba depthwise 3x3 (``int8_depthwise``: padded float32 phase planes, one flat loop
    over each map at stride 1 and 2; other strides go to the reference) against the
    reference, with strides and paddings different along the two axes, odd and even sizes,
    the planes of MobileNetV2 (112, 56, 7 px), the
    largest products (-128 times a centred 255) and ReLU6."""
    rng = np.random.default_rng(11)
    cases = [((1, 1), (1, 1), 112, 3), ((1, 1), (1, 1), 7, 40), ((2, 2), (1, 1), 56, 5),
             ((1, 2), (0, 1), 13, 6), ((2, 1), (1, 0), 12, 6), ((1, 1), (0, 0), 9, 4),
             ((2, 2), (0, 1), 8, 3), ((1, 1), (1, 1), 1, 2)]
    for (stride, padding, hw, c_in), dtype in zip(cases, [np.uint8, np.int8] * 4):
        xq, x_zp = _quantized(rng, dtype, (2, c_in, hw, hw + 1))
        wq = rng.integers(-128, 128, (c_in, 1, 3, 3)).astype(np.int8)
        wq[0] = -128
        xq[0, 0] = np.iinfo(dtype).max
        c = dict(xq=xq, x_scale=0.02, x_zero_point=x_zp, wq=wq,
                 w_scale=rng.uniform(1e-4, 3e-3, c_in).astype(np.float32),
                 bias_q=rng.integers(-5000, 5000, c_in).astype(np.int32), y_scale=0.05,
                 y_zero_point=_quantized(rng, dtype, ())[1], stride=stride, padding=padding,
                 groups=c_in)
        for relu6 in (False, True):
            ours = run_conv(NUMBA, c, relu6=relu6)
            np.testing.assert_array_equal(ours, run_conv(REFERENCE, c, relu6=relu6))
            assert ours.dtype == dtype and ours.flags.c_contiguous


def test_depthwise_in_runs_of_images_equals_the_reference():
    """``int8_depthwise`` copies a run of images at a time (as many as its scratch holds):
    five images whose planes fit four (stride 1) or two (stride 2) to a run, the last run
    short, after a run that left its pixels in the buffer, against the reference."""
    rng = np.random.default_rng(12)
    for stride, padding, hw, dtype in [(1, 1, 60, np.uint8), (2, 1, 80, np.int8),
                                       (1, 0, 61, np.int8), (2, 0, 79, np.uint8)]:
        xq, x_zp = _quantized(rng, dtype, (5, 3, hw, hw + 1))
        c = dict(xq=xq, x_scale=0.02, x_zero_point=x_zp,
                 wq=rng.integers(-128, 128, (3, 1, 3, 3)).astype(np.int8),
                 w_scale=rng.uniform(1e-4, 3e-3, 3).astype(np.float32),
                 bias_q=rng.integers(-5000, 5000, 3).astype(np.int32), y_scale=0.05,
                 y_zero_point=_quantized(rng, dtype, ())[1], stride=(stride, stride),
                 padding=(padding, padding), groups=3)
        np.testing.assert_array_equal(run_conv(NUMBA, c), run_conv(REFERENCE, c))


# ------------------------------------------------------------------ ReLU6, numba == reference
@KSETS
@settings(max_examples=10, deadline=None)
@given(c=conv_case())
def test_relu6_is_the_clamp_of_the_int8_output(kset, c):
    """Quantized ReLU6: the plain output clamped to [z_y, round(6 / s_y) + z_y] (and the type)."""
    plain = run_conv(kset, c).astype(np.int64)
    zp, info = int(c["y_zero_point"]), np.iinfo(c["y_zero_point"].dtype)
    top = min(info.max, int(np.rint(6.0 / c["y_scale"])) + zp)
    np.testing.assert_array_equal(run_conv(kset, c, relu6=True), np.clip(plain, max(zp, info.min), top))


@settings(max_examples=25, deadline=None)
@given(c=conv_case(), g=gemm_case(), relu6=st.booleans())
def test_numba_equals_reference(c, g, relu6):
    np.testing.assert_array_equal(run_conv(NUMBA, c, relu6=relu6), run_conv(REFERENCE, c, relu6=relu6))
    np.testing.assert_array_equal(run_gemm(NUMBA, g, relu6=relu6), run_gemm(REFERENCE, g, relu6=relu6))


def test_numba_is_the_same_at_one_and_two_threads():
    rng = np.random.default_rng(3)
    cases = []
    for kind, c_in, co, k, s, groups in [("dense", 3, 8, 3, 2, 1), ("pointwise", 24, 40, 1, 1, 1),
                                         ("depthwise", 32, 32, 3, 1, 32),
                                         ("depthwise", 32, 32, 3, 2, 32)]:
        xq, x_zp = _quantized(rng, np.int8, (3, c_in, 23, 21))
        cases.append(dict(xq=xq, x_scale=0.03, x_zero_point=x_zp,
                          wq=rng.integers(-127, 128, (co, c_in // groups, k, k)).astype(np.int8),
                          w_scale=rng.uniform(1e-3, 1e-2, co).astype(np.float32),
                          bias_q=rng.integers(-999, 999, co).astype(np.int32), y_scale=0.07,
                          y_zero_point=np.array(-3, np.int8), stride=(s, s),
                          padding=(k // 2, k // 2), groups=groups))
    before = numba.get_num_threads()
    outs = {}
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            outs[threads] = [run_conv(NUMBA, c) for c in cases]
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*outs.values()):
        np.testing.assert_array_equal(a, b)


def test_pointwise_on_a_map_large_enough_for_parallel_quads_equals_the_reference():
    """A pointwise input of at least ``_PARALLEL_QUADS`` quad words (laid out by
    ``_quads_parallel`` on VNNI), 22 channels (a last quad of two), equals the reference at
    one and two threads."""
    from tinymbv2.kernels.numba.int8 import _PARALLEL_QUADS
    rng = np.random.default_rng(21)
    n, c_in, co, h, w = 2, 22, 8, 112, 100
    assert n * ((c_in + 3) // 4) * (h * w + -(h * w) % 64) >= _PARALLEL_QUADS
    xq, x_zp = _quantized(rng, np.uint8, (n, c_in, h, w))
    c = dict(xq=xq, x_scale=0.02, x_zero_point=x_zp,
             wq=rng.integers(-128, 128, (co, c_in, 1, 1)).astype(np.int8),
             w_scale=rng.uniform(1e-4, 3e-3, co).astype(np.float32),
             bias_q=rng.integers(-5000, 5000, co).astype(np.int32), y_scale=0.05,
             y_zero_point=np.array(7, np.uint8), stride=(1, 1), padding=(0, 0), groups=1)
    want = run_conv(REFERENCE, c)
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            np.testing.assert_array_equal(run_conv(NUMBA, c), want)
    finally:
        numba.set_num_threads(before)


# ------------------------------------------------------------------ errors
def _good_conv():
    return dict(xq=np.zeros((1, 4, 5, 5), np.uint8), x_scale=0.1, x_zero_point=np.uint8(0),
                wq=np.zeros((6, 4, 3, 3), np.int8), w_scale=np.full(6, 0.01, np.float32),
                bias_q=np.zeros(6, np.int32), y_scale=0.1, y_zero_point=np.uint8(0),
                stride=(1, 1), padding=(1, 1), groups=1)


@KSETS
@pytest.mark.parametrize("change, error, words", [
    (dict(xq=np.zeros((1, 4, 5, 5), np.float32)), TypeError, "xq must be int8 or uint8"),
    (dict(wq=np.zeros((6, 4, 3, 3), np.uint8)), TypeError, "weights must be int8"),
    (dict(bias_q=np.zeros(6, np.int64)), TypeError, "bias_q must be int32 of shape (6,)"),
    (dict(bias_q=np.zeros(5, np.int32)), TypeError, "bias_q must be int32 of shape (6,)"),
    (dict(x_zero_point=np.int8(0)), TypeError, "x_zero_point must be uint8"),
    (dict(y_zero_point=np.int32(0)), TypeError, "y_zero_point must be int8 or uint8"),
    (dict(w_scale=np.full(5, 0.01, np.float32)), ValueError, "w_scale must be a scalar or a (6,)"),
    (dict(y_scale=0.0), ValueError, "y_scale must be positive"),
    (dict(wq=np.zeros((6, 3, 3, 3), np.int8)), ValueError, "expect 3 input channels"),
    (dict(xq=np.zeros((4, 5, 5), np.uint8)), ValueError, "xq must be 4-D"),
    (dict(groups=3), ValueError, "groups must divide"),
])
def test_conv_errors_name_what_was_expected(kset, change, error, words):
    c = {**_good_conv(), **change}
    with pytest.raises(error, match="qlinear_conv2d") as info:
        run_conv(kset, c)
    assert words in str(info.value)


@KSETS
def test_weight_zero_point_must_be_zero(kset):
    c = _good_conv()
    with pytest.raises(ValueError, match="w_zero_point must be int8 zeros"):
        kset.qlinear_conv2d(c["xq"], 0.1, c["x_zero_point"], c["wq"], c["w_scale"], np.int8(1),
                            None, 0.1, c["y_zero_point"], 1, 1, 1)


@KSETS
def test_gemm_errors_name_what_was_expected(kset):
    a, b = np.zeros((2, 5), np.uint8), np.zeros((3, 4), np.int8)
    with pytest.raises(ValueError, match=r"qgemm: aq \(M, K\) and bq \(N, K\) must share K"):
        kset.qgemm(a, 0.1, np.uint8(0), b, 0.1, np.int8(0), None, 0.1, np.uint8(0))
    with pytest.raises(TypeError, match="qgemm: aq must be int8 or uint8, got float64"):
        kset.qgemm(np.zeros((2, 4)), 0.1, np.uint8(0), b, 0.1, np.int8(0), None, 0.1, np.uint8(0))


@settings(max_examples=15, deadline=None)
@given(c=conv_case(), g=gemm_case())
def test_numba_without_vnni_equals_reference(c, g):
    """The int16 GEMM that CPUs without AVX-512 VNNI run (``int8.VNNI`` off), the same
    integers as the reference."""
    from tinymbv2.kernels.numba import int8 as numba_int8
    saved = numba_int8.VNNI
    numba_int8.VNNI = False
    try:
        np.testing.assert_array_equal(run_conv(NUMBA, c), run_conv(REFERENCE, c))
        np.testing.assert_array_equal(run_gemm(NUMBA, g), run_gemm(REFERENCE, g))
    finally:
        numba_int8.VNNI = saved


def test_vnni_is_what_this_cpu_offers():
    """``int8_dot.VNNI`` follows the features Numba compiles for (the intrinsics are emitted
    only there)."""
    from tinymbv2.kernels.numba.int8_dot import VNNI
    from tinymbv2.kernels.numba.llvm import target_features
    assert VNNI == ({"+avx512vnni", "+avx512vl"} <= set(target_features()))


# ------------------------------------------------------------------ prepared once
def prepare_conv(kset, c, x_dtype=None, **kw):
    return kset.prepare_qlinear_conv2d(
        c["x_scale"], c["x_zero_point"], c["xq"].dtype if x_dtype is None else x_dtype, c["wq"],
        c["w_scale"], np.int8(0), c["bias_q"], c["y_scale"], c["y_zero_point"], c["stride"],
        c["padding"], c["groups"], **kw)


@KSETS
@pytest.mark.parametrize("vnni", [True, False])
@settings(max_examples=15, deadline=None)
@given(c=conv_case(), relu6=st.booleans(), data=st.data())
def test_prepared_conv_equals_qlinear_conv2d_on_every_input(kset, vnni, c, relu6, data):
    """One prepared convolution run on two inputs of other batch and spatial sizes: each the
    integers of ``qlinear_conv2d`` (the numba set's GEMM with and without VNNI)."""
    from tinymbv2.kernels.numba import int8 as numba_int8
    saved = numba_int8.VNNI
    numba_int8.VNNI = vnni and saved
    try:
        conv = prepare_conv(kset, c, relu6=relu6)
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        for n, h, w in [c["xq"].shape[:1] + c["xq"].shape[2:],
                        (data.draw(st.integers(1, 3)), data.draw(st.integers(3, 17)),
                         data.draw(st.integers(3, 17)))]:
            info = np.iinfo(c["xq"].dtype)
            xq = rng.integers(info.min, info.max + 1, (n, c["xq"].shape[1], h, w)).astype(
                c["xq"].dtype)
            got = conv(xq)
            want = run_conv(REFERENCE, {**c, "xq": xq}, relu6=relu6)
            assert got.dtype == want.dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want)
    finally:
        numba_int8.VNNI = saved


@KSETS
def test_prepared_conv_checks_its_arguments_once_and_each_input(kset):
    c = _good_conv()
    with pytest.raises(TypeError, match="prepare_qlinear_conv2d: the weights must be int8"):
        prepare_conv(kset, {**c, "wq": c["wq"].astype(np.uint8)})
    with pytest.raises(TypeError, match="prepare_qlinear_conv2d: x_dtype must be int8 or uint8, "
                                        "got float32"):
        prepare_conv(kset, c, x_dtype=np.float32)
    with pytest.raises(TypeError, match="x_zero_point must be int8"):
        prepare_conv(kset, c, x_dtype=np.int8)
    conv = prepare_conv(kset, c)
    with pytest.raises(TypeError, match=r"xq must be .*uint8, got ndarray int8"):
        conv(np.zeros((1, 4, 5, 5), np.int8))
    with pytest.raises(ValueError, match=r"xq must be \(N, 4, H, W\), got \(1, 3, 5, 5\)"):
        conv(np.zeros((1, 3, 5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"smaller than the kernel"):
        prepare_conv(kset, {**c, "padding": (0, 0)})(np.zeros((1, 4, 2, 5), np.uint8))


@KSETS
@pytest.mark.parametrize("vnni", [True, False])
@pytest.mark.parametrize("kind", ["pointwise", "dense", "depthwise"])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_prepared_conv_with_a_residual_is_qlinear_add_of_its_output(kset, vnni, kind, data):
    """``residual=``: the reference's QLinearAdd of aq and the convolution's output, the same
    integers (the numba set's pointwise GEMM does it in its epilogue)."""
    from hypothesis import assume
    from tinymbv2.kernels.numba import int8 as numba_int8
    c = data.draw(conv_case(kind))
    assume(c["xq"].dtype == np.uint8)  # QLinearAdd is on uint8 tensors
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    relu6 = data.draw(st.booleans())
    residual = (np.float32(rng.uniform(0.01, 0.2)), np.uint8(rng.integers(0, 256)),
                np.float32(rng.uniform(0.01, 0.3)), np.uint8(rng.integers(0, 256)))
    saved = numba_int8.VNNI
    numba_int8.VNNI = vnni and saved
    try:
        conv = prepare_conv(kset, c, relu6=relu6, residual=residual)
        y = run_conv(REFERENCE, c, relu6=relu6)
        aq = rng.integers(0, 256, y.shape).astype(np.uint8)
        got = conv(c["xq"], aq)
    finally:
        numba_int8.VNNI = saved
    want = REFERENCE.qlinear_add(aq, residual[0], residual[1], y, c["y_scale"],
                                 c["y_zero_point"], residual[2], residual[3])
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


@KSETS
def test_prepared_residual_errors_name_what_was_expected(kset):
    c = _good_conv()
    residual = (np.float32(0.1), np.uint8(3), np.float32(0.2), np.uint8(5))
    with pytest.raises(ValueError, match="prepare_qlinear_conv2d: an aq .* without residual="):
        prepare_conv(kset, c)(c["xq"], np.zeros((1, 6, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="residual must be .* got 2 values"):
        prepare_conv(kset, c, residual=residual[:2])
    with pytest.raises(TypeError, match="bq must be uint8, got int8"):
        prepare_conv(kset, {**c, "y_zero_point": np.int8(0)}, residual=residual)
    conv = prepare_conv(kset, c, residual=residual)
    with pytest.raises(ValueError, match=r"6, 5, 5\)|one shape"):
        conv(c["xq"], np.zeros((1, 6, 5, 4), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        conv(c["xq"], np.zeros((1, 6, 5, 5), np.int8))
