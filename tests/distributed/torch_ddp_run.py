"""PyTorch's DistributedDataParallel on the ddp_recipe run: 2 processes (torch.multiprocessing),
the gloo backend on 127.0.0.1, float64, torch's DistributedSampler shards. Started by
test_mpi_runs.py as ``python torch_ddp_run.py INIT.npz OUT.npz PORT``: the model starts
from INIT's state_dict and rank 0 writes the final one to OUT."""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

import ddp_recipe as R


def worker(rank: int, init: str, out: str, port: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    model = R.torchvision_model()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(init).items()})
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=R.LR, momentum=R.MOMENTUM)
    sampler = DistributedSampler(range(R.BATCH), num_replicas=2, rank=rank, seed=0)
    for step in range(R.STEPS):
        sampler.set_epoch(step)
        images, labels = R.batch(step)
        idx = list(sampler)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(ddp(torch.from_numpy(images[idx])),
                                                 torch.from_numpy(labels[idx]))
        loss.backward()
        optimizer.step()
    if rank == 0:
        np.savez(out, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=tuple(sys.argv[1:4]), nprocs=2, join=True)
