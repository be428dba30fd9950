"""DistributedDataParallel's buckets, in one process (a world of one, MPI.COMM_SELF, watched
by a spy): one all-reduce per bucket, buckets within the cap in reverse parameter order,
started during the backward pass, and unused parameters as PyTorch's
find_unused_parameters documents. The runs on 2 ranks are in test_mpi_runs.py."""
from __future__ import annotations

import numpy as np
import pytest

from mpi4py import MPI

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2 import functional as F
from tinymbv2.distributed.buckets import assign_buckets
from tinymbv2.distributed.ddp import DistributedDataParallel


class SpyComm:
    """COMM_SELF, recording each Iallreduce: its buffer and how many of the model's
    parameters had a gradient when it started."""

    def __init__(self, params):
        self.comm, self.params, self.calls = MPI.COMM_SELF, params, []

    def Iallreduce(self, sendbuf, recvbuf, op):
        ready = sum(p.grad is not None for p in self.params)
        self.calls.append((recvbuf, ready))
        return self.comm.Iallreduce(sendbuf, recvbuf, op=op)

    def __getattr__(self, name):
        return getattr(self.comm, name)


class Net(nn.Module):
    """Four Linear layers (8 parameters of various sizes) and a branch ``spare`` that the
    forward pass uses only when asked."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 40, dtype=np.float64)
        self.b = nn.Linear(40, 30, dtype=np.float64)
        self.spare = nn.Linear(30, 30, dtype=np.float64)
        self.c = nn.Linear(30, 20, dtype=np.float64)
        self.d = nn.Linear(20, 3, dtype=np.float64)
        self.use_spare = False

    def forward(self, x):
        h = F.relu(self.b(F.relu(self.a(x))))
        if self.use_spare:
            h = self.spare(h)
        return self.d(F.relu(self.c(h)))


def _net(seed=0):
    tinymbv2.manual_seed(seed)
    return Net()


def _loss(model, seed=1):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((5, 6)))
    return F.cross_entropy(model(x), Tensor(rng.integers(0, 3, 5)))


def _wrap(model, **kwargs):
    spy = SpyComm(list(model.parameters()))
    return DistributedDataParallel(model, comm=spy, **kwargs), spy


def test_one_allreduce_per_bucket_within_the_cap_in_reverse_order_during_backward():
    model = _net()
    model.use_spare = True
    params = list(model.parameters())
    cap_mb = 1000 * 8 / 2 ** 20  # 1000 float64 values
    ddp, spy = _wrap(model, bucket_cap_mb=cap_mb)
    sizes = [p.size for p in params]
    assert len(ddp.buckets) >= 3
    for bucket in ddp.buckets:
        assert bucket.nbytes <= 1000 * 8 or len(bucket.members) == 1
    # the buckets hold the parameters last to first, each bucket in that order too
    assert [i for b in ddp.buckets for i in b.members] == list(range(len(params)))[::-1]
    # and each is as full as the cap allows: the next parameter would not have fitted
    for bucket, nxt in zip(ddp.buckets, ddp.buckets[1:]):
        assert bucket.nbytes + sizes[nxt.members[0]] * 8 > 1000 * 8

    for step in range(2):
        spy.calls.clear()
        model.zero_grad()
        _loss(ddp, seed=step).backward()
        assert [buf is b.flat for (buf, _), b in zip(spy.calls, ddp.buckets)] == \
            [True] * len(ddp.buckets)
        assert len(spy.calls) == len(ddp.buckets)
        ready_at_start = [ready for _, ready in spy.calls]
        assert ready_at_start[0] < len(params)  # the first bucket left before the backward ended
        assert ready_at_start == sorted(ready_at_start)


def test_a_world_of_one_gives_the_plain_gradients_and_the_cap_splits_a_large_parameter():
    plain, wrapped = _net(), _net()
    plain.use_spare = wrapped.use_spare = True
    ddp, spy = _wrap(wrapped, bucket_cap_mb=100 * 8 / 2 ** 20)  # smaller than most weights
    _loss(plain).backward()
    _loss(ddp).backward()
    for (name, p), q in zip(plain.named_parameters(), wrapped.parameters()):
        np.testing.assert_array_equal(q.grad, p.grad, err_msg=name)
    big = [b for b in ddp.buckets if b.nbytes > 100 * 8]
    assert big and all(len(b.members) == 1 for b in big)
    assert len(spy.calls) == len(ddp.buckets)


def test_an_unused_parameter_is_an_error_naming_it_without_find_unused_parameters():
    ddp, _ = _wrap(_net())
    with pytest.raises(RuntimeError, match=r"2 parameter\(s\) got no gradient in this backward "
                                           r"pass: spare.weight, spare.bias.*find_unused_parameters=True"):
        _loss(ddp).backward()
    # the next iteration starts clean, and a model that uses everything trains
    ddp.module.use_spare = True
    ddp.module.zero_grad()
    _loss(ddp).backward()
    assert all(p.grad is not None for p in ddp.module.parameters())


def test_find_unused_parameters_counts_unused_slots_as_zero_and_leaves_their_grad():
    plain, wrapped = _net(), _net()
    ddp, spy = _wrap(wrapped, find_unused_parameters=True, bucket_cap_mb=1000 * 8 / 2 ** 20)
    _loss(plain).backward()
    _loss(ddp).backward()
    assert len(spy.calls) == len(ddp.buckets)
    assert wrapped.spare.weight.grad is None and wrapped.spare.bias.grad is None
    for (name, p), q in zip(plain.named_parameters(), wrapped.parameters()):
        if "spare" not in name:
            np.testing.assert_array_equal(q.grad, p.grad, err_msg=name)
    # their slots were zeroed, not left with whatever the buffer held
    for i in (4, 5):  # spare.weight, spare.bias
        b, offset, size = ddp._slot[i]
        assert np.all(ddp.buckets[b].flat[offset:offset + size] == 0)
    # an unused parameter keeps a gradient it already had
    wrapped.spare.weight.grad = np.full((30, 30), 7.0)
    _loss(ddp).backward()
    np.testing.assert_array_equal(wrapped.spare.weight.grad, np.full((30, 30), 7.0))


def test_assign_buckets_groups_by_dtype_and_checks_the_cap():
    arrays = [np.zeros(10), np.zeros(10, np.float32), np.zeros(10), np.zeros(10, np.float32)]
    buckets = assign_buckets(arrays, cap_bytes=1000)
    assert [(b.dtype, b.members) for b in buckets] == [
        (np.dtype(np.float32), [3, 1]), (np.dtype(np.float64), [2, 0])]
    assert [b.flat.size for b in buckets] == [20, 20]
    with pytest.raises(ValueError, match="expected a positive cap in bytes, got 0"):
        assign_buckets(arrays, 0)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="expected a tinymbv2 Module, got int"):
        DistributedDataParallel(3, comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="expected bucket_cap_mb > 0, got 0"):
        DistributedDataParallel(_net(), bucket_cap_mb=0, comm=MPI.COMM_SELF)
    with pytest.raises(TypeError, match="expected an mpi4py communicator"):
        DistributedDataParallel(_net(), comm=object())


def test_state_dict_keys_carry_the_module_prefix_like_torch():
    ddp = DistributedDataParallel(_net(), comm=MPI.COMM_SELF)
    assert list(ddp.state_dict())[:2] == ["module.a.weight", "module.a.bias"]
