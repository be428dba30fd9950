"""The CPU kernel sets against PyTorch, against each other, and on their contracts.

Every kernel of every set is checked in float64 against ``torch.nn.functional``
(gradients through ``torch.autograd.grad`` with a *random* upstream gradient:
a check through ``.sum()`` would miss a wrong BatchNorm input gradient, which
is exactly zero for ``sum(BN(x))``), over shapes, kernel sizes (odd, even,
non-square), strides and paddings drawn by hypothesis. The numba set is also
checked against the reference set in float32, for determinism, dtype
preservation and non-contiguous inputs; and, in fresh processes, for its
one-thread-pool set-up (SciPy's BLAS pinned, NumPy's untouched, Numba's
OpenMP pool passive).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_cases import EPS, all_kernel_calls, three_runs
from tinymbv2.kernels import FUSED_KERNELS, SIMPLE_KERNELS, kernel_set
from tinymbv2.kernels.numba.layout import is_channels_last

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
SETS = [REFERENCE, NUMBA]
KSETS = pytest.mark.parametrize("kset", SETS, ids=lambda m: m.name)
FEW = settings(max_examples=30, deadline=None)
TOL64 = 1e-10  # float64 against torch
TOL32 = 1e-4  # float32, numba against reference


def rel_err(a, b, floor=1e-300):
    """max |a - b| / max(max |b|, floor): an error relative to the size of the answer.

    ``floor`` turns it into an absolute error for answers smaller than it: a
    sum of unit-sized float32 terms that happens to cancel to 0.001 carries
    rounding errors of the size of its terms, not of its result.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if b.size == 0:
        return 0.0
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor))


def assert_close(got, want, tol, what="", floor=1e-300):
    err = rel_err(got, want, floor)
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol:g}"


def t(a, grad=False):
    return torch.tensor(a, requires_grad=grad)


