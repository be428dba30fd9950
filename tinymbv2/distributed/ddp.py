r"""``DistributedDataParallel``: every rank trains the same model on its shard, and the
gradients are averaged across ranks while the backward pass still runs.

With $P$ ranks, each with a shard of $B$ samples and its loss $L_r$ the mean over its shard,
the average of the ranks' gradients is the gradient of the mean loss over all $PB$ samples:

$$
\frac{1}{P} \sum_{r=1}^{P} \frac{\partial L_r}{\partial \theta}
= \frac{\partial}{\partial \theta} \frac{1}{PB} \sum_{i=1}^{PB} \ell_i
$$

so $P$ ranks take the step one process would take on the whole batch (BatchNorm aside: it
normalises each shard by its own statistics, unless it is a
[SyncBatchNorm][tinymbv2.distributed.sync_batchnorm.SyncBatchNorm]). The ranks start from
the same parameters (broadcast from rank 0 here) and take the same steps, so they stay
equal without ever sending the parameters again.

How the averaging runs, as PyTorch's reducer does it:

1. At construction the parameters that require gradients are grouped into buckets of at
   most ``bucket_cap_mb`` MiB in reverse order ([assign_buckets][tinymbv2.distributed.buckets.assign_buckets]).
2. Each parameter has a post-accumulate-grad hook. When the backward pass has finished a
   parameter's gradient, the hook copies it, times $1/P$, into its slot of the bucket's
   flat buffer. When a bucket's last slot is filled, an ``Iallreduce`` (sum) starts on the
   buffer: non-blocking, so the backward pass goes on computing the next gradients while
   the bytes travel. Buckets start in order (bucket 0 first) on every rank, since MPI
   matches collectives by the order they are called in.
3. At the end of the backward pass (``tinymbv2.autograd.queue_callback``) the all-reduces
   are waited for and each parameter's ``grad`` becomes its averaged slot.

A parameter that gets no gradient (a branch the forward pass skipped) would leave its
bucket forever incomplete. With ``find_unused_parameters=False`` (the default, as in
PyTorch) that is an error, raised at the end of that backward pass and naming the
parameters. With ``find_unused_parameters=True`` the forward pass walks the graph from
the outputs; parameters it does not reach count as ready at once, with a zero slot (as
does one that is reached but still has no gradient when the backward pass ends). After
the all-reduce, a parameter unused on every rank keeps the gradient it had (None stays
None); one used on some rank gets the average, the zeros of the other ranks included.
"""
from __future__ import annotations

import numpy as np

from .. import autograd
from ..autograd import Tensor, is_grad_enabled
from ..nn import Module
from .buckets import assign_buckets
from .world import check_comm, mpi

_MIB = 1024 * 1024


