"""Real MPI runs: ``mpirun -n 2`` (the Open MPI of this environment) on the ddp_recipe run.

* with SyncBatchNorm, 2 ranks end with the weights of one process on the whole batch;
* without it, 2 ranks end with the weights of PyTorch's DistributedDataParallel (gloo, 2
  processes) started from the same weights and given the same shards.

Both float64, compared to 1e-10 relative (each parameter and buffer) after 5 SGD steps. A
hung run fails when its subprocess times out instead of blocking the suite.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import ddp_recipe as R
import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.distributed import mpirun_command, mpirun_env
from tinymbv2.optim import SGD

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
HANG_GUARD_S = 300  # a run takes seconds; this only turns a deadlock into a failure


def _run(argv, tmp_path):
    env = mpirun_env()
    env["PYTHONPATH"] = f"{ROOT}:{HERE}"
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _mpi_run(mode, tmp_path) -> dict:
    out = tmp_path / f"{mode}.npz"
    _run(mpirun_command(2, [sys.executable, HERE / "mpi_worker.py", mode, out]), tmp_path)
    return dict(np.load(out))


def _assert_same_state(ours: dict, theirs: dict, tol=1e-10):
    """Every entry of ``theirs`` within ``tol`` of its largest magnitude. Some entries are 0
    in exact arithmetic and hold rounding noise of about 1e-16 (the bias of a block's
    projection BatchNorm that the next block's BatchNorm follows gets a gradient of exactly
    0, and the next BatchNorm's running mean stays 0 with it): those must be noise on both
    sides, below 1e-12."""
    assert set(theirs) <= set(ours)
    zeros = [k for k in theirs if np.abs(theirs[k]).max() < 1e-12]
    assert len(zeros) < len(theirs) // 4
    for k in zeros:
        assert np.abs(ours[k]).max() < 1e-12, k
    worst = max((R.rel(ours[k], theirs[k]), k) for k in theirs if k not in zeros)
    assert worst[0] <= tol, f"largest relative difference {worst[0]:.2e} in {worst[1]}"
    moved = R.rel(theirs["classifier.1.weight"], R.tinymbv2_model().state_dict()[
        "classifier.1.weight"])
    assert moved > 1e-3  # the 5 steps did train: the comparison is not of untouched weights


def test_two_ranks_with_sync_batchnorm_match_one_process_on_the_whole_batch(tmp_path):
    ranks = _mpi_run("sync", tmp_path)
    assert ranks.pop("ranks_max_diff") == 0.0  # every rank holds the same weights
    assert ranks.pop("buckets") >= 2
    tinymbv2.use_kernels("reference")
    try:
        model = R.tinymbv2_model()
        optimizer = SGD(model.parameters(), lr=R.LR, momentum=R.MOMENTUM)
        for step in range(R.STEPS):
            images, labels = R.batch(step)
            optimizer.zero_grad()
            F.cross_entropy(model(Tensor(images)), Tensor(labels)).backward()
            optimizer.step()
    finally:
        tinymbv2.use_kernels("numba")
    _assert_same_state(ranks, model.state_dict())


def test_two_ranks_without_sync_batchnorm_match_torch_ddp(tmp_path):
    ranks = _mpi_run("ddp", tmp_path)
    assert ranks.pop("ranks_max_diff") == 0.0
    ranks.pop("buckets")
    init = tmp_path / "init.npz"
    np.savez(init, **R.tinymbv2_model().state_dict())
    with socket.socket() as s:  # a free port on the loopback for gloo's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "torch.npz"
    _run([sys.executable, HERE / "torch_ddp_run.py", init, out, str(port)], tmp_path)
    _assert_same_state(ranks, dict(np.load(out)))


def test_a_parameter_used_on_one_rank_gets_the_average_with_the_others_zeros(tmp_path):
    """find_unused_parameters=True on 2 ranks: ``a`` (used on both) gets the mean of the two
    local gradients, ``b`` (used on rank 1 only) half of rank 1's, and ``c`` (used on none)
    keeps no gradient, as PyTorch's DDP leaves it."""
    _run(mpirun_command(2, [sys.executable, HERE / "mpi_worker.py", "unused",
                            tmp_path / "unused.npz"]), tmp_path)
    got = dict(np.load(tmp_path / "unused.npz"))
    local = []
    for rank in (0, 1):
        net, loss_of = R.branch_net(rank)
        loss_of(net).backward()
        local.append({k: p.grad for k, p in net.named_parameters() if p.grad is not None})
    assert sorted(got) == ["a.bias", "a.weight", "b.bias", "b.weight"]
    for k in ("a.weight", "a.bias"):
        np.testing.assert_allclose(got[k], (local[0][k] + local[1][k]) / 2, rtol=1e-14)
    for k in ("b.weight", "b.bias"):
        assert k not in local[0]
        np.testing.assert_allclose(got[k], local[1][k] / 2, rtol=1e-14)
