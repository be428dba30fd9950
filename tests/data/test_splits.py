"""tinymbv2.data.splits: cutting a user's arrays into train, validation and test parts."""
import numpy as np
import pytest

from tinymbv2.data import split_dataset


def test_split_dataset_on_user_arrays():
    rng = np.random.default_rng(0)
    images = rng.random((60, 3, 4, 4), dtype=np.float32)
    labels = np.repeat(np.arange(3), 20)
    s = split_dataset(images, labels, n_val=6, n_test=12, class_names=("a", "b", "c"))
    assert (len(s.train), len(s.val), len(s.test)) == (42, 6, 12)
    assert np.all(np.bincount(s.test.labels) == 4) and np.all(np.bincount(s.val.labels) == 2)
    with pytest.raises(ValueError, match="leaves no training samples"):
        split_dataset(images, labels, n_val=30, n_test=30)
