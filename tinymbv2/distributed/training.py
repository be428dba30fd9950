"""What the training job needs to run on several ranks: ``mpirun -n P tinymbv2 train ...``.

[run_training][tinymbv2.train.run.run_training] and [fit][tinymbv2.train.trainer.fit] take
a [DataParallel][tinymbv2.distributed.training.DataParallel] and then

* build the same model on every rank (the same seed; DistributedDataParallel broadcasts
  rank 0's anyway) with its BatchNorms made [SyncBatchNorm][tinymbv2.distributed.sync_batchnorm.SyncBatchNorm];
* iterate the same loader on every rank (the same seed: the same order and augmentation)
  and give rank ``r`` the ``r``-th of ``P`` equal slices of each batch
  ([ShardedLoader][tinymbv2.distributed.training.ShardedLoader]), so ``--batch-size`` is the
  global batch: P ranks take the very steps one process takes (to rounding);
* train through [DistributedDataParallel][tinymbv2.distributed.ddp.DistributedDataParallel]
  and log each epoch's loss and accuracy averaged over the ranks;
* let rank 0 alone write the log lines, the progress bars, the checkpoints and the report.
  The checkpoint records the number of ranks, and a resume must use as many.

Validation and the final test run on every rank over the whole split (the same weights
give the same numbers); only rank 0 reports them.
"""
from __future__ import annotations

import numpy as np

from .ddp import DistributedDataParallel
from .sync_batchnorm import convert_sync_batchnorm
from .world import World, mpi


class DataParallel:
    """A training run spread over the ranks of ``world``.

    Args:
        world: The [World][tinymbv2.distributed.world.World] (``get_world()``).
        sync_batchnorm: Make the BatchNorms SyncBatchNorm (False: each rank normalises by its
            own slice's statistics, and P ranks no longer take one process's steps).
        bucket_cap_mb: DistributedDataParallel's bucket size.
    """

    def __init__(self, world: World, sync_batchnorm: bool = True, bucket_cap_mb: float = 25):
        if not isinstance(world, World):
            raise TypeError(f"DataParallel: expected a World (get_world()), got "
                            f"{type(world).__name__}")
        self.world, self.sync_batchnorm, self.bucket_cap_mb = world, sync_batchnorm, bucket_cap_mb

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    @property
    def size(self) -> int:
        return self.world.size

    def check_batch_size(self, batch_size: int) -> None:
        """Raise a ValueError unless ``batch_size`` (the global batch) splits evenly.

        Args:
            batch_size: The global batch size.
        """
        if batch_size % self.size:
            raise ValueError(f"--batch-size is the global batch, split over {self.size} ranks: "
                             f"expected a multiple of {self.size}, got {batch_size}")

    def prepare(self, model):
        """``model`` with its BatchNorms made SyncBatchNorm (when ``sync_batchnorm``).

        Args:
            model: The model, built the same on every rank.

        Returns:
            The model (changed in place, same Parameter objects).
        """
        if self.sync_batchnorm:
            return convert_sync_batchnorm(model, self.world.comm)
        return model

    def wrap(self, net):
        """``net`` (the model or its fused view) in DistributedDataParallel.

        Args:
            net: What the training steps run.

        Returns:
            The wrapper; its ``module`` is ``net``.
        """
        return DistributedDataParallel(net, bucket_cap_mb=self.bucket_cap_mb,
                                       comm=self.world.comm)

    def shard(self, loader) -> "ShardedLoader":
        """This rank's slices of ``loader``'s batches.

        Args:
            loader: The DataLoader of the whole training split (same seed on every rank).

        Returns:
            The [ShardedLoader][tinymbv2.distributed.training.ShardedLoader].
        """
        return ShardedLoader(loader, self.world.rank, self.size)

    def mean(self, values):
        """The mean over the ranks of each of ``values`` (numbers; None stays None).

        Args:
            values: The numbers of this rank, the same list on every rank.

        Returns:
            A list of their means.
        """
        present = [v for v in values if v is not None]
        total = np.array(present, dtype=np.float64)
        self.world.comm.Allreduce(mpi().IN_PLACE, total, op=mpi().SUM)
        means = iter((total / self.size).tolist())
        return [None if v is None else next(means) for v in values]


class ShardedLoader:
    """Rank ``rank``'s ``1/size`` slice of every batch of ``loader``.

    Every rank iterates the whole loader (the loader is cheap next to the network: an index
    shuffle and the augmentation of a batch), so the ranks agree on the order and the
    augmentation without a message, and the slices of one step make up one process's batch.
    A batch is cut to a multiple of ``size`` first: the last one of an epoch may lose up to
    ``size - 1`` samples (a batch smaller than ``size`` is left out).

    Args:
        loader: The [DataLoader][tinymbv2.data.loader.DataLoader].
        rank: This rank.
        size: The number of ranks.
    """

    def __init__(self, loader, rank: int, size: int):
        self.loader, self.rank, self.size = loader, rank, size

    def set_epoch(self, epoch: int) -> None:
        """The loader's [set_epoch][tinymbv2.data.loader.DataLoader.set_epoch].

        Args:
            epoch: The epoch to produce next.
        """
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        n, b = len(self.loader.labels), self.loader.batch_size
        full, last = divmod(n, b)
        if self.loader.drop_last:
            last = 0
        return full + (last >= self.size)

    def __iter__(self):
        for images, labels in self.loader:
            per = len(labels) // self.size
            if per == 0:
                continue
            part = slice(self.rank * per, (self.rank + 1) * per)
            yield images[part], labels[part]

    def __getattr__(self, name):  # batch_size, seed, ... as the loader has them
        return getattr(self.__dict__["loader"], name)
