"""Data-parallel training on MPI (mpi4py): every rank runs the same model on its shard of
the batch, and the gradients are averaged by an all-reduce.

* [get_world][tinymbv2.distributed.world.get_world]: this process's rank and the world size;
* [DistributedSampler][tinymbv2.distributed.sampler.DistributedSampler]: each rank's shard of
  the data, as PyTorch's;
* [DistributedDataParallel][tinymbv2.distributed.ddp.DistributedDataParallel]: parameters
  broadcast from rank 0, gradients averaged in buckets while the backward pass runs;
* [SyncBatchNorm][tinymbv2.distributed.sync_batchnorm.SyncBatchNorm] and
  [convert_sync_batchnorm][tinymbv2.distributed.sync_batchnorm.convert_sync_batchnorm]:
  BatchNorm over the global batch;
* [mpirun_command][tinymbv2.distributed.launch.mpirun_command]: the ``mpirun`` of this
  environment.

Only ``world.py`` imports mpi4py, when a communicator is first needed.
"""
from .buckets import Bucket, assign_buckets  # noqa: F401
from .ddp import DistributedDataParallel, broadcast_arrays  # noqa: F401
from .launch import mpirun_command, mpirun_env, mpirun_path  # noqa: F401
from .sampler import DistributedSampler  # noqa: F401
from .sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm  # noqa: F401
from .training import DataParallel, ShardedLoader  # noqa: F401
from .world import World, get_world, launched_by_mpirun  # noqa: F401
