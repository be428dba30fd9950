"""tinymbv2.data.loader: every sample once per epoch, deterministic per seed and epoch."""
import numpy as np
import pytest

from tinymbv2.data import DataLoader, RandomHorizontalFlip


def _batch(n=8, c=3, h=10, w=12, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


# -- loader ------------------------------------------------------------------------------------
def _loader(**kw):
    images = np.arange(23, dtype=np.float32).reshape(23, 1, 1, 1)
    return DataLoader(images, np.arange(23), **{"batch_size": 5, **kw})


def test_loader_covers_every_sample_once_per_epoch():
    loader = _loader()
    assert len(loader) == 5
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
    labels = np.concatenate([b[1] for b in batches])
    assert sorted(labels) == list(range(23))
    for x, y in batches:  # images and labels stay paired
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)


def test_loader_deterministic_per_seed_and_epoch():
    def epoch_labels(loader, e):
        loader.set_epoch(e)
        return np.concatenate([y for _, y in loader])

    a, b = _loader(seed=3), _loader(seed=3)
    e0, e1 = epoch_labels(a, 0), epoch_labels(a, 1)
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(epoch_labels(b, 1), e1)  # order does not depend on history
    np.testing.assert_array_equal(epoch_labels(b, 0), e0)
    assert not np.array_equal(epoch_labels(_loader(seed=4), 0), e0)
    c = _loader(seed=3)  # without set_epoch the counter advances on each iteration
    np.testing.assert_array_equal(np.concatenate([y for _, y in c]), e0)
    np.testing.assert_array_equal(np.concatenate([y for _, y in c]), e1)
    np.testing.assert_array_equal(np.concatenate([y for _, y in _loader(shuffle=False)]),
                                  np.arange(23))


def test_loader_drop_last_and_transform():
    loader = _loader(drop_last=True)
    assert len(loader) == 4 and [len(y) for _, y in loader] == [5] * 4
    images = _batch(n=20)
    aug = RandomHorizontalFlip(0.5)
    run = lambda: [x for x, _ in DataLoader(images, np.arange(20), 8, seed=1, transform=aug)]  # noqa
    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="DataLoader: batch_size must be an int >= 1"):
        _loader(batch_size=0)
    with pytest.raises(ValueError, match=r"DataLoader: need images \(N, ...\) and labels"):
        DataLoader(np.zeros((3, 2)), np.zeros(4), 2)
