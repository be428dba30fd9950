"""One thread pool for the numba kernel set: Numba's, with its threads asleep when idle.

Imported by every kernel module of the numba set; importing it does two things, once:

1. **Pins the BLAS that Numba's** ``np.dot`` **calls to one thread**
   (``pin_numba_blas``). The GEMMs of the pointwise and dense
   convolutions run as ``np.dot`` inside ``@njit(parallel=True)`` loops, so
   Numba's pool is the only parallelism. That BLAS is SciPy's OpenBLAS
   (reached through ``scipy.linalg.cython_blas``), a different library from
   NumPy's, which is left alone: ``a @ b`` in user code keeps its threads.
   Letting NumPy's threaded BLAS run the GEMMs between Numba's parallel
   loops, as this kernel set once did, alternates two pools that both
   busy-wait after every call, ~150 hand-overs per training step; on a busy
   2-core machine a 0.3 s step then took 10-60 s.

2. **Starts Numba's pool with OpenMP's passive wait policy**
   (``start_numba_pool``): between parallel loops its threads sleep
   instead of spinning. GNU OpenMP's default spins both the idle workers and
   the thread waiting at the end-of-loop barrier, so as soon as another
   process wants a core, the barrier spins away the time slice of the very
   thread it waits for. Measured on 2 cores (small MobileNetV2, batch 64,
   28 px): a training step took 2.3 s with the default policy and 0.67 s
   passive while one other process was busy, and 0.43 s vs 0.42 s when the
   machine was quiet.
   ``OMP_WAIT_POLICY`` is set only while Numba loads its threading layer
   (OpenMP reads it then, once) and restored right after, so child
   processes and other OpenMP runtimes (PyTorch's) never see it; a value
   the user set (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``) is kept, and a pool
   already started before tinymbv2 was imported keeps its policy.

**What sleeping costs.** Waking a sleeping worker is the price of each parallel loop.
On this project's 2-core virtual machine an empty loop took
46 us passive against 1.2 us spinning, and a MobileNetV2-1.0 training step (about 400
loops) 107-111 ms against 92-97 ms at 224 px batch 8 (with the kernels of a session
before, 113-120 against 96-101 ms, and 44-52 against 31-35 ms at 32 px batch 64). With a bounded spin (``GOMP_SPINCOUNT=10000``, about 0.2 ms here) the
quiet machine gets the fast steps, but with one other busy process a step took 318
ms against 168-178 ms passive (169 against 47-50 ms at 32 px). So passive stays the
default, and on a machine with nothing else to run, setting ``GOMP_SPINCOUNT=10000``
before the first import buys the speed (``make demo``: training 83 s at 621 images/s ->
71 s at 741, the same 98.6%).

**PyTorch imported first.** PyTorch's wheels for Linux load their own copy of GNU OpenMP
into the process's global symbol scope. Numba's OpenMP layer, imported later the ordinary
way, looks its symbols up there first and runs its loops on that runtime, which read its
settings when PyTorch loaded: by default it spins, and setting the policy now changes
nothing. Most of the course's chapters are such processes. So the layer is imported bound
first to the libraries it was linked against (``load_openmp_layer_apart``: where Numba
names another file than PyTorch's copy, a second runtime, which reads the passive policy as
it loads), and PyTorch keeps its own. Where that cannot be had (one libgomp for both, no
such binding on the platform, the layer imported already), Numba is asked for its
``workqueue`` layer instead, whose idle threads block rather than spin. Measured on 2 cores
(``benchmarks.torch_first``: the chapters' step, MobileNetV2 width 0.35, batch 32 of 28
px), PyTorch imported first: beside one busy process a step took 2.8 s on PyTorch's
runtime, 0.19 s on a runtime of its own and 0.15 s on the workqueue, against 0.20 s
without PyTorch in the process; on the quiet machine 82-83 ms on its own runtime against
82-84 ms without PyTorch (the workqueue 4-8% slower than passive OpenMP; PyTorch's
spinning runtime 60 ms, the price of sleeping described above).
"""
from __future__ import annotations

import ctypes
import os
import sys

import numba
import numpy as np
import scipy
import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS Numba's np.dot calls, so it can be pinned)
from threadpoolctl import ThreadpoolController


def _under(path, roots):
    path = os.path.realpath(path)
    return any(path.startswith(r + os.sep) for r in roots)


