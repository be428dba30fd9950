"""The CUDA source of the CuPy convolutions, compiled for the CPU, against the reference set.

Where no GPU is present (most CI runs) ``test_gpu.py`` skips, and the CUDA code of
``tinymbv2/kernels/cupy/conv.py`` would go unchecked. This file compiles that very source
with the host's C++ compiler, as one thread: ``__global__`` and friends defined away, one
block of one thread (``BLOCK`` 1, so the block reduction is the value itself), each
grid-stride loop then visiting every element in turn; the weight-gradient kernel runs
once per row, as its grid's x blocks would. It calls the kernels with the geometry the
Python wrappers compute and compares with ``ReferenceKernels``, dilation included. What it
cannot check is what only a GPU shows (races, launch limits, cuBLAS): ``test_gpu.py`` does.
Skipped without g++.
"""
from __future__ import annotations

import ast
import ctypes
import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tinymbv2
from tinymbv2.kernels.checks import conv_geometry
from tinymbv2.kernels.reference import ReferenceKernels as R

CONV_PY = Path(tinymbv2.__file__).parent / "kernels" / "cupy" / "conv.py"
GEOM = "int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw"
ARGS = "H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw"
HOST = """
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
struct dim3_ { unsigned x, y, z; };
static dim3_ blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define BLOCK 1
__device__ __forceinline__ double block_sum(double v, double* buf) { return v; }
"""
WRAPPERS = f"""
extern "C" {{
void dw_fwd(const double* x, const double* w, double* y, int total, int C, {GEOM}) {{
    dw_forward<double>(x, w, y, total, C, {ARGS}); }}
void dw_bin(const double* gy, const double* w, double* gx, int total, int C, {GEOM}) {{
    dw_backward_input<double>(gy, w, gx, total, C, {ARGS}); }}
void dw_bw(const double* gy, const double* x, double* partial, int rows, int C, {GEOM}, int M) {{
    for (int r = 0; r < rows; ++r) {{
        blockIdx.x = r;
        dw_backward_weight<double>(gy, x, partial, C, {ARGS}, M, M);
    }}
    blockIdx.x = 0;
}}
void im2col_d(const double* x, double* cols, int total, int C, {GEOM}) {{
    im2col<double>(x, cols, total, C, {ARGS}); }}
void col2im_d(const double* g, double* gx, int total, int C, {GEOM}) {{
    col2im<double>(g, gx, total, C, {ARGS}); }}
}}
"""


def cuda_source() -> str:
    """The ``_SRC`` string of kernels/cupy/conv.py, read without importing CuPy."""
    for node in ast.parse(CONV_PY.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_SRC":
            return node.value.value
    raise AssertionError("kernels/cupy/conv.py has no _SRC")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    folder = tmp_path_factory.mktemp("cuda_on_host")
    cpp, so = folder / "conv.cpp", folder / "conv.so"
    cpp.write_text(HOST + cuda_source() + WRAPPERS)
    subprocess.run(["g++", "-O1", "-std=c++14", "-shared", "-fPIC", str(cpp), "-o", str(so)],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(so))


def ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def geom(x_shape, w_shape, stride, padding, out_hw, dilation):
    """The GEOM arguments, as kernels/cupy/conv.py's ``_geom`` orders them."""
    return [x_shape[2], x_shape[3], *out_hw, w_shape[2], w_shape[3], *stride, *padding, *dilation]


def host_kernels(lib, x, w, wd, gy, gyd, s, p, d):
    """The six kernels through the CUDA source, with the wrappers' arguments and GEMMs."""
    n, c = x.shape[:2]
    co = w.shape[0]
    out = conv_geometry("f", x.shape, w.shape, s, p, dilation=d)[2]
    g = geom(x.shape, w.shape, s, p, out, d)
    gd = geom(x.shape, wd.shape, s, p, out, d)
    cols = np.empty((n, w[0].size, out[0] * out[1]))
    lib.im2col_d(ptr(x), ptr(cols), cols.size, c, *g)
    y = np.matmul(w.reshape(co, -1), cols).reshape((n, co) + out)
    gcols = np.ascontiguousarray(np.matmul(w.reshape(co, -1).T, gy.reshape(n, co, -1)))
    gx = np.empty(x.shape)
    lib.col2im_d(ptr(gcols), ptr(gx), gx.size, c, *g)
    gw = np.matmul(gy.reshape(n, co, -1), cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    yd = np.empty((n, c) + out)
    lib.dw_fwd(ptr(x), ptr(wd), ptr(yd), yd.size, c, *gd)
    gxd = np.empty(x.shape)
    lib.dw_bin(ptr(gyd), ptr(wd), ptr(gxd), gxd.size, c, *gd)
    rows = c * wd.shape[2] * wd.shape[3]
    partial = np.empty((rows, 1))
    lib.dw_bw(ptr(gyd), ptr(x), ptr(partial), rows, c, *gd, n * out[0] * out[1])
    return y, gx, gw, yd, gxd, partial.sum(axis=1).reshape(wd.shape)


CASES = [(d, s, k, pad) for d, s, k, pad in itertools.product(
    [(1, 1), (2, 2), (6, 6), (2, 3)], [(1, 1), (2, 2), (1, 2)], [(3, 3), (2, 3)], ["d", 0])]


@pytest.mark.parametrize("dilation, stride, kernel, pad", CASES)
def test_cuda_convolutions_match_reference(lib, dilation, stride, kernel, pad):
    d, s, k = dilation, stride, kernel
    p = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2) if pad == "d" else (0, 0)
    rng = np.random.default_rng(CASES.index((dilation, stride, kernel, pad)))
    x = rng.standard_normal((2, 3, 14, 15))
    w, wd = rng.standard_normal((4, 3) + k), rng.standard_normal((3, 1) + k)
    out = conv_geometry("f", x.shape, w.shape, s, p, dilation=d)[2]
    gy, gyd = rng.standard_normal((2, 4) + out), rng.standard_normal((2, 3) + out)
    want = (R.conv2d_forward(x, w, s, p, d), R.conv2d_backward_input(gy, w, x.shape, s, p, d),
            R.conv2d_backward_weight(gy, x, w.shape, s, p, d),
            R.depthwise_conv2d_forward(x, wd, s, p, d),
            R.depthwise_conv2d_backward_input(gyd, wd, x.shape, s, p, d),
            R.depthwise_conv2d_backward_weight(gyd, x, wd.shape, s, p, d))
    names = ("im2col forward", "col2im backward_input", "im2col backward_weight",
             "dw_forward", "dw_backward_input", "dw_backward_weight")
    for name, got, ref in zip(names, host_kernels(lib, x, w, wd, gy, gyd, s, p, d), want):
        err = np.abs(got - ref).max() / np.abs(ref).max()
        assert err < 1e-12, f"{name} {d, s, k, p}: relative error {err:.2e}"
