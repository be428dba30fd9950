"""DistributedSampler gives each rank the very indices PyTorch's DistributedSampler gives it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler as TorchSampler

from tinymbv2.distributed import DistributedSampler
from tinymbv2.distributed.randperm import torch_randperm


@pytest.mark.parametrize("n", [0, 1, 2, 5, 37, 1000, 60001])
@pytest.mark.parametrize("seed", [0, 7, 2 ** 33 + 5])
def test_torch_randperm_is_torchs_permutation(n, seed):
    g = torch.Generator()
    g.manual_seed(seed)
    np.testing.assert_array_equal(torch_randperm(n, seed), torch.randperm(n, generator=g).numpy())


@pytest.mark.parametrize("n", [1, 5, 10, 11, 23])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_rank_every_epoch_gets_torchs_indices(n, replicas, drop_last, shuffle):
    seen = []
    for rank in range(replicas):
        ours = DistributedSampler(n, num_replicas=replicas, rank=rank, shuffle=shuffle,
                                  seed=3, drop_last=drop_last)
        theirs = TorchSampler(range(n), num_replicas=replicas, rank=rank, shuffle=shuffle,
                              seed=3, drop_last=drop_last)
        assert len(ours) == len(theirs)
        for epoch in (0, 1, 5):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs), (rank, epoch)
        ours.set_epoch(0)
        seen += list(ours)
    # the shards cover the dataset: once each when it divides evenly, padded or cut else
    if n % replicas == 0:
        assert sorted(seen) == list(range(n))
    elif drop_last:
        assert len(seen) == n // replicas * replicas and len(set(seen)) == len(seen)
    else:
        assert set(seen) == set(range(n)) and len(seen) == -(-n // replicas) * replicas


def test_epochs_differ_and_the_same_epoch_repeats():
    s = DistributedSampler(100, num_replicas=2, rank=1, seed=0)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"expected rank in \[0, 1\], got 2"):
        DistributedSampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="expected num_replicas an int >= 1, got 0"):
        DistributedSampler(10, num_replicas=0, rank=0)
    with pytest.raises(ValueError, match="expected seed an int >= 0, got -1"):
        DistributedSampler(10, num_replicas=1, rank=0, seed=-1)
    with pytest.raises(ValueError, match="set_epoch: expected an int >= 0, got -3"):
        DistributedSampler(10, num_replicas=1, rank=0).set_epoch(-3)
    with pytest.raises(ValueError, match="expected n an int >= 0"):
        torch_randperm(-1, 0)
