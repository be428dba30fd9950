"""The GPU path (issue 7): the cupy kernel set and device plumbing.

Without CuPy or without a CUDA GPU every GPU test is skipped with the reason
"CuPy with a CUDA GPU is not available"; the CPU-side checks below still run.
On a GPU every simple kernel of the CuPy set (:mod:`tinymbv2.kernels.cupy`) is checked
against the reference set (float64 to 1e-10, float32 to 1e-4) over drawn shapes, kernel
sizes, strides and paddings, with both GEMM routes of :mod:`tinymbv2.kernels.cupy.gemm`,
and the fused kernels it inherits against the reference set's; ops, the whole network and
the optimizers on "cuda" are in ``test_gpu_model.py``.
hypothesis is optional here (the GPU image may lack it): seeded cases always run.
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor
from kernel_cases import EPS, all_kernel_calls, fused_kernel_calls
from tinymbv2.kernels import FUSED_KERNELS, SIMPLE_KERNELS, kernel_set, kernels_for
from tinymbv2.kernels.reference import ReferenceKernels

REFERENCE = kernel_set("reference")
CUPY_DIR = Path(tinymbv2.__file__).parent / "kernels" / "cupy"


def load_cublas_args():
    """kernels/cupy/cublas_args.py, loaded from its file: it imports nothing from the package
    (nor CuPy), so it runs here even where ``import tinymbv2.kernels.cupy`` needs CuPy."""
    spec = importlib.util.spec_from_file_location("cublas_args", CUPY_DIR / "cublas_args.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cublas_args = load_cublas_args()
OP_N, gemm_args = cublas_args.OP_N, cublas_args.gemm_args


def gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "no GPU"
        return False


GPU = gpu_available()
REASON = "CuPy with a CUDA GPU is not available"
needs_gpu = pytest.mark.skipif(not GPU, reason=REASON)
if GPU:
    import cupy as cp

    from tinymbv2.kernels.cupy import CupyKernels
    from tinymbv2.kernels.cupy import common as cupy_common

    CUPY = kernel_set("cupy")
try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:
    given = None


def rel(a, b, floor=1e-300):
    """max |a - b| / max(max |b|, floor)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return 0.0 if b.size == 0 else float(np.abs(a - b).max() / max(np.abs(b).max(), floor))


@contextlib.contextmanager
def gemm_route(route):
    """Run the block with TINYMBV2_CUPY_GEMM=route ("cublas" direct, or "matmul")."""
    old = os.environ.get("TINYMBV2_CUPY_GEMM")
    os.environ["TINYMBV2_CUPY_GEMM"] = route
    try:
        yield
    finally:
        if old is None:
            del os.environ["TINYMBV2_CUPY_GEMM"]
        else:
            os.environ["TINYMBV2_CUPY_GEMM"] = old


# ------------------------------------------------------------------ CPU side
def emulate_gemm(p, A, B, C):
    """cublas<t>gemmStridedBatched by its definition: column-major, flat buffers."""
    assert p.lda >= (p.m if p.transa == OP_N else p.k) and p.ldc >= p.m
    assert p.ldb >= (p.k if p.transb == OP_N else p.n)
    r, k, c = np.arange(p.m)[:, None], np.arange(p.k), np.arange(p.n)[None, :]
    for i in range(p.batch):
        a = A[i * p.stride_a + (r + k * p.lda if p.transa == OP_N else k + r * p.lda)]
        b = B[i * p.stride_b + (k[:, None] + c * p.ldb if p.transb == OP_N else c + k[:, None] * p.ldb)]
        C[i * p.stride_c + r + c * p.ldc] = a @ b


