"""GPU kernel set: hand-written CUDA kernels through CuPy, and cuBLAS GEMMs.

The same names, signatures and answers as :mod:`tinymbv2.kernels.reference`
(see the interface in :mod:`tinymbv2.kernels`), for CuPy arrays; every output is
a fresh C-contiguous CuPy array of the inputs' dtype (float32 or float64, the
kernels are C++ templates compiled for both). Organised like ``numba_cpu``:

* :mod:`.cupy_conv`: depthwise convolution (forward and backward-input one
  thread per element; backward-weight a per-(channel, tap) block reduction),
  the dense stem (im2col + cuBLAS GEMM + col2im) and pointwise convolution
  (one strided-batched cuBLAS GEMM per pass, :mod:`.cupy_gemm`, no copies);
* :mod:`.cupy_bn`: BatchNorm (per-channel block reductions in double
  precision, then one elementwise pass).

Deterministic: no floating-point atomics; every sum runs in a fixed order, so
repeated runs give bit-identical results. :func:`tinymbv2.backend.kernels_for`
imports this module the first time it meets a CuPy array, so CuPy is needed
only by those who compute on a GPU (``pip install -e .[gpu]``).
"""
from __future__ import annotations

from .cupy_bn import (  # noqa: F401
    batch_norm_backward_train,
    batch_norm_forward_eval,
    batch_norm_forward_train,
)
from .cupy_conv import (  # noqa: F401
    conv2d_backward_input,
    conv2d_backward_weight,
    conv2d_forward,
    depthwise_conv2d_backward_input,
    depthwise_conv2d_backward_weight,
    depthwise_conv2d_forward,
    pointwise_conv2d_backward_input,
    pointwise_conv2d_backward_weight,
    pointwise_conv2d_forward,
)

from .cupy_gemm import matmul  # noqa: F401

name = "cupy"
