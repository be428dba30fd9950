"""One thread pool for the numba kernel set: Numba's, with its threads asleep when idle.

Imported by every ``numba_*`` kernel module; importing it does two things, once:

1. **Pins the BLAS that Numba's** ``np.dot`` **calls to one thread**
   (:func:`pin_numba_blas`). The GEMMs of the pointwise and dense
   convolutions run as ``np.dot`` inside ``@njit(parallel=True)`` loops, so
   Numba's pool is the only parallelism. That BLAS is SciPy's OpenBLAS
   (reached through ``scipy.linalg.cython_blas``), a different library from
   NumPy's, which is left alone: ``a @ b`` in user code keeps its threads.
   Letting NumPy's threaded BLAS run the GEMMs between Numba's parallel
   loops, as this kernel set once did, alternates two pools that both
   busy-wait after every call, ~150 hand-overs per training step; on a busy
   2-core machine a 0.3 s step then took 10-60 s.

2. **Starts Numba's pool with OpenMP's passive wait policy**
   (:func:`start_numba_pool`): between parallel loops its threads sleep
   instead of spinning. GNU OpenMP's default spins both the idle workers and
   the thread waiting at the end-of-loop barrier, so as soon as another
   process wants a core, the barrier spins away the time slice of the very
   thread it waits for. Measured on 2 cores (small MobileNetV2, batch 64,
   28 px): a training step took 2.3 s with the default policy and 0.67 s
   passive while one other process was busy, and 0.43 s vs 0.42 s when the
   machine was quiet; passive adds ~6 us per parallel loop (~2 ms a step).
   ``OMP_WAIT_POLICY`` is set only while Numba loads its threading layer
   (OpenMP reads it then, once) and restored right after, so child
   processes and other OpenMP runtimes (PyTorch's) never see it; a value
   the user set (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``) is kept, and a pool
   already started before tinymbv2 was imported keeps its policy.
"""
from __future__ import annotations

import os

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


def start_numba_pool(wait_policy: str = "PASSIVE") -> bool:
    """Load Numba's threading layer now, under ``OMP_WAIT_POLICY=wait_policy``.

    Returns whether the policy was applied: not when the user set
    ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (their choice stands) and not
    when Numba's pool was already running (OpenMP read its settings then).
    """
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False) or {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
        numba.get_num_threads()
        return False
    os.environ["OMP_WAIT_POLICY"] = wait_policy
    try:
        numba.get_num_threads()  # loads the layer; OpenMP reads its environment as it loads
    finally:
        del os.environ["OMP_WAIT_POLICY"]
    return True


PINNED_BLAS = pin_numba_blas()
"""The BLAS library files pinned to one thread at import (see :func:`pin_numba_blas`)."""

PASSIVE_POOL = start_numba_pool()
"""Whether Numba's pool was started here with the passive wait policy."""
