r"""``SyncBatchNorm``: BatchNorm whose statistics are those of the global batch, over all ranks.

Data parallelism gives each rank a shard of the batch. A plain BatchNorm normalises each
shard by the shard's own mean and variance, so $P$ ranks of $B$ samples do not compute
what one process does on the $PB$ samples (and the smaller the shard, the noisier its
statistics). SyncBatchNorm all-reduces what the statistics are made of. For channel $c$,
with $M_r = N_r H W$ values on rank $r$ and $M = \sum_r M_r$:

$$
\mu = \frac{1}{M} \sum_r \sum_i x_i, \qquad
\sigma^2 = \frac{1}{M} \sum_r \sum_i x_i^2 - \mu^2
$$

one ``Allreduce`` of the per-rank counts, sums and sums of squares ($2C + 1$ numbers,
summed in float64). Every rank then normalises its shard with the same $\mu$ and $\sigma^2$:
$\hat{x} = (x - \mu) / \sqrt{\sigma^2 + \epsilon}$, $y = \gamma \hat{x} + \beta$.

The backward pass is BatchNorm's (see [tinymbv2.functional.batchnorm][]) with its two
means taken over the global batch, one more ``Allreduce`` of two sums per channel:

$$
\frac{\partial L}{\partial x} = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}}
\left(g - \frac{1}{M}\sum_{\text{all ranks}} g - \hat{x}\,\frac{1}{M}\sum_{\text{all ranks}} g\hat{x}\right)
$$

where $g$ on each rank is the gradient of that rank's loss: this is the gradient of the
sum of the ranks' losses. $\partial L / \partial \gamma = \sum g\hat{x}$ and
$\partial L / \partial \beta = \sum g$ stay the sums over the rank's own shard, as in
PyTorch: ``DistributedDataParallel`` averages them with the other gradients, which makes
the whole step the one of the mean loss over the global batch.

The running statistics move as one process's would on the global batch, with the unbiased
variance $\sigma^2 M / (M - 1)$. In evaluation mode SyncBatchNorm is a plain BatchNorm2d.
``tinymbv2.fuse`` fuses exact BatchNorm2d layers only, so SyncBatchNorm layers always run
as themselves (a fused BatchNorm would normalise by the shard's statistics).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from ..functional.batchnorm import update_running_stats
from ..nn import BatchNorm2d, Module
from .world import check_comm, mpi


class SyncBatchNormTrain(Function):
    """Training-mode BatchNorm over the global batch (see the module for the math).

    readable: this class's NumPy; the two ``Allreduce`` calls are the whole difference from
    BatchNorm's training op.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, comm, stats_out):
        axes, per_channel = (0, 2, 3), (1, -1, 1, 1)
        c = x.shape[1]
        local = np.empty(2 * c + 1, dtype=np.float64)
        x64 = x.astype(np.float64, copy=False)
        local[:c] = x64.sum(axis=axes)
        local[c:2 * c] = np.square(x64).sum(axis=axes)
        local[2 * c] = x.shape[0] * x.shape[2] * x.shape[3]
        comm.Allreduce(mpi().IN_PLACE, local, op=mpi().SUM)
        count = local[2 * c]
        mean = local[:c] / count
        var = np.maximum(local[c:2 * c] / count - mean * mean, 0.0)  # the biased variance
        invstd = 1.0 / np.sqrt(var + eps)
        xhat = (x - mean.astype(x.dtype).reshape(per_channel)) * invstd.astype(x.dtype).reshape(
            per_channel)
        ctx.save_for_backward(xhat, invstd.astype(x.dtype), weight)
        ctx.comm, ctx.count = comm, count
        stats_out.update(mean=mean, invstd=invstd, count=count)
        return xhat * weight.reshape(per_channel) + bias.reshape(per_channel)

    @staticmethod
    def backward(ctx, g):
        xhat, invstd, weight = ctx.saved_tensors
        axes, per_channel = (0, 2, 3), (1, -1, 1, 1)
        c = g.shape[1]
        sum_g = g.sum(axis=axes)
        sum_g_xhat = (g * xhat).sum(axis=axes)
        both = np.concatenate([sum_g, sum_g_xhat]).astype(np.float64)
        ctx.comm.Allreduce(mpi().IN_PLACE, both, op=mpi().SUM)
        mean_g = (both[:c] / ctx.count).astype(g.dtype).reshape(per_channel)
        mean_g_xhat = (both[c:] / ctx.count).astype(g.dtype).reshape(per_channel)
        gx = (weight * invstd).reshape(per_channel) * (g - mean_g - xhat * mean_g_xhat)
        return gx, sum_g_xhat, sum_g, None, None, None


