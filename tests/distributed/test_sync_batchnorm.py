"""SyncBatchNorm in a world of one (MPI.COMM_SELF, watched by a spy): PyTorch's BatchNorm2d
forward, backward and running statistics in float64 on random shapes with a random upstream
gradient, one all-reduce each way, convert_sync_batchnorm sharing the parameters, and the
fusion pass leaving it alone. The 2-rank run against one process is in test_mpi_runs.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mpi4py import MPI

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2 import functional as F
from tinymbv2.distributed import SyncBatchNorm, convert_sync_batchnorm
from tinymbv2.models import mobilenet_v2


class CountingComm:
    """COMM_SELF, counting its Allreduce calls."""

    def __init__(self):
        self.comm, self.allreduces = MPI.COMM_SELF, 0

    def Allreduce(self, sendbuf, recvbuf, op):
        self.allreduces += 1
        return self.comm.Allreduce(sendbuf, recvbuf, op=op)

    def __getattr__(self, name):
        return getattr(self.comm, name)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (5, 1, 3, 3), (1, 4, 2, 7)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_forward_backward_and_running_stats_are_torch_batchnorm2d(shape, momentum):
    rng = np.random.default_rng(sum(shape))
    c = shape[1]
    x_np = rng.standard_normal(shape) * 3 + 2
    g_np = rng.standard_normal(shape)
    w_np, b_np = 1 + 0.2 * rng.standard_normal(c), 0.1 * rng.standard_normal(c)
    comm = CountingComm()
    ours = SyncBatchNorm(c, momentum=momentum, comm=comm, dtype=np.float64)
    ours.weight.data[...], ours.bias.data[...] = w_np, b_np
    theirs = torch.nn.BatchNorm2d(c, momentum=momentum).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(w_np))
        theirs.bias.copy_(torch.from_numpy(b_np))
    for step in range(2):  # two steps: the running statistics move twice
        x = Tensor(x_np + step, requires_grad=True)
        tx = torch.tensor(x_np + step, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        y.backward(g_np)
        ty.backward(torch.from_numpy(g_np))
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_mean.data, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var.data, theirs.running_var.numpy(), rtol=1e-12)
    assert int(ours.num_batches_tracked.data) == 2
    assert comm.allreduces == 4  # one forward and one backward per step
    ours.eval()
    theirs.eval()
    with tinymbv2.no_grad():
        np.testing.assert_allclose(ours(Tensor(x_np)).data,
                                   theirs(torch.from_numpy(x_np)).detach().numpy(), rtol=1e-12)
    assert comm.allreduces == 4  # evaluation mode uses the running statistics: no message


def test_without_affine_parameters_it_normalises_with_gamma_1_beta_0():
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((3, 2, 4, 4))
    ours = SyncBatchNorm(2, affine=False, comm=MPI.COMM_SELF, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(2, affine=False).double()
    np.testing.assert_allclose(ours(Tensor(x_np)).data,
                               theirs(torch.from_numpy(x_np)).detach().numpy(), rtol=1e-12)


def test_convert_sync_batchnorm_replaces_every_batchnorm_and_shares_its_state():
    model = mobilenet_v2(0.35, 10, small_input=True, seed=0)
    params = {k: id(p) for k, p in model.named_parameters()}
    keys = list(model.state_dict())
    n_bn = sum(type(m) is nn.BatchNorm2d for m in model.modules())
    converted = convert_sync_batchnorm(model, comm=MPI.COMM_SELF)
    assert converted is model
    assert sum(type(m) is SyncBatchNorm for m in model.modules()) == n_bn > 0
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert {k: id(p) for k, p in model.named_parameters()} == params
    assert list(model.state_dict()) == keys
    bn = nn.BatchNorm2d(3)
    sync = convert_sync_batchnorm(bn)
    assert type(sync) is SyncBatchNorm and sync.weight is bn.weight
    assert sync.running_var is bn.running_var
    with pytest.raises(TypeError, match="expected a tinymbv2 Module, got str"):
        convert_sync_batchnorm("model")
    with pytest.raises(TypeError, match="expected an mpi4py communicator"):
        SyncBatchNorm(3, comm=3)


def test_the_fusion_pass_leaves_sync_batchnorm_to_run_as_itself():
    """fuse() matches exact BatchNorm2d types, so the fused view still all-reduces, and agrees
    with the model it views."""
    comm = CountingComm()
    model = convert_sync_batchnorm(
        mobilenet_v2(0.35, 10, small_input=True, seed=0, dropout=0.0).double(), comm=comm)
    n_sync = sum(type(m) is SyncBatchNorm for m in model.modules())
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 16, 16)))
    labels = Tensor(np.array([1, 3]))
    with tinymbv2.use_kernels("reference"):
        fused_loss = F.cross_entropy(tinymbv2.fuse(model)(x), labels)
        assert comm.allreduces == n_sync
        fused_loss.backward()
        assert comm.allreduces == 2 * n_sync
        fused_grads = [p.grad.copy() for p in model.parameters()]
        model.zero_grad()
        F.cross_entropy(model(x), labels).backward()
    for p, g in zip(model.parameters(), fused_grads):
        np.testing.assert_allclose(g, p.grad, rtol=1e-12, atol=1e-15)


def test_a_single_value_per_channel_over_all_ranks_is_an_error():
    layer = SyncBatchNorm(2, comm=MPI.COMM_SELF, dtype=np.float64)
    with pytest.raises(ValueError, match="expected more than 1 value per channel over all "
                                         "ranks when training, got 1"):
        layer(Tensor(np.ones((1, 2, 1, 1))))