@pytest.mark.parametrize("ta, tb, a_batched, b_batched", list(itertools.product([0, 1], repeat=4)))
def test_cublas_arguments_give_the_row_major_product(ta, tb, a_batched, b_batched):
    """The one piece of the GPU GEMM that is plain Python, checked on any machine."""
    rng = np.random.default_rng(0)
    nb, m, k, n = 3, 4, 5, 6
    a = rng.standard_normal(((nb,) if a_batched else ()) + ((k, m) if ta else (m, k)))
    b = rng.standard_normal(((nb,) if b_batched else ()) + ((n, k) if tb else (k, n)))
    p = gemm_args(a.shape, bool(ta), b.shape, bool(tb))
    out = np.zeros(int(np.prod(p.out_shape)))
    emulate_gemm(p, b.ravel(), a.ravel(), out)  # cuBLAS's A is our b (see cublas_args)
    want = (a.swapaxes(-1, -2) if ta else a) @ (b.swapaxes(-1, -2) if tb else b)
    np.testing.assert_allclose(out.reshape(p.out_shape), np.broadcast_to(want, p.out_shape), rtol=1e-13)


def test_importing_tinymbv2_needs_no_cupy():
    code = ("import sys, tinymbv2, tinymbv2.models, tinymbv2.optim, tinymbv2.nn; "
            "assert 'cupy' not in sys.modules and 'tinymbv2.kernels.cupy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(GPU, reason="a GPU is present: Tensor.to('cuda') works here")
def test_tensor_to_cuda_without_a_gpu_says_what_is_missing():
    t = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"CuPy with a CUDA GPU is needed for 'cuda' "
                                           r"\(pip install -e \.\[gpu\]\); cupy import failed"):
        t.to("cuda")
    assert t.to("cpu") is t and t.cpu() is t


