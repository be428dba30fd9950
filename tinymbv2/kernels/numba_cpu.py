"""Fast CPU kernel set: Numba ``@njit(parallel=True)`` kernels and BLAS GEMMs.

The same names, signatures and answers as :mod:`tinymbv2.kernels.reference`
(see the interface in :mod:`tinymbv2.kernels`), organised for speed instead
of for reading: depthwise convolution in :mod:`.numba_depthwise` (direct
loops), dense and pointwise convolution in :mod:`.numba_dense` (im2col +
BLAS GEMM), BatchNorm in :mod:`.numba_bn`. All kernels are deterministic:
the same inputs give bit-identical outputs on every run (parallel loops only
ever split work whose outputs are disjoint; every sum runs in a fixed order
in one thread; BLAS splits a GEMM's output, not its inner sums).

Kernels are compiled on first use for each dtype (float32, float64) and
cached on disk (``cache=True``), so only the first process pays the compile.
"""
from __future__ import annotations

from .numba_bn import (  # noqa: F401
    batch_norm_backward_train,
    batch_norm_forward_eval,
    batch_norm_forward_train,
)
from .numba_dense import (  # noqa: F401
    conv2d_backward_input,
    conv2d_backward_weight,
    conv2d_forward,
    pointwise_conv2d_backward_input,
    pointwise_conv2d_backward_weight,
    pointwise_conv2d_forward,
)
from .numba_depthwise import (  # noqa: F401
    depthwise_conv2d_backward_input,
    depthwise_conv2d_backward_weight,
    depthwise_conv2d_forward,
)

name = "numba"