class DistributedDataParallel(Module):
    """Wrap ``model`` so that its gradients are averaged over the ranks of ``comm``.

    ``ddp(x)`` runs ``model(x)``; ``loss.backward()`` then leaves in every parameter's
    ``grad`` the average over the ranks. The wrapped model is ``ddp.module`` (its
    ``state_dict`` keys start with ``module.``, as PyTorch's do).

    Args:
        model: The tinymbv2 Module, its parameters NumPy arrays (on the CPU).
        bucket_cap_mb: The most MiB of gradients in one all-reduce (> 0).
        find_unused_parameters: Allow parameters that get no gradient in a backward pass
            (see the module); False: such a parameter is an error.
        broadcast_buffers: Broadcast the buffers (BatchNorm's running statistics) from rank 0
            before each forward pass in training, as PyTorch's default does.
        comm: The mpi4py communicator; None: ``MPI.COMM_WORLD``.

    Raises:
        TypeError: ``model`` is not a Module, ``comm`` not a communicator, or a parameter
            is not a NumPy array.
        ValueError: ``bucket_cap_mb`` is not positive.
    """

    def __init__(self, model, bucket_cap_mb: float = 25, find_unused_parameters: bool = False,
                 broadcast_buffers: bool = True, comm=None):
        super().__init__()
        if not isinstance(model, Module):
            raise TypeError(f"DistributedDataParallel: expected a tinymbv2 Module, got "
                            f"{type(model).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
                or not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: expected bucket_cap_mb > 0, got "
                             f"{bucket_cap_mb!r}")
        if comm is None:
            comm = mpi().COMM_WORLD
        check_comm(comm, "DistributedDataParallel")
        self.module = model
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not isinstance(t.data, np.ndarray):
                raise TypeError(f"DistributedDataParallel: expected NumPy arrays (a model on "
                                f"the CPU), got {type(t.data).__name__} for {name!r}")
        object.__setattr__(self, "comm", comm)
        self.rank, self.world_size = comm.Get_rank(), comm.Get_size()
        self.find_unused_parameters, self.broadcast_buffers = find_unused_parameters, broadcast_buffers
        self.bucket_cap_bytes = int(bucket_cap_mb * _MIB)

        broadcast_arrays(comm, [p for p in model.parameters()] + list(model.buffers()))
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.param_names = [n for n, _ in named]
        object.__setattr__(self, "_params", [p for _, p in named])
        self.buckets = assign_buckets([p.data for p in self._params], self.bucket_cap_bytes)
        self._slot = {}  # parameter index -> (bucket index, offset, size)
        for b, bucket in enumerate(self.buckets):
            for index, offset, size in zip(bucket.members, bucket.offsets, bucket.sizes):
                self._slot[index] = (b, offset, size)
        self._hooks = [p.register_post_accumulate_grad_hook(self._make_hook(i))
                       for i, p in enumerate(self._params)]
        self._reset()

    # -- one iteration's state ------------------------------------------------
    def _reset(self):
        self._expecting = False  # a forward pass with grad recorded, its backward to come
        self._pending = [len(b.members) for b in self.buckets]  # slots still to fill
        self._ready = np.zeros(len(self._params), dtype=bool)
        self._used = np.zeros(len(self._params), dtype=np.int32)  # got a gradient here
        self._requests = []  # one Iallreduce request per started bucket
        self._next = 0  # the next bucket to start (they start in order)
        self._callback_queued = False

    def forward(self, *args, **kwargs):
        if self._expecting and self._requests:
            raise RuntimeError(
                "DistributedDataParallel: expected to have finished reduction in the prior "
                "iteration before starting a new one; its backward pass started all-reduces "
                "that never completed (did an error interrupt it?)"
            )
        self._reset()
        training = self.module.training  # the wrapped model's mode (model.train() sets it)
        if self.broadcast_buffers and training and self.world_size > 1:
            broadcast_arrays(self.comm, list(self.module.buffers()))
        out = self.module(*args, **kwargs)
        if is_grad_enabled() and training and self._params:
            self._expecting = True
            if self.find_unused_parameters:
                reached = _leaves_reached(out)
                for i, p in enumerate(self._params):
                    if id(p) not in reached:
                        self._mark_ready(i, None)
        return out

    # -- the backward pass ----------------------------------------------------
    def _make_hook(self, index):
        def hook(param):
            if self._expecting:
                if not self._callback_queued:
                    autograd.queue_callback(self._finish)
                    self._callback_queued = True
                self._used[index] = 1
                self._mark_ready(index, param.grad)
        return hook

    def _mark_ready(self, index, grad):
        """Put parameter ``index``'s gradient (None: zeros) times 1/P in its slot; start
        every bucket that is complete and next in line."""
        if self._ready[index]:
            raise RuntimeError(
                f"DistributedDataParallel: parameter {self.param_names[index]!r} got a "
                "gradient twice in one backward pass (was the model's output used in two "
                "backward passes, or the parameter reported unused and then used?)"
            )
        self._ready[index] = True
        b, offset, size = self._slot[index]
        slot = self.buckets[b].flat[offset:offset + size]
        if grad is None:
            slot[...] = 0
        else:
            np.multiply(np.asarray(grad).reshape(-1), 1.0 / self.world_size, out=slot)
        self._pending[b] -= 1
        MPI = mpi()
        while self._next < len(self.buckets) and self._pending[self._next] == 0:
            bucket = self.buckets[self._next]
            self._requests.append(self.comm.Iallreduce(MPI.IN_PLACE, bucket.flat, op=MPI.SUM))
            self._next += 1
        if self._requests:  # lets MPI move the messages on while the backward pass runs
            MPI.Request.Testall(self._requests)

    def _finish(self):
        """End of the backward pass: wait for every all-reduce, write the averages to ``grad``."""
        self._expecting = False
        missing = [i for i in range(len(self._params)) if not self._ready[i]]
        if missing and not self.find_unused_parameters:
            mpi().Request.Waitall(self._requests)
            names = ", ".join(self.param_names[i] for i in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            self._requests = []
            raise RuntimeError(
                f"DistributedDataParallel: {len(missing)} parameter(s) got no gradient in this "
                f"backward pass: {names}{more}. Every parameter that requires grad must take "
                "part in the loss, or pass find_unused_parameters=True (or freeze them with "
                "requires_grad_(False) before wrapping the model)."
            )
        for i in missing:  # reached by the forward pass but given no gradient
            self._mark_ready(i, None)
        MPI = mpi()
        MPI.Request.Waitall(self._requests)
        self._requests = []
        used = self._used
        if self.find_unused_parameters:
            used = self._used.copy()
            self.comm.Allreduce(MPI.IN_PLACE, used, op=MPI.SUM)
        for i, p in enumerate(self._params):
            if not used[i]:
                continue  # unused on every rank: its grad stays as it was
            b, offset, size = self._slot[i]
            p.grad = self.buckets[b].flat[offset:offset + size].reshape(p.shape).copy()

    def extra_repr(self):
        return (f"rank={self.rank} of {self.world_size}, buckets={len(self.buckets)}, "
                f"bucket_cap_mb={self.bucket_cap_bytes / _MIB:g}, "
                f"find_unused_parameters={self.find_unused_parameters}")


def broadcast_arrays(comm, tensors) -> None:
    """Overwrite every tensor's array with rank 0's, in place: one ``Bcast`` per dtype.

    The arrays are packed into one flat buffer per dtype (a hundred small broadcasts would
    each pay the latency), broadcast, and unpacked.

    Args:
        comm: The communicator.
        tensors: Tensors (parameters, buffers) whose ``data`` are NumPy arrays of the same
            shapes on every rank.
    """
    MPI = mpi()
    groups = {}
    for t in tensors:
        groups.setdefault(np.dtype(t.data.dtype), []).append(t)
    for dtype in sorted(groups, key=str):  # the same order on every rank
        group = groups[dtype]
        flat = np.concatenate([np.asarray(t.data).reshape(-1) for t in group]) \
            if group else np.zeros(0, dtype)
        comm.Bcast([flat, MPI.BYTE] if dtype.kind not in "fiub" else flat, root=0)
        offset = 0
        for t in group:
            n = t.data.size
            t.data[...] = flat[offset:offset + n].reshape(t.data.shape)
            offset += n


def _leaves_reached(out) -> set:
    """ids of the leaf tensors the graph behind ``out`` (a Tensor, or a tuple, list or dict
    of them) reaches."""
    if isinstance(out, Tensor):
        roots = [out]
    elif isinstance(out, dict):
        roots = [v for v in out.values() if isinstance(v, Tensor)]
    elif isinstance(out, (list, tuple)):
        roots = [v for v in out if isinstance(v, Tensor)]
    else:
        roots = []
    return {id(t) for root in roots for t in autograd.reachable_leaves(root)}
