"""The numba kernels' float32 loops stay in float32.

Numba types ``float32 * int`` as float64 (NumPy 2 keeps it float32), so a running sum
started as ``acc[0, 0] * 0`` silently ran in float64: half the SIMD width, a conversion per
term, no fused multiply-add. These tests compile the hot routines afresh for float32
arrays and read the types Numba inferred for every variable (not the disk cache, whose
code cannot be inspected).
"""
import numpy as np
import pytest
from numba import njit, types

from tinymbv2.kernels.numba import batchnorm, gemm
from tinymbv2.kernels.numba.batchnorm import channels_last as batchnorm_rows
from tinymbv2.kernels.numba.batchnorm import flat as batchnorm_flat
from tinymbv2.kernels.numba.depthwise import planes3x3 as d3
from tinymbv2.kernels.numba.depthwise import planes3x3_s2 as s2

F32 = np.float32


def inferred_types(kernel, *args):
    """{variable: Numba type} of ``kernel`` compiled afresh for ``args``."""
    options = {k: v for k, v in kernel.targetoptions.items() if k != "nopython"}
    fresh = njit(**options)(kernel.py_func)
    fresh(*args)
    return fresh.overloads[fresh.signatures[0]].type_annotation.typemap


def planes(h, w):
    rng = np.random.default_rng(0)
    return rng.standard_normal((h, w)).astype(F32), rng.standard_normal((h, w)).astype(F32)


def cases():
    x, gy = planes(6, 6)
    yield "weight3x3_padded", d3.weight3x3_padded, (
        np.zeros((3, 3), F32), gy, x, 1, 1, np.zeros(d3.padded_size(6, 6, 1, 1), F32),
        np.zeros(d3.weight_scratch_size(6, 6, 1), F32))
    yield "weight3x3_s2", s2.weight3x3_s2, (np.zeros((3, 3), F32), gy[:3, :3], x,
                                             np.zeros(s2.weight_scratch_size(3, 6), F32))
    size = s2.phase_size(6, 6)
    ph = np.zeros((4, size), F32)
    for affine in (True, False):
        yield f"split_phases affine={affine}", s2.split_phases, (x, ph, F32(0.5), F32(2), F32(1),
                                                                affine)
    yield "correlate_phases", s2.correlate_phases, (np.zeros((3, 3), F32), ph, x[:3, :3],
                                                    s2.phase_width(6), np.zeros(size, F32))
    yield "weight3x3_strided", d3.weight3x3_strided, (
        np.zeros((3, 3), F32), gy[:2, :2], x, 3, 1, 1, np.zeros(6, F32), np.zeros((3, 3, 2), F32))
    row, out = x[0].copy(), np.empty(6, F32)
    for relu6 in (True, False):
        yield f"affine_row relu6={relu6}", batchnorm.affine_row, (row, out, F32(0.5), F32(2), F32(1), relu6)
        yield f"affine_row relu6={relu6} top=inf", batchnorm.affine_row, (
            row, out, F32(0.5), F32(2), F32(1), relu6, F32(np.inf))
        yield f"affine_inplace relu6={relu6}", batchnorm.affine_inplace, (row.copy(), F32(0.5), F32(2), F32(1), relu6)
        c = np.ones(6, F32)
        yield f"affine_rows_inplace relu6={relu6}", batchnorm_rows.affine_rows_inplace, (
            x.copy(), 0, 6, 0, 6, c, c, c, relu6)
    a3, c3 = np.stack([x, gy]), np.stack([gy, x])
    yield "row_block", gemm.row_block, (a3, c3, np.zeros((6, 6), F32), 1)
    yield "grad_row_inplace", batchnorm.grad_row_inplace, (
        row.copy(), row, F32(0.5), F32(2), F32(1), F32(0.1))
    yield "mask_relu6_inplace", batchnorm.mask_relu6_inplace, (
        row.copy(), row, F32(0.5), F32(2), F32(1))
    yield "passed", batchnorm_flat.passed, (F32(1), F32(2), F32(0), F32(1), F32(0), True, F32(0),
                                            F32(6))
    yield "mask_relu6 top=inf", batchnorm.mask_relu6, (row, row, F32(0.5), F32(2), F32(1), out,
                                                       F32(np.inf))


@pytest.mark.parametrize("name,kernel,args", list(cases()), ids=[c[0] for c in cases()])
def test_float32_loops_infer_no_float64(name, kernel, args):
    typemap = inferred_types(kernel, *args)
    wide = sorted(v for v, t in typemap.items() if t == types.float64)
    assert not wide, f"{name}: float64 variables in a float32 kernel: {wide}"
    assert any(t == types.float32 for t in typemap.values())


def test_the_check_sees_the_old_pitfall():
    @njit
    def old_style(acc):
        zero = acc[0] * 0  # float32 * int: float64 in Numba
        return zero

    assert inferred_types(old_style, np.zeros(2, F32))["zero"] == types.float64