def pin_numba_blas() -> list[str]:
    """Limit the BLAS that Numba's ``np.dot`` calls to one thread; return the files pinned.

    In SciPy's wheels that is a private OpenBLAS under ``scipy.libs`` (or
    ``scipy/.dylibs``), apart from NumPy's under ``numpy.libs``. Where SciPy
    and NumPy share one system BLAS (conda, distribution packages) there is
    only one library, and it is pinned: BLAS threads nested inside Numba's
    would be worse than a single-threaded ``a @ b`` in user code.
    """
    scipy_dir = os.path.realpath(os.path.dirname(scipy.__file__))
    numpy_dir = os.path.realpath(os.path.dirname(np.__file__))
    blas = [lc for lc in ThreadpoolController().lib_controllers if lc.user_api == "blas"]
    chosen = [lc for lc in blas if _under(lc.filepath, (scipy_dir, scipy_dir + ".libs"))]
    if not chosen:  # no private copy: SciPy links a shared BLAS, not NumPy's private one
        chosen = [lc for lc in blas if not _under(lc.filepath, (numpy_dir, numpy_dir + ".libs"))]
    for lc in chosen:
        lc.set_num_threads(1)
    return [lc.filepath for lc in chosen]


def openmp_loaded() -> bool:
    """Does the process's global symbol scope hold a GNU OpenMP runtime already? Numba's
    OpenMP layer, loaded after it, would run its loops on that runtime (its symbols come
    first), with the settings it read when it was loaded.

    Where the question cannot be asked, the answer is False, and importing goes on:
    Windows has no global symbol scope (``ctypes.CDLL(None)`` raises ``TypeError``
    there), so no runtime loaded before can stand in for Numba's."""
    try:
        ctypes.CDLL(None).GOMP_parallel
    except (AttributeError, OSError, TypeError):  # not there, or no such lookup here
        return False
    return True


def _address(function) -> int:
    return ctypes.cast(function, ctypes.c_void_p).value


def load_openmp_layer_apart() -> bool:
    """Import Numba's OpenMP layer bound to the OpenMP runtime it was linked against,
    ahead of one already in the global symbol scope; return whether that runtime is
    one of its own (a second copy, loaded now, reading the environment now).

    The layer's module is loaded with ``RTLD_DEEPBIND``: its symbols are then looked
    up first among the libraries it needs, and only then in the global scope. That
    gives Numba a runtime of its own only where the runtime it names is not the one
    loaded already (PyTorch's wheels bring their own copy of libgomp; a conda
    environment may hold one libgomp for both): the answer is whether ``GOMP_parallel``
    among its own libraries is another function than the global one. False also where
    the layer cannot be imported or was imported already, and where the flag does not
    exist (not Linux)."""
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if deepbind is None or "numba.np.ufunc.omppool" in sys.modules:
        return False
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | deepbind)
    try:
        from numba.np.ufunc import omppool
    except ImportError:  # no OpenMP layer in this Numba, or no runtime for it: Numba picks another
        return False
    finally:
        sys.setdlopenflags(flags)
    try:
        own = _address(ctypes.CDLL(omppool.__file__).GOMP_parallel)
    except (AttributeError, OSError):  # a runtime that is not GNU's: not the one loaded before
        return True
    return own != _address(ctypes.CDLL(None).GOMP_parallel)


def start_numba_pool(wait_policy: str = "PASSIVE") -> bool:
    """Load Numba's threading layer now, under ``OMP_WAIT_POLICY=wait_policy``.

    With another GNU OpenMP runtime (PyTorch's) in the global symbol scope already
    (``openmp_loaded``), Numba's OpenMP layer would run its loops on that one,
    which read its settings when it was loaded (by default it spins), so the layer is
    first loaded bound to a runtime of its own (``load_openmp_layer_apart``). Where
    that cannot be had, Numba is asked to prefer its ``workqueue`` layer to OpenMP
    (unless the user chose a layer or an order), whose idle threads block on a
    condition variable; if OpenMP is chosen all the same, the answer is False.

    Args:
        wait_policy: The ``OMP_WAIT_POLICY`` OpenMP reads as the layer loads
            (``"PASSIVE"``: idle threads sleep).

    Returns:
        Whether Numba's threads sleep when idle: not when the user set
        ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (their choice stands), and not
        when Numba's pool was already running (OpenMP read its settings then).
    """
    from numba.np.ufunc import parallel

    if (getattr(parallel, "_is_initialized", False)
            or {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ)):
        numba.get_num_threads()
        return False
    shared = openmp_loaded()
    os.environ["OMP_WAIT_POLICY"] = wait_policy
    try:
        if shared:
            shared = not load_openmp_layer_apart()
        if shared and numba.config.THREADING_LAYER == "default" and \
                list(numba.config.THREADING_LAYER_PRIORITY) == ["tbb", "omp", "workqueue"]:
            # Numba's default order, and no runtime of its own: on a busy machine a pool that
            # blocks when idle beats one that spins (the module's measurements)
            numba.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]
        numba.get_num_threads()  # loads the layer; OpenMP reads its environment as it loads
    finally:
        del os.environ["OMP_WAIT_POLICY"]
    return not (shared and numba.threading_layer() == "omp")


PINNED_BLAS = pin_numba_blas()
"""The BLAS library files pinned to one thread at import (see ``pin_numba_blas``)."""

PASSIVE_POOL = start_numba_pool()
"""Whether Numba's pool was started here with its threads asleep when idle: the passive
wait policy, or the workqueue layer (see the module)."""
