"""Starting ranks: the ``mpirun`` of the MPI that mpi4py was installed with.

The ``distributed`` extra installs Open MPI from its PyPI wheel, which puts ``mpirun``
next to the Python of the virtual environment (``.venv/bin/mpirun``), so nothing is taken
from the system. Open MPI refuses to run as root unless told it is meant, and refuses more
ranks than cores unless oversubscription is allowed: both are set here, for tests and
small runs on a laptop or a CI machine.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def mpirun_path() -> Path:
    """The ``mpirun`` beside this Python (``sys.executable``'s folder).

    Raises:
        FileNotFoundError: There is none; says how to install it.
    """
    path = Path(sys.executable).parent / "mpirun"
    if not path.exists():
        raise FileNotFoundError(
            f"mpirun: expected it at {path} (installed with this Python's environment by "
            "pip install -e '.[distributed]'), found nothing there"
        )
    return path


def mpirun_command(n: int, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` on ``n`` ranks on this machine.

    Args:
        n: The number of ranks, at least 1.
        argv: The program and its arguments, e.g. ``[sys.executable, "script.py"]``.

    Returns:
        ``[mpirun, -n, n, --oversubscribe, *argv]``; run it with [mpirun_env][tinymbv2.distributed.launch.mpirun_env].

    Raises:
        ValueError: ``n < 1`` or ``argv`` is empty.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"mpirun_command: expected n, the number of ranks, >= 1, got {n!r}")
    if not argv:
        raise ValueError("mpirun_command: expected a program to run, got an empty argv")
    return [str(mpirun_path()), "-n", str(n), "--oversubscribe", *map(str, argv)]


def mpirun_env(base: dict | None = None, threads: int = 1) -> dict:
    """The environment for ``mpirun``: Open MPI's permission to run as root, and a thread
    count per rank for NumPy and Numba (ranks that each start one thread per core would
    fight over the cores).

    Args:
        base: The environment to start from; None: ``os.environ``.
        threads: The threads each rank may use.

    Returns:
        A new dict.
    """
    env = dict(os.environ if base is None else base)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    return env
