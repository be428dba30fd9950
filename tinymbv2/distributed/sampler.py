"""``DistributedSampler``: which samples each rank trains on, epoch by epoch.

PyTorch's ``torch.utils.data.DistributedSampler``, index for index. Each epoch the
dataset's indices are shuffled from ``seed + epoch`` (the same permutation on every rank:
they share the seed), made a multiple of the number of ranks, and dealt out like cards,
rank ``r`` taking positions ``r, r + P, r + 2P, ...``:

* ``drop_last=False``: the list is padded by repeating its start, so every rank gets
  ``ceil(N / P)`` samples (a few samples count twice in an epoch);
* ``drop_last=True``: the tail is cut, every rank gets ``floor(N / P)``.

The shuffle is PyTorch's own draw ([torch_randperm][tinymbv2.distributed.randperm.torch_randperm]),
so a tinymbv2 rank and a PyTorch rank with the same seed see the same samples.
Call ``set_epoch(e)`` before each epoch, as with PyTorch: without it every epoch repeats the
first one's order.
"""
from __future__ import annotations

import math

import numpy as np

from .randperm import torch_randperm


class DistributedSampler:
    """The indices of rank ``rank``'s shard of a dataset of ``len(dataset)`` samples.

    Args:
        dataset: Anything with a length (or the number of samples, an int).
        num_replicas: P, the number of ranks; None: the MPI world's size.
        rank: This rank, in ``0 .. P-1``; None: the MPI rank.
        shuffle: Reshuffle every epoch (False: in order 0 .. N-1 before dealing).
        seed: The shuffle's seed; the same on every rank.
        drop_last: Cut the tail to a multiple of P (False: pad by repeating the start).

    Raises:
        ValueError: ``rank`` outside ``0 .. P-1``, ``P < 1``, or a negative seed.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        if num_replicas is None or rank is None:
            from .world import get_world
            world = get_world()
            num_replicas = world.size if num_replicas is None else num_replicas
            rank = world.rank if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, (int, np.integer)) \
                or num_replicas < 1:
            raise ValueError(f"DistributedSampler: expected num_replicas an int >= 1, "
                             f"got {num_replicas!r}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: expected rank in [0, {num_replicas - 1}], "
                             f"got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"DistributedSampler: expected seed an int >= 0, got {seed!r}")
        n = dataset if isinstance(dataset, (int, np.integer)) else len(dataset)
        self.dataset_size = int(n)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        p = self.num_replicas
        if drop_last and n % p != 0:
            self.num_samples = math.ceil((n - p) / p)  # PyTorch's expression: floor(n / p)
        else:
            self.num_samples = math.ceil(n / p)
        self.total_size = self.num_samples * p

    def set_epoch(self, epoch: int) -> None:
        """Shuffle the next iteration from ``seed + epoch`` (call it before each epoch).

        Args:
            epoch: The epoch, an int >= 0.

        Raises:
            ValueError: ``epoch`` is not an int >= 0.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"DistributedSampler.set_epoch: expected an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's sample indices for the current epoch, (num_samples,) int64."""
        n = self.dataset_size
        if self.shuffle:
            order = torch_randperm(n, self.seed + self.epoch)
        else:
            order = np.arange(n, dtype=np.int64)
        if self.drop_last:
            order = order[:self.total_size]
        elif self.total_size > n and n > 0:
            order = np.resize(order, self.total_size)  # repeats from the start, as PyTorch pads
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(size={self.dataset_size}, rank={self.rank} of "
                f"{self.num_replicas}, shuffle={self.shuffle}, seed={self.seed}, "
                f"drop_last={self.drop_last}, epoch={self.epoch})")