# --------------------------------------------------------------- strategies
@st.composite
def conv_cases(draw, depthwise=False):
    """(x, w, stride, padding) with H + 2p >= k, float64, from a drawn seed."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h0, w0 = max(1, kh - 2 * padding[0]), max(1, kw - 2 * padding[1])
    h, w = draw(st.integers(h0, h0 + 9)), draw(st.integers(w0, w0 + 9))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    co = c if depthwise else draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((co, 1 if depthwise else c, kh, kw))
    return x, wt, stride, padding


@st.composite
def bn_cases(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    # M = n*h*w values per channel. M = 1: torch refuses. M = 2: x-hat is +-1
    # whatever x is, so the true gx is ~eps/var times gy and a relative
    # comparison measures only cancellation noise.
    if n * h * w < 3:
        w += 3 - n * h * w
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # A mean far from 0 (in units of the spread) tests the variance for
    # cancellation; beyond ~30 spreads the input itself carries too few
    # digits for a 1e-10 comparison, whatever the kernel does.
    scale = draw(st.sampled_from([1e-2, 1.0, 30.0]))
    offset = draw(st.sampled_from([0.0, 5.0, -30.0]))
    x = (rng.standard_normal((n, c, h, w)) + offset) * scale
    return x, rng.standard_normal(c), rng.standard_normal(c), rng


# ------------------------------------------------------------ against torch
def torch_conv(x, w, stride, padding, groups, rng):
    xt, wt = t(x, True), t(w, True)
    y = F.conv2d(xt, wt, stride=stride, padding=padding, groups=groups)
    gy = rng.standard_normal(tuple(y.shape))
    gx, gw = torch.autograd.grad(y, (xt, wt), t(gy))
    return y.detach().numpy(), gy, gx.numpy(), gw.numpy()


@KSETS
@FEW
@given(case=conv_cases())
def test_conv2d_matches_torch(kset, case):
    x, w, stride, padding = case
    y, gy, gx, gw = torch_conv(x, w, stride, padding, 1, np.random.default_rng(0))
    assert_close(kset.conv2d_forward(x, w, stride, padding), y, TOL64, "forward")
    assert_close(kset.conv2d_backward_input(gy, w, x.shape, stride, padding), gx, TOL64, "backward_input")
    assert_close(kset.conv2d_backward_weight(gy, x, w.shape, stride, padding), gw, TOL64, "backward_weight")


@KSETS
@FEW
@given(case=conv_cases(depthwise=True))
def test_depthwise_conv2d_matches_torch(kset, case):
    x, w, stride, padding = case
    y, gy, gx, gw = torch_conv(x, w, stride, padding, x.shape[1], np.random.default_rng(1))
    assert_close(kset.depthwise_conv2d_forward(x, w, stride, padding), y, TOL64, "forward")
    assert_close(kset.depthwise_conv2d_backward_input(gy, w, x.shape, stride, padding), gx, TOL64, "backward_input")
    assert_close(kset.depthwise_conv2d_backward_weight(gy, x, w.shape, stride, padding), gw, TOL64, "backward_weight")


@KSETS
@FEW
@given(
    n=st.integers(1, 3), ci=st.integers(1, 9), co=st.integers(1, 9),
    h=st.integers(1, 8), w=st.integers(1, 8), seed=st.integers(0, 2**32 - 1),
)
def test_pointwise_conv2d_matches_torch(kset, n, ci, co, h, w, seed):
    rng = np.random.default_rng(seed)
    x, wt = rng.standard_normal((n, ci, h, w)), rng.standard_normal((co, ci, 1, 1))
    y, gy, gx, gw = torch_conv(x, wt, 1, 0, 1, rng)
    assert_close(kset.pointwise_conv2d_forward(x, wt), y, TOL64, "forward")
    assert_close(kset.pointwise_conv2d_backward_input(gy, wt), gx, TOL64, "backward_input")
    assert_close(kset.pointwise_conv2d_backward_weight(gy, x), gw, TOL64, "backward_weight")


@KSETS
@FEW
@given(case=bn_cases())
def test_batch_norm_train_matches_torch(kset, case):
    x, weight, bias, rng = case
    xt, wt, bt = t(x, True), t(weight, True), t(bias, True)
    y = F.batch_norm(xt, None, None, wt, bt, training=True, eps=EPS)
    gy = rng.standard_normal(x.shape)
    gx, gw, gb = torch.autograd.grad(y, (xt, wt, bt), t(gy))
    var = x.var(axis=(0, 2, 3))  # biased, as BatchNorm normalises with

    out, mean, invstd = kset.batch_norm_forward_train(x, weight, bias, EPS)
    assert_close(out, y.detach().numpy(), TOL64, "y")
    assert_close(mean, x.mean(axis=(0, 2, 3)), TOL64, "mean")
    assert_close(invstd, 1 / np.sqrt(var + EPS), TOL64, "invstd")
    kgx, kgw, kgb = kset.batch_norm_backward_train(gy, x, mean, invstd, weight)
    assert_close(kgx, gx.numpy(), TOL64, "gx")
    assert_close(kgw, gw.numpy(), TOL64, "gweight")
    assert_close(kgb, gb.numpy(), TOL64, "gbias")


@KSETS
@FEW
@given(case=bn_cases())
def test_batch_norm_eval_matches_torch(kset, case):
    x, weight, bias, rng = case
    c = x.shape[1]
    mean, var = rng.standard_normal(c), rng.uniform(0.1, 3.0, c)
    y = F.batch_norm(t(x), t(mean), t(var), t(weight), t(bias), training=False, eps=EPS)
    assert_close(kset.batch_norm_forward_eval(x, mean, var, weight, bias, EPS), y.numpy(), TOL64, "y")


# one call of every kernel: tests/kernel_cases.py


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def random_problem(rng, dtype, shape=(2, 3, 9, 8), k=(3, 3), co=4, cp=5):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((co, shape[1]) + k).astype(dtype)
    wd = rng.standard_normal((shape[1], 1) + k).astype(dtype)
    wp = rng.standard_normal((cp, shape[1], 1, 1)).astype(dtype)
    return x, w, wd, wp


# ---------------------------------------------- numba against reference, float32
@FEW
@given(case=conv_cases(), seed=st.integers(0, 2**32 - 1))
def test_numba_matches_reference_float32(case, seed):
    x, w, stride, padding = case
    rng = np.random.default_rng(seed)
    x, w = x.astype(np.float32), w.astype(np.float32)
    wd = rng.standard_normal((x.shape[1], 1) + w.shape[2:]).astype(np.float32)
    wp = rng.standard_normal((3, x.shape[1], 1, 1)).astype(np.float32)
    few_values = x.shape[0] * x.shape[2] * x.shape[3] < 3  # BN gx ~ 0: see bn_cases
    for name, args in all_kernel_calls(x, w, wd, wp, stride, padding, rng).items():
        if few_values and name == "batch_norm_backward_train":
            continue
        want = as_tuple(getattr(REFERENCE, name)(*args))
        got = as_tuple(getattr(NUMBA, name)(*args))
        for k, (a, b) in enumerate(zip(got, want)):
            assert a.dtype == np.float32
            assert_close(a, b, TOL32, f"{name}[{k}]", floor=1.0)  # inputs are unit normal


def test_numba_matches_reference_mobilenet_shapes_float32():
    """The shapes MobileNetV2 runs: 3x3 depthwise s1/s2 p1, 3x3 stem s2 p1, 1x1."""
    rng = np.random.default_rng(7)
    for stride in [(1, 1), (2, 2)]:
        x, w, wd, wp = random_problem(rng, np.float32, shape=(2, 16, 28, 28), co=8, cp=24)
        for name, args in all_kernel_calls(x, w, wd, wp, stride, (1, 1), rng).items():
            want = as_tuple(getattr(REFERENCE, name)(*args))
            for k, (a, b) in enumerate(zip(as_tuple(getattr(NUMBA, name)(*args)), want)):
                assert_close(a, b, TOL32, f"{name}[{k}] stride {stride}", floor=1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_matches_reference_batch_norm_relu6(dtype):
    """The fused BatchNorm + ReLU6 kernels (relu6=True) and BatchNorm + ReLU (relu=True),
    numba against reference; the mask is recomputed the same way in both, so float64
    agrees to rounding."""
    from kernel_cases import fused_kernel_calls

    rng = np.random.default_rng(11)
    x = (rng.standard_normal((4, 12, 9, 7)) * 2 + 0.5).astype(dtype)
    tol = 1e-13 if dtype == np.float64 else TOL32
    for label, (name, args, kw) in fused_kernel_calls(x, rng).items():
        want = as_tuple(getattr(REFERENCE, name)(*args, **kw))
        got = as_tuple(getattr(NUMBA, name)(*args, **kw))
        top = 6 if "relu6" in label else np.inf
        assert 0 <= want[0].min() and want[0].max() <= top or "backward" in label
        if label == "batch_norm_forward_train[relu]":  # the ReLU clamps some, and none at 6
            assert (want[0] == 0).any() and want[0].max() > 6
        for k, (a, b) in enumerate(zip(got, want)):
            assert a.dtype == dtype
            assert_close(a, b, tol, f"{label}[{k}]", floor=1.0)


# ------------------------------------------------------------------ contracts
def test_both_sets_define_the_interface():
    for kset in SETS:
        assert all(callable(getattr(kset, n, None)) for n in SIMPLE_KERNELS + FUSED_KERNELS), kset.name
    assert (REFERENCE.name, NUMBA.name) == ("reference", "numba")
    assert kernel_set("numba") is NUMBA  # one instance per set


def test_numba_is_deterministic():
    """Bit-identical results on repeated runs, and with 1 thread as with all of them."""
    rng = np.random.default_rng(3)
    x, w, wd, wp = random_problem(rng, np.float32, shape=(4, 24, 30, 30), co=8, cp=16)
    calls = all_kernel_calls(x, w, wd, wp, (1, 1), (1, 1), rng)
    calls2 = all_kernel_calls(x, w, wd, wp, (2, 2), (1, 1), rng)
    calls.update({k + " s2": v for k, v in calls2.items() if "conv2d" in k})
    for plane in (1, 2):  # the small-plane paths: contiguous-row BatchNorm, one gathered GEMM
        xs, ws, wds, wps = random_problem(rng, np.float32, shape=(16, 40, plane, plane), co=8,
                                          cp=24)
        small = all_kernel_calls(xs, ws, wds, wps, (1, 1), (1, 1), rng)
        calls.update({f"{k} {plane}x{plane}": v for k, v in small.items()})

    def run_all():
        return {k: as_tuple(getattr(NUMBA, k.split()[0])(*a)) for k, a in calls.items()}

    first, second, single = three_runs(run_all)
    for k in calls:  # (set_num_threads steers Numba's loops; scipy BLAS pinned to 1 thread inside numba)
        for a, b, c in zip(first[k], second[k], single[k]):
            assert a.tobytes() == b.tobytes(), f"{k} differs between runs"
            assert a.tobytes() == c.tobytes(), f"{k} depends on Numba's thread count"


@KSETS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_outputs_contiguous(kset, dtype):
    """Outputs are C-contiguous, or channels-last where the numba set keeps small
    planes channels-last (kernels/numba/layout.py); never an arbitrary strided view."""
    rng = np.random.default_rng(4)
    x, w, wd, wp = random_problem(rng, dtype)
    for name, args in all_kernel_calls(x, w, wd, wp, (2, 1), (1, 0), rng).items():
        for out in as_tuple(getattr(kset, name)(*args)):
            assert out.dtype == dtype, f"{name}: {out.dtype}"
            assert out.flags.c_contiguous or (kset is NUMBA and is_channels_last(out)), name


@KSETS
def test_mixed_dtypes_raise(kset):
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(TypeError, match="depthwise_conv2d_forward"):
        kset.depthwise_conv2d_forward(x, np.zeros((2, 1, 3, 3)), (1, 1), (1, 1))
    with pytest.raises(TypeError, match="pointwise_conv2d_forward"):
        kset.pointwise_conv2d_forward(x.astype(np.int64), np.zeros((3, 2, 1, 1), np.int64))
    c = np.ones(2, np.float32)
    with pytest.raises(TypeError, match="batch_norm_forward_train"):
        kset.batch_norm_forward_train(x, c, c.astype(np.float64), EPS)


@KSETS
def test_bad_shapes_raise_value_error_naming_the_kernel(kset):
    x = np.zeros((1, 2, 5, 5))
    with pytest.raises(ValueError, match="conv2d_forward.*3 input channels"):
        kset.conv2d_forward(x, np.zeros((4, 3, 3, 3)), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="does not fit"):
        kset.depthwise_conv2d_forward(x, np.zeros((2, 1, 7, 3)), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="stride"):
        kset.conv2d_forward(x, np.zeros((4, 2, 3, 3)), (0, 1), (0, 0))
    with pytest.raises(ValueError, match="gy must have shape"):
        kset.conv2d_backward_input(np.zeros((1, 4, 2, 2)), np.zeros((4, 2, 3, 3)), x.shape, (1, 1), (0, 0))
    with pytest.raises(ValueError, match="batch_norm_forward_eval.*var"):
        kset.batch_norm_forward_eval(x, np.zeros(2), np.zeros(3), np.zeros(2), np.zeros(2), EPS)
    with pytest.raises(ValueError, match="batch_norm_forward_train.*no values"):
        kset.batch_norm_forward_train(np.zeros((0, 2, 3, 3)), np.ones(2), np.zeros(2), EPS)
    with pytest.raises(ValueError, match="pointwise_conv2d_forward.*w must have shape"):
        kset.pointwise_conv2d_forward(x, np.zeros((4, 3, 1, 1)))
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ, a \(2, 3\) @ b \(4, 5\)"):
        kset.matmul(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="matmul: b must be 2-D"):
        kset.matmul(np.zeros((2, 3)), np.zeros(3))
    c = np.ones(2)
    with pytest.raises(ValueError, match="batch_norm_backward_train: relu6=True needs the bias"):
        kset.batch_norm_backward_train(x, x, c, c, c, relu6=True)
    with pytest.raises(ValueError, match="batch_norm_backward_train: relu=True needs the bias"):
        kset.batch_norm_backward_train(x, x, c, c, c, relu=True)
    with pytest.raises(ValueError, match="batch_norm_forward_train: expected at most one of relu6 and relu"):
        kset.batch_norm_forward_train(x, c, c, EPS, relu6=True, relu=True)


@KSETS
def test_non_contiguous_inputs(kset):
    """Strided views and Fortran-ordered arrays give the contiguous answer."""
    rng = np.random.default_rng(5)
    x, w, wd, wp = random_problem(rng, np.float64, shape=(2, 3, 9, 8))
    calls = all_kernel_calls(x, w, wd, wp, (2, 1), (1, 1), rng)

    def strided(a):
        if not isinstance(a, np.ndarray) or a.ndim == 0:
            return a
        big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view

    for make in (strided, lambda a: np.asfortranarray(a) if isinstance(a, np.ndarray) else a):
        for name, args in calls.items():
            odd_args = tuple(make(a) for a in args)
            assert any(isinstance(a, np.ndarray) and not a.flags.c_contiguous for a in odd_args)
            want = as_tuple(getattr(kset, name)(*args))
            got = as_tuple(getattr(kset, name)(*odd_args))
            for a, b in zip(got, want):
                assert_close(a, b, 1e-13, name)


@pytest.mark.parametrize("m,k,n", [(70, 150, 40), (8, 1280, 1000), (600, 33, 530), (3, 9, 5)])
@pytest.mark.parametrize("b_layout", ["transposed", "C"])
def test_numba_matmul_matches_numpy_and_is_deterministic(m, k, n, b_layout):
    """The two loops of kernels/numba/matmul.py (dot products for ``a @ W.T`` with at least MIN_SUM
    terms, output tiles of the broadcast form otherwise): the same answer as NumPy,
    bit-identical from run to run and with one thread or two."""
    import numba

    rng = np.random.default_rng(12)
    a = rng.standard_normal((m, k))
    b = rng.standard_normal((n, k)).T if b_layout == "transposed" else rng.standard_normal((k, n))
    got = NUMBA.matmul(a, b)
    assert got.flags.c_contiguous and got.shape == (m, n)
    assert_close(got, a @ b, 1e-13, "matmul")
    assert_close(NUMBA.matmul(np.asfortranarray(a), b), a @ b, 1e-13, "Fortran-order a")
    assert_close(NUMBA.matmul(a[:, ::-1], b[::-1]), a @ b, 1e-13, "negative strides")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = NUMBA.matmul(a, b)
    finally:
        numba.set_num_threads(before)
    assert got.tobytes() == NUMBA.matmul(a, b).tobytes() == one.tobytes()