class SyncBatchNorm(BatchNorm2d):
    r"""A BatchNorm2d that normalises by the statistics of the batch over all ranks of ``comm``.

    The parameters, buffers and ``state_dict`` keys are BatchNorm2d's; see the module for the
    math. Evaluation mode with running statistics is BatchNorm2d's own forward.

    Args:
        num_features: C, the channels of the input (N, C, H, W).
        eps: $\epsilon$, added to the variance.
        momentum: How far one batch moves the running statistics; None: cumulative average.
        affine: Whether the layer has the learned $\gamma$ and $\beta$.
        track_running_stats: Whether it keeps running statistics.
        comm: The mpi4py communicator; None: ``MPI.COMM_WORLD`` (looked up at the first
            training step, so a model can be built before MPI starts).
        dtype: The parameters' and buffers' dtype.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, comm=None, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        if comm is not None:
            check_comm(comm, "SyncBatchNorm")
        self.comm = comm

    def forward(self, x):
        if not self.training and self.track_running_stats:
            return super().forward(x)  # the running statistics: nothing to synchronise
        self.check_input(x)
        if not isinstance(x.data, np.ndarray):
            raise TypeError(f"{self!r}: expected a NumPy input (SyncBatchNorm runs on the CPU), "
                            f"got {type(x.data).__name__}")
        momentum = self.count_batch()
        running_mean, running_var = self.running_stats()
        c = self.num_features
        weight = self.weight if self.affine else Tensor(np.ones(c, dtype=x.dtype))
        bias = self.bias if self.affine else Tensor(np.zeros(c, dtype=x.dtype))
        comm = self.comm if self.comm is not None else mpi().COMM_WORLD
        stats = {}
        y = SyncBatchNormTrain.apply(x, weight, bias, self.eps, comm, stats)
        if stats["count"] <= 1:
            raise ValueError(f"{self!r}: expected more than 1 value per channel over all ranks "
                             f"when training, got {int(stats['count'])}")
        if running_mean is not None and self.training:
            update_running_stats(running_mean, running_var, stats, self.eps, momentum,
                                 stats["count"])
        return y

    @classmethod
    def convert_sync_batchnorm(cls, module, comm=None):
        """PyTorch's spelling of [convert_sync_batchnorm][tinymbv2.distributed.sync_batchnorm.convert_sync_batchnorm].

        Args:
            module: A Module (a BatchNorm2d itself is converted and returned).
            comm: The communicator of the new layers; None: ``MPI.COMM_WORLD``.

        Returns:
            ``module`` converted.
        """
        return convert_sync_batchnorm(module, comm)


def _world_of_one(layer) -> bool:
    comm = layer.comm if layer.comm is not None else mpi().COMM_WORLD
    return comm.Get_size() == 1


def _refuse_no_affine(layer):
    raise ValueError(f"{layer!r}: training across ranks needs affine=True (weight and bias)")


def convert_sync_batchnorm(module, comm=None):
    """Replace every BatchNorm2d in ``module`` by a SyncBatchNorm holding the same Parameter
    and buffer objects (PyTorch's ``SyncBatchNorm.convert_sync_batchnorm``).

    Args:
        module: A Module (a BatchNorm2d itself is converted and returned).
        comm: The communicator of the new layers; None: ``MPI.COMM_WORLD``.

    Returns:
        ``module`` with its BatchNorm2d layers replaced in place, or the new SyncBatchNorm
        when ``module`` is a BatchNorm2d.

    Raises:
        TypeError: ``module`` is not a Module.
    """
    if not isinstance(module, Module):
        raise TypeError(f"convert_sync_batchnorm: expected a tinymbv2 Module, got "
                        f"{type(module).__name__}")
    if isinstance(module, BatchNorm2d) and not isinstance(module, SyncBatchNorm):
        if comm is not None:
            check_comm(comm, "convert_sync_batchnorm")
        sync = module.shallow_copy(SyncBatchNorm)  # the same Parameter and buffer objects
        sync.comm = comm
        return sync
    for name, child in list(module.named_children()):
        converted = convert_sync_batchnorm(child, comm)
        if converted is not child:
            setattr(module, name, converted)
    return module
