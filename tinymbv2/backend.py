"""Which array library and which CPU kernel set are active.

Layer 1 of the package. It names the active CPU kernel set, and
[kernels_for][tinymbv2.kernels.kernels_for] (layer 2) hands out the set of that name, so
``tinymbv2.use_kernels("reference")`` swaps every convolution and BatchNorm in the
network at once. The sets (``kernels/``):

* ``"reference"``: NumPy, written to be read; what the course teaches.
* ``"numba"``: ``@njit`` kernels for fast CPU training (the default).
* ``"cupy"``: CUDA kernels through CuPy; chosen automatically for
  arrays that live on the GPU, whichever CPU set is active.
"""
from __future__ import annotations

import numpy as np

CPU_KERNEL_SETS = ("reference", "numba")

_active_cpu_set = "numba"


class use_kernels:
    """Select the CPU kernel set; works as a plain call and as a context manager.

        tinymbv2.use_kernels("reference")          # from now on
        with tinymbv2.use_kernels("numba"): ...    # only inside the block

    Args:
        name: ``"reference"`` or ``"numba"``.

    Raises:
        ValueError: Another name.
    """

    def __init__(self, name: str):
        global _active_cpu_set
        if name not in CPU_KERNEL_SETS:
            raise ValueError(
                f"use_kernels: expected 'reference' or 'numba', got {name!r}"
            )
        self.name = name
        self.previous = _active_cpu_set
        _active_cpu_set = name

    def __enter__(self) -> "use_kernels":
        return self

    def __exit__(self, *exc) -> None:
        global _active_cpu_set
        _active_cpu_set = self.previous


def active_kernel_set() -> str:
    """Name of the CPU kernel set in use: ``"reference"`` or ``"numba"``."""
    return _active_cpu_set


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy`` (DeZero style).

    Args:
        *arrays: Arrays, Tensors' data, numbers or None.

    Returns:
        The module: ``numpy`` or ``cupy``.
    """
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def to_device(array, device: str, who: str):
    """``array`` on ``device``: ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy on the current GPU).

    Args:
        array: A NumPy or CuPy array.
        device: ``"cpu"`` or ``"cuda"``.
        who: The caller, named in the error raised when CuPy or a GPU is missing.

    Returns:
        The array on ``device`` (itself when it is already there).

    Raises:
        ValueError: Another device.
        RuntimeError: ``"cuda"`` is asked for without CuPy or a GPU.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"{who}: expected device 'cpu' or 'cuda', got {device!r}")
    on_gpu = get_array_module(array) is not np
    if device == "cpu":
        return array.get() if on_gpu else array
    if on_gpu:
        return array
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device found")
    except Exception as exc:  # ImportError, or CuPy's CUDA errors without a GPU
        raise RuntimeError(
            f"{who}: CuPy with a CUDA GPU is needed for 'cuda' (pip install -e .[gpu]); "
            f"cupy import failed: {type(exc).__name__}: {exc}"
        ) from exc
    return cupy.asarray(array)


def keep_freed_memory() -> bool:
    """Ask the C allocator (glibc's malloc) to keep freed memory for reuse.

    By default glibc gives every allocation above 32 MiB its own fresh ``mmap``
    and returns it to the system when freed, so the next array of that size is
    zero-filled page by page again (at 224 px batch 8, each of MobileNetV2's 38.5 MiB
    activations then pays its page faults anew, more when two threads fault at once;
    figures: docs/kernels.md, "Allocation"), and below that size whether memory is
    reused depends on what
    was freed before. This sets ``M_MMAP_MAX = 0`` (no ``mmap`` per allocation)
    and a 2 GiB ``M_TRIM_THRESHOLD`` (freed memory stays in the process), the
    usual advice for long CPU training runs (as is preloading jemalloc or
    tcmalloc). It affects the whole process, PyTorch included; resident memory
    then does not shrink after a step. Returns False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
