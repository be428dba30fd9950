"""One rank of a tinymbv2 data-parallel run, started by test_mpi_runs.py as
``mpirun -n 2 python mpi_worker.py MODE OUT``: the ddp_recipe run with
DistributedDataParallel ("ddp"), or with its BatchNorms converted to SyncBatchNorm first
("sync"); or one backward pass of ddp_recipe.branch_net with find_unused_parameters
("unused"), rank 0 writing its gradients. Rank 0 writes the final state_dict to OUT (.npz) with ``ranks_max_diff``, the
largest difference between its parameters and any other rank's. A failing rank prints its
error and aborts all of them, so mpirun ends instead of hanging."""
from __future__ import annotations

import sys
import traceback

import numpy as np
from mpi4py import MPI

import ddp_recipe as R


def main(mode: str, out: str) -> None:
    import tinymbv2
    from tinymbv2 import Tensor
    from tinymbv2 import functional as F
    from tinymbv2.distributed import DistributedDataParallel, DistributedSampler
    from tinymbv2.distributed.sync_batchnorm import convert_sync_batchnorm
    from tinymbv2.optim import SGD

    tinymbv2.use_kernels("reference")  # no Numba compilation in the test's subprocesses
    comm = MPI.COMM_WORLD
    if mode == "unused":
        net, loss_of = R.branch_net(comm.rank)
        loss_of(DistributedDataParallel(net, find_unused_parameters=True)).backward()
        if comm.rank == 0:
            np.savez(out, **{k: p.grad for k, p in net.named_parameters() if p.grad is not None})
        return
    model = R.tinymbv2_model()
    if mode == "sync":
        model = convert_sync_batchnorm(model)
    elif mode != "ddp":
        raise ValueError(f"mpi_worker: expected mode 'ddp', 'sync' or 'unused', got {mode!r}")
    if comm.rank != 0:  # different starting weights: the broadcast from rank 0 must fix them
        for p in model.parameters():
            p.data += 1.0
    ddp = DistributedDataParallel(model, bucket_cap_mb=R.BUCKET_CAP_MB)
    optimizer = SGD(model.parameters(), lr=R.LR, momentum=R.MOMENTUM)
    sampler = DistributedSampler(R.BATCH, seed=0)
    for step in range(R.STEPS):
        sampler.set_epoch(step)
        images, labels = R.batch(step)
        idx = sampler.indices()
        optimizer.zero_grad()
        loss = F.cross_entropy(ddp(Tensor(images[idx])), Tensor(labels[idx]))
        loss.backward()
        optimizer.step()
    state = model.state_dict()
    flat = np.concatenate([p.data.ravel() for p in model.parameters()])
    mine = flat.copy()
    comm.Bcast(flat, root=0)
    diff = np.array([np.abs(mine - flat).max()])
    comm.Allreduce(MPI.IN_PLACE, diff, op=MPI.MAX)
    if comm.rank == 0:
        np.savez(out, ranks_max_diff=diff[0], buckets=len(ddp.buckets), **state)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
