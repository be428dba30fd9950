"""The MPI world a data-parallel run lives in: this process's rank and the number of ranks.

``mpirun -n 4 python train.py`` starts four copies of the same program; MPI numbers them
0 to 3 (the *rank*) and connects them through a *communicator*, ``MPI.COMM_WORLD``. Every
copy runs the same code on its own shard of the data, and they agree through collective
operations on that communicator (broadcast, all-reduce). This module is the one place
that imports mpi4py, so that the rest of tinymbv2 runs without it.
"""
from __future__ import annotations

from dataclasses import dataclass


def mpi():
    """The ``mpi4py.MPI`` module (importing it initialises MPI).

    Raises:
        ImportError: mpi4py is not installed, with the command that installs it.
    """
    try:
        from mpi4py import MPI
    except ImportError as error:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "tinymbv2.distributed needs mpi4py and an MPI library: "
            "pip install -e '.[distributed]' (mpi4py with Open MPI from its PyPI wheel)"
        ) from error
    return MPI


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` in ``0 .. size - 1`` of ``size`` ranks on ``comm``."""

    comm: object
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that alone writes logs, progress and checkpoints."""
        return self.rank == 0


def get_world(comm=None) -> World:
    """The rank and world size of this process on ``comm``.

    Run as ``mpirun -n P python ...`` this gives ranks 0 .. P - 1 of P; run alone, MPI
    starts a world of one process (rank 0 of 1).

    Args:
        comm: An mpi4py communicator; None: ``MPI.COMM_WORLD``.

    Returns:
        The [World][tinymbv2.distributed.world.World].

    Raises:
        TypeError: ``comm`` is not a communicator (has no ``Get_rank``/``Get_size``).
    """
    if comm is None:
        comm = mpi().COMM_WORLD
    check_comm(comm, "get_world")
    return World(comm, comm.Get_rank(), comm.Get_size())


# Set in every rank's environment by the launchers: Open MPI's mpirun, MPICH's (Hydra) and PMIx.
_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


def launched_by_mpirun(environ=None) -> bool:
    """Whether this process was started by ``mpirun`` (so that importing MPI is wanted).

    A plain ``tinymbv2 train`` never imports mpi4py; the same command under ``mpirun -n 2``
    trains on 2 ranks.

    Args:
        environ: The environment to look in; None: ``os.environ``.

    Returns:
        True when a launcher's variable is set.
    """
    import os

    env = os.environ if environ is None else environ
    return any(name in env for name in _LAUNCHER_VARIABLES)


def check_comm(comm, fn: str) -> None:
    """Raise a TypeError naming ``fn`` unless ``comm`` looks like an mpi4py communicator.

    Args:
        comm: The object to check (it needs ``Get_rank``, ``Get_size`` and ``Allreduce``).
        fn: The name of the caller, for the message.

    Raises:
        TypeError: ``comm`` lacks one of those methods.
    """
    missing = [m for m in ("Get_rank", "Get_size", "Allreduce") if not hasattr(comm, m)]
    if missing:
        raise TypeError(
            f"{fn}: expected an mpi4py communicator (e.g. MPI.COMM_WORLD), got "
            f"{type(comm).__name__} without {', '.join(missing)}"
        )
