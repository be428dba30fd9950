"""Fast CPU kernel set: Numba ``@njit(parallel=True)`` kernels, Numba matrix loops, BLAS.

The same names, signatures and answers as :mod:`tinymbv2.kernels.reference`
(see the interface in :mod:`tinymbv2.kernels`), organised for speed instead
of for reading: depthwise convolution in :mod:`.numba_depthwise` (direct
loops), pointwise convolution in :mod:`.numba_pointwise` (a matrix product per
image) and :mod:`.numba_pointwise_rows` (one product over the batch on channels-last
planes), both on :mod:`.numba_tile`'s register blocks, dense convolution in
:mod:`.numba_dense` (im2col + GEMM per image), BatchNorm in :mod:`.numba_bn`,
the Linear layer's GEMM in :mod:`.numba_matmul`. Everything runs in Numba's one
thread pool: the BLAS GEMMs are ``np.dot`` inside parallel loops, on a BLAS
pinned to one thread (why, and the pool's passive wait policy: :mod:`.numba_pool`).

All kernels are deterministic: the same inputs give bit-identical outputs on
every run and whatever the number of threads (parallel loops only ever split
work whose outputs are disjoint; every sum runs in a fixed order in one
thread, or in partial sums fixed by the shapes and added in order).

**Where arrays are allocated.** Every output a kernel returns is allocated
by NumPy in the Python wrapper (``np.empty``) and filled by the jitted core,
and scratch used inside a ``prange`` loop is allocated before the loop, one
slice per task. Both rules were measured:

* glibc serves allocations above 32 MiB with a fresh ``mmap`` each time, and
  NumPy asks for transparent huge pages on them (``madvise``) while Numba's
  allocator does not. A 40 MiB output (8x96x112x112 float32, MobileNetV2's
  largest at 224 px batch 8) filled in parallel took 11 ms allocated inside
  ``@njit`` (10,000 page faults, two threads contending on them) and 2.1 ms
  allocated by NumPy.
* An array allocated inside a ``prange`` body made a depthwise loop 2.9x
  slower than the same loop on slices of one array allocated before it.

Kernels are compiled on first use for each dtype (float32, float64) and
cached on disk (``cache=True``), so only the first process pays the compile.
Numba checks a cached function against its own source file only: after editing a
helper that a kernel in *another* module calls (say ``numba_depthwise3x3.py``, which
``numba_depthwise.py`` calls), that kernel still runs the old helper until its cache
goes. Clear it with ``find tinymbv2 -name '*.nbi' -delete`` (or run with
``NUMBA_CACHE_DIR`` set to an empty folder).
"""
from __future__ import annotations

from .numba_bn import (  # noqa: F401
    batch_norm_backward_train,
    batch_norm_forward_eval,
    batch_norm_forward_train,
)
from .numba_block import inverted_residual_eval  # noqa: F401  (optional: see there)
from .numba_dense import (  # noqa: F401
    conv2d_backward_input,
    conv2d_backward_weight,
    conv2d_forward,
)
from .numba_depthwise import (  # noqa: F401
    depthwise_conv2d_backward_input,
    depthwise_conv2d_backward_weight,
    depthwise_conv2d_forward,
)
from .numba_matmul import matmul  # noqa: F401
from .numba_optim import rmsprop_update  # noqa: F401  (optional: see there)
from .numba_pool import PASSIVE_POOL, PINNED_BLAS  # noqa: F401
from .numba_stage import (  # noqa: F401  (optional: see there)
    stage_backward_train,
    stage_forward_train,
    stage_supported,
)
from .numba_pointwise import (  # noqa: F401
    pointwise_conv2d_backward,
    pointwise_conv2d_backward_input,
    pointwise_conv2d_backward_weight,
    pointwise_conv2d_forward,
)

name = "numba"

