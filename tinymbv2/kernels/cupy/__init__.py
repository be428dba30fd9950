"""GPU kernel set: hand-written CUDA kernels through CuPy, and cuBLAS GEMMs.

[CupyKernels][tinymbv2.kernels.cupy.CupyKernels] overrides the simple kernels of
[ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels] for CuPy arrays and
inherits the fused ones, which it computes with its simple kernels; every output is
a fresh C-contiguous CuPy array of the inputs' dtype (float32 or float64, the
kernels are C++ templates compiled for both). Organised like ``tinymbv2.kernels.numba``:

* ``conv``: depthwise convolution (forward and backward-input one
  thread per element; backward-weight a per-(channel, tap) block reduction),
  the dense stem (im2col + cuBLAS GEMM + col2im) and pointwise convolution
  (one strided-batched cuBLAS GEMM per pass, ``gemm``, no copies);
* ``batchnorm``: BatchNorm (per-channel block reductions in double
  precision, then one elementwise pass);
* ``gemm``: the batched GEMMs (one cuBLAS call on the arrays as they lie, with
  ``cublas_args``, plain Python, mapping row-major products to cuBLAS's arguments)
  and the Linear layer's ``matmul``; ``interpolate``: bilinear and nearest resizing,
  one thread per output for the forward and the transposed matrices through cuBLAS for
  the backward (a scatter without atomics); ``common``: what the CUDA sources share
  (argument checks, compiling, launching, the block reduction).

Deterministic: no floating-point atomics; every sum runs in a fixed order, so
repeated runs give bit-identical results. [kernels_for][tinymbv2.kernels.kernels_for]
imports this module the first time it meets a CuPy array, so CuPy is needed
only by those who compute on a GPU (``pip install -e .[gpu]``).
"""
from __future__ import annotations

from ..reference import ReferenceKernels
from . import batchnorm, conv, gemm, interpolate


class CupyKernels(ReferenceKernels):
    """The CuPy set: the simple kernels for CuPy arrays; the fused ones inherited."""

    name = "cupy"

    conv2d_forward = staticmethod(conv.conv2d_forward)
    conv2d_backward_input = staticmethod(conv.conv2d_backward_input)
    conv2d_backward_weight = staticmethod(conv.conv2d_backward_weight)
    depthwise_conv2d_forward = staticmethod(conv.depthwise_conv2d_forward)
    depthwise_conv2d_backward_input = staticmethod(conv.depthwise_conv2d_backward_input)
    depthwise_conv2d_backward_weight = staticmethod(conv.depthwise_conv2d_backward_weight)
    pointwise_conv2d_forward = staticmethod(conv.pointwise_conv2d_forward)
    pointwise_conv2d_backward_input = staticmethod(conv.pointwise_conv2d_backward_input)
    pointwise_conv2d_backward_weight = staticmethod(conv.pointwise_conv2d_backward_weight)
    batch_norm_forward_train = staticmethod(batchnorm.batch_norm_forward_train)
    batch_norm_backward_train = staticmethod(batchnorm.batch_norm_backward_train)
    batch_norm_forward_eval = staticmethod(batchnorm.batch_norm_forward_eval)
    matmul = staticmethod(gemm.matmul)
    interpolate_forward = staticmethod(interpolate.interpolate_forward)
    interpolate_backward = staticmethod(interpolate.interpolate_backward)