def test_torch_port_equals_torchvision():
    """benchmarks/torch_port.py (the PyTorch side where torchvision is missing) is torchvision."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks/
    from benchmarks.torch_port import torch_port
    from tinymbv2.models import mobilenet_v2

    model = mobilenet_v2(0.35, 10, seed=0).double().train()
    model.classifier[0].eval()
    port = torch_port(model)
    tv = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10).double()
    tv.load_state_dict(port.state_dict())
    tv.train().classifier[0].eval()
    assert list(port.state_dict()) == list(tv.state_dict())
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 64, 64)))
    y, ty = port(x), tv(x)
    g = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(y.shape)))
    y.backward(g)
    ty.backward(g)
    assert torch.equal(y, ty)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(port.parameters(), tv.parameters()))


# ------------------------------------------------------------ kernel cases
def case_params(draw_int):
    """Shapes as tests/kernels/test_kernels.py draws them; ``draw_int(lo, hi)`` is inclusive."""
    kh, kw = draw_int(1, 5), draw_int(1, 5)
    stride, padding = (draw_int(1, 3), draw_int(1, 3)), (draw_int(0, 2), draw_int(0, 2))
    h0, w0 = max(1, kh - 2 * padding[0]), max(1, kw - 2 * padding[1])
    shape = (draw_int(1, 3), draw_int(1, 4), draw_int(h0, h0 + 9), draw_int(w0, w0 + 9))
    return dict(shape=shape, k=(kh, kw), stride=stride, padding=padding,
                co=draw_int(1, 4), cp=draw_int(1, 4), seed=draw_int(0, 2**31 - 1))


def kernel_calls(p, dtype):
    """{label: (kernel name, args, kwargs)}: all fifteen kernels, and BatchNorm fused
    with ReLU6, on one random problem."""
    rng = np.random.default_rng(p["seed"])
    (n, c, h, w), (kh, kw) = p["shape"], p["k"]

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x, wt, wd, wp = r(n, c, h, w), r(p["co"], c, kh, kw), r(c, 1, kh, kw), r(p["cp"], c, 1, 1)
    calls = {name: (name, args, {}) for name, args in
             all_kernel_calls(x, wt, wd, wp, p["stride"], p["padding"], rng).items()}
    return {**calls, **fused_kernel_calls(x, rng)}


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def on_gpu(args):
    return tuple(cp.asarray(a) if isinstance(a, np.ndarray) else a for a in args)


def check_against_reference(p, dtype):
    tol, floor = (1e-10, 1e-300) if dtype == np.float64 else (1e-4, 1.0)  # float32: unit inputs
    few = p["shape"][0] * p["shape"][2] * p["shape"][3] < 3  # BN gx ~ 0: see test_kernels
    for label, (name, args, kwargs) in kernel_calls(p, dtype).items():
        if few and name == "batch_norm_backward_train":
            continue
        want = as_tuple(getattr(REFERENCE, name)(*args, **kwargs))
        got = as_tuple(getattr(CUPY, name)(*on_gpu(args), **kwargs))
        for i, (a, b) in enumerate(zip(got, want)):
            assert isinstance(a, cp.ndarray) and a.dtype == dtype and a.flags.c_contiguous, label
            err = rel(a.get(), b, floor)
            assert err < tol, f"{label}[{i}] {p}: relative error {err:.3g} >= {tol:g}"


ROUTES = pytest.mark.parametrize("route", ["cublas", "matmul"])
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])


@needs_gpu
def test_cupy_set_defines_the_interface():
    assert all(callable(getattr(CUPY, n, None)) for n in SIMPLE_KERNELS + FUSED_KERNELS)
    x = Tensor(cp.zeros((1, 1, 3, 3), cp.float32))
    assert kernels_for(x.data) is CUPY and isinstance(CUPY, CupyKernels) and CUPY.name == "cupy"
    reference = ReferenceKernels()
    for name in vars(CupyKernels):  # overrides take the reference's parameters
        if callable(getattr(ReferenceKernels, name, None)):
            assert (inspect.signature(getattr(CUPY, name)).parameters.keys()
                    == inspect.signature(getattr(reference, name)).parameters.keys()), name


@needs_gpu
@ROUTES
@DTYPES
@pytest.mark.parametrize("seed", range(10))
def test_kernels_match_reference_seeded(route, dtype, seed):
    rng = np.random.default_rng(seed)
    with gemm_route(route):
        check_against_reference(case_params(lambda lo, hi: int(rng.integers(lo, hi + 1))), dtype)


if given is not None:
    @needs_gpu
    @ROUTES
    @DTYPES
    @settings(max_examples=25, deadline=None)
    @given(data=st.data())
    def test_kernels_match_reference_hypothesis(route, dtype, data):
        p = case_params(lambda lo, hi: data.draw(st.integers(lo, hi)))
        with gemm_route(route):
            check_against_reference(p, dtype)
else:
    @pytest.mark.skip(reason="hypothesis is not installed (the seeded cases ran instead)")
    def test_kernels_match_reference_hypothesis():
        pass


@needs_gpu
@DTYPES
@pytest.mark.parametrize("stride", [1, 2])
def test_mobilenet_shapes_and_reductions_split_over_blocks(dtype, stride):
    """3x3 depthwise/stem s1/s2 p1 and 1x1 on maps big enough that every
    reduction (BN statistics, depthwise weight gradient) spans several blocks."""
    p = dict(shape=(4, 8, 56, 56), k=(3, 3), stride=(stride, stride), padding=(1, 1),
             co=16, cp=24, seed=7)
    m = 4 * 56 * 56 // stride**2
    assert cupy_common.splits(8 * 9, m)[0] > 1 and cupy_common.splits(8, 4 * 56 * 56)[0] > 1
    check_against_reference(p, dtype)


@needs_gpu
def test_kernels_are_deterministic():
    """Bit-identical results from run to run: no float atomics, fixed summation orders."""
    p = dict(shape=(8, 16, 40, 40), k=(3, 3), stride=(2, 2), padding=(1, 1), co=8, cp=16, seed=3)
    calls = {k: (n, on_gpu(a), kw) for k, (n, a, kw) in kernel_calls(p, np.float32).items()}
    first = {k: [o.get() for o in as_tuple(getattr(CUPY, n)(*a, **kw))]
             for k, (n, a, kw) in calls.items()}
    for k, (n, a, kw) in calls.items():
        for x, y in zip(first[k], as_tuple(getattr(CUPY, n)(*a, **kw))):
            assert x.tobytes() == y.get().tobytes(), f"{k} differs between runs"


def strided(a):
    """A non-contiguous CuPy view (every other element of a bigger array) holding ``a``."""
    big = cp.zeros(tuple(2 * s for s in a.shape), a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = cp.asarray(a)
    return view


@needs_gpu
def test_non_contiguous_inputs_give_the_contiguous_answer():
    p = dict(shape=(2, 3, 9, 8), k=(3, 3), stride=(2, 1), padding=(1, 1), co=4, cp=5, seed=5)
    for make in (strided, lambda a: cp.asfortranarray(cp.asarray(a))):
        for label, (name, args, kw) in kernel_calls(p, np.float64).items():
            want = as_tuple(getattr(CUPY, name)(*on_gpu(args), **kw))
            odd = tuple(make(a) if isinstance(a, np.ndarray) else a for a in args)
            assert any(isinstance(a, cp.ndarray) and not a.flags.c_contiguous for a in odd)
            for a, b in zip(as_tuple(getattr(CUPY, name)(*odd, **kw)), want):
                assert rel(a.get(), b.get()) < 1e-13, label


@needs_gpu
def test_kernel_errors_name_the_kernel():
    x = cp.zeros((1, 2, 5, 5), cp.float32)
    with pytest.raises(TypeError, match="depthwise_conv2d_forward: all arrays must share one dtype"):
        CUPY.depthwise_conv2d_forward(x, cp.zeros((2, 1, 3, 3)), (1, 1), (1, 1))
    with pytest.raises(TypeError, match="pointwise_conv2d_forward: w must be a CuPy array"):
        CUPY.pointwise_conv2d_forward(x, np.zeros((3, 2, 1, 1), np.float32))
    with pytest.raises(ValueError, match="conv2d_forward.*3 input channels"):
        CUPY.conv2d_forward(x, cp.zeros((4, 3, 3, 3), cp.float32), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="batch_norm_forward_train.*no values"):
        c = cp.ones(2, cp.float32)
        CUPY.batch_norm_forward_train(cp.zeros((0, 2, 3, 3), cp.float32), c, c, EPS)


@needs_gpu
@DTYPES
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [2, 3, 6, (2, 3)])
def test_dilated_conv_kernels_match_reference(dtype, stride, dilation):
    """Atrous convolution: the six dense and depthwise kernels with dilation, against the
    reference set (float64 to 1e-10, float32 to 1e-4)."""
    rng = np.random.default_rng(11)
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    s, p = (stride, stride), d  # DeepLab's padding = dilation
    x = rng.standard_normal((2, 5, 13, 11)).astype(dtype)
    w, wd = (rng.standard_normal((4, 5, 3, 3)).astype(dtype),
             rng.standard_normal((5, 1, 3, 3)).astype(dtype))
    ho, wo = [(size + 2 * p[a] - 2 * d[a] - 1) // stride + 1 for a, size in enumerate((13, 11))]
    gy, gyd = (rng.standard_normal((2, 4, ho, wo)).astype(dtype),
               rng.standard_normal((2, 5, ho, wo)).astype(dtype))
    calls = {
        "conv2d_forward": (x, w, s, p, d),
        "conv2d_backward_input": (gy, w, x.shape, s, p, d),
        "conv2d_backward_weight": (gy, x, w.shape, s, p, d),
        "depthwise_conv2d_forward": (x, wd, s, p, d),
        "depthwise_conv2d_backward_input": (gyd, wd, x.shape, s, p, d),
        "depthwise_conv2d_backward_weight": (gyd, x, wd.shape, s, p, d),
    }
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for name, args in calls.items():
        want = getattr(REFERENCE, name)(*args)
        got = getattr(CUPY, name)(*on_gpu(args))
        assert isinstance(got, cp.ndarray) and got.dtype == dtype, name
        assert rel(got.get(), want) < tol, name
