"""What the CUDA kernel files share: argument checks, compiling, launching.

Imported only by the ``cupy`` kernel set, which ``tinymbv2.kernels.kernels_for``
loads the first time it sees a CuPy array, so ``import tinymbv2`` never needs CuPy.

* Every kernel is a C++ template over the element type ``T`` (``float`` for
  float32, ``double`` for float64), compiled by NVRTC through ``cupy.RawModule``
  with both instantiations named in ``name_expressions``; CuPy caches the
  compiled code on disk, so only the first run pays the compile.
* Launches are 1-D grids of ``BLOCK`` threads with a grid-stride loop over a
  capped grid. Element indices are 32-bit ints (64-bit division is several
  times slower on a GPU), so an array may have at most ``MAX_SIZE`` elements
  ($2^{31} - 2^{20}$: a batch of 1,700 images of MobileNetV2 at 224 px); pointer
  offsets that multiply sizes are 64-bit.
* Reductions (BatchNorm statistics, the depthwise weight gradient) never use
  floating-point atomics: a block of ``BLOCK`` threads sums its share in a fixed
  order and then in a fixed tree in shared memory, so every run gives
  bit-identical results. Rows with many values are split over several blocks
  (see ``splits``), whose partial sums are added in order afterwards.
"""
from __future__ import annotations

import functools

import cupy as cp
import numpy as np

from ..checks import same_float_dtype

BLOCK = 256          # threads per block; a power of two (the tree reductions halve it)
MAX_GRID = 1 << 20   # blocks of a grid-stride launch; more would only queue up
MAX_SIZE = 2**31 - 2**20  # elements per array: indices are 32-bit ints in the kernels
TARGET_BLOCKS = 1024  # a reduction is split until about this many blocks share the work

CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# Shared by every source: the block-wide sum of one double per thread. The
# tree is fixed (thread t adds t + half), so the order of the additions is too.
REDUCE_SRC = r"""
#define BLOCK @BLOCK@
__device__ __forceinline__ double block_sum(double v, double* buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int half = BLOCK / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) buf[threadIdx.x] += buf[threadIdx.x + half];
        __syncthreads();
    }
    double total = buf[0];
    __syncthreads();  // buf may be reused right after
    return total;
}
""".replace("@BLOCK@", str(BLOCK))


def device_arrays(fn: str, **arrays):
    """The dtype and C-contiguous CuPy arrays, in the order given, after checking them.

    Every array must be a CuPy array (a NumPy array here means the caller mixed
    devices), all must share one dtype, float32 or float64 (never a silent cast),
    and each must have fewer than ``MAX_SIZE`` elements.

    Args:
        fn: The kernel's name, for the message.
        **arrays: The arrays by name.

    Returns:
        ``(dtype, *arrays)``.

    Raises:
        TypeError: An array that is not CuPy's, or dtypes that differ or are not floating.
        ValueError: An array of ``MAX_SIZE`` elements or more.
    """
    for name, a in arrays.items():
        if not isinstance(a, cp.ndarray):
            raise TypeError(
                f"{fn}: {name} must be a CuPy array on the GPU like the other inputs, "
                f"got {type(a).__module__}.{type(a).__name__}"
            )
        if a.size >= MAX_SIZE:
            raise ValueError(
                f"{fn}: {name} has {a.size} elements; the cupy kernels index with 32-bit "
                f"ints, so at most {MAX_SIZE - 1} (use a smaller batch)"
            )
    dtype = same_float_dtype(fn, **{k: np.empty(0, a.dtype) for k, a in arrays.items()})
    return (dtype, *(cp.ascontiguousarray(a) for a in arrays.values()))


class Kernels:
    """A CUDA source of templated ``__global__`` functions, compiled on first use.

    ``Kernels(src, ["dw_forward", ...])[("dw_forward", dtype)]`` is the
    ``cupy.RawKernel`` of ``dw_forward<float>`` or ``dw_forward<double>``.

    Args:
        src: The CUDA source (the shared block reduction is put in front of it).
        names: The templated kernels it defines.
    """

    def __init__(self, src: str, names):
        self.src, self.names = REDUCE_SRC + src, tuple(names)

    @functools.cached_property
    def module(self):
        exprs = [f"{n}<{t}>" for n in self.names for t in CTYPE.values()]
        return cp.RawModule(code=self.src, options=("-std=c++14",), name_expressions=exprs)

    def __getitem__(self, key):
        name, dtype = key
        return self.module.get_function(f"{name}<{CTYPE[np.dtype(dtype)]}>")


def i32(v) -> np.int32:
    """A kernel's ``int`` argument ``v`` as an explicit 32-bit scalar, checked to fit."""
    if not -MAX_SIZE < int(v) < MAX_SIZE:
        raise ValueError(f"cupy kernels: size {v} is too large for 32-bit indexing (< {MAX_SIZE})")
    return np.int32(v)


def launch(kernel, total: int, args) -> None:
    """Run a grid-stride ``kernel`` over ``total`` elements (nothing to do for 0).

    Args:
        kernel: The ``cupy.RawKernel``.
        total: The number of elements its loop covers.
        args: Its arguments.
    """
    if total <= 0:
        return
    grid = min(-(-total // BLOCK), MAX_GRID)
    kernel((grid,), (BLOCK,), args)


def splits(rows: int, m: int) -> tuple[int, int]:
    """(S, chunk): each of ``rows`` sums of ``m`` values is split over S blocks of ``chunk`` values.

    Enough blocks to fill the GPU (about ``TARGET_BLOCKS`` in all), but every thread
    still gets at least 4 values. A fixed rule, so the order of every addition,
    and hence the result, is the same on every run and every GPU.

    Args:
        rows: The number of sums (channels, or channel-taps).
        m: The values per sum.

    Returns:
        ``(S, chunk)``.
    """
    s = max(1, -(-TARGET_BLOCKS // max(rows, 1)))
    s = max(1, min(s, -(-m // (4 * BLOCK)), 65535))
    return s, -(-m // s)
