"""``mpirun -n P tinymbv2 train ...``: the command on P ranks of MPI.

``main`` comes here when a launcher's variables are in the environment
([launched_by_mpirun][tinymbv2.distributed.world.launched_by_mpirun]). The training run then
gets a [DataParallel][tinymbv2.distributed.training.DataParallel] and rank 0 alone prints
and writes. A rank that fails prints its error, naming itself, and aborts every rank
(``MPI_Abort``): the others would otherwise wait forever in their next all-reduce.
"""
from __future__ import annotations

import sys


def run_on_ranks(args, run, one_line) -> int:
    """Run the parsed command ``args`` with ``run(args)`` as one rank of ``mpirun``.

    Args:
        args: The parsed arguments (``args.command`` must be ``"train"``).
        run: The command's run function.
        one_line: Formats an exception on one line
            ([one_line][tinymbv2.cli.one_line]).

    Returns:
        The exit code of ``run`` (when every rank finished; a failure aborts them all with
        code 2, or 130 when interrupted); None for a world of one rank, which the caller
        runs as a plain process (any command).
    """
    from ..distributed import DataParallel, get_world

    world = get_world()
    if world.size == 1:
        return None
    try:
        if args.command != "train":
            raise ValueError(f"only train runs under mpirun (on {world.size} ranks), got "
                             f"{args.command}: run it as one process")
        args.data_parallel = DataParallel(world)
        return run(args)
    except BaseException as exc:  # noqa: B902 - every failure must stop the other ranks
        code = 130 if isinstance(exc, KeyboardInterrupt) else 2
        print(f"tinymbv2 {args.command}: error on rank {world.rank} of {world.size}: "
              f"{one_line(exc)}", file=sys.stderr, flush=True)
        world.comm.Abort(code)
        return code  # not reached: Abort ends the process
