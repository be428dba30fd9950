"""A minimal, deterministic mini-batch loader over in-memory NumPy arrays."""
from __future__ import annotations

import numpy as np


class DataLoader:
    """Yield ``(images, labels)`` mini-batches, shuffled reproducibly per epoch.

    Each batch is ``(images[idx], labels[idx])`` (copies), with ``transform(batch, rng)``
    applied to the images.

    Determinism: the order of epoch ``e`` is a permutation drawn from a generator seeded by
    ``(seed, e)`` and the augmentation draws from a second, independent generator of the
    same seed sequence, so epoch ``e`` always looks the same for a given seed, whatever
    happened before, and two epochs differ. The epoch is ``loader.epoch``: it advances by
    one each time an iteration starts, or set it with ``loader.set_epoch(e)`` (as in
    PyTorch's DistributedSampler) before iterating, e.g. when resuming from a checkpoint.

    Args:
        images: The images (N, ...).
        labels: The labels (N,).
        batch_size: The samples per batch, an int >= 1.
        shuffle: Serve each epoch in a new order (False: 0, 1, ..., N - 1).
        seed: The seed of the order and the augmentation, an int >= 0.
        transform: ``transform(batch, rng)`` applied to each batch of images; None: none.
        drop_last: Leave out the last, smaller batch.

    Raises:
        TypeError: ``transform`` is not callable.
        ValueError: Shapes that do not fit, an empty dataset, a bad batch size or seed, or
            ``drop_last`` with a batch larger than the dataset.
    """

    def __init__(self, images, labels, batch_size: int, shuffle: bool = True, seed: int = 0,
                 transform=None, drop_last: bool = False):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim < 1 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"DataLoader: need images (N, ...) and labels (N,), got shapes "
                             f"{images.shape} and {labels.shape}")
        if len(labels) == 0:
            raise ValueError("DataLoader: the dataset is empty")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"DataLoader: seed must be an int >= 0, got {seed!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got {type(transform).__name__}")
        if drop_last and batch_size > len(labels):
            raise ValueError(f"DataLoader: drop_last with batch_size {batch_size} > {len(labels)} "
                             f"samples would yield no batch at all")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.transform, self.drop_last = transform, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, b = len(self.labels), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of epoch ``epoch``, in the order they are served."""
        n = len(self.labels)
        if not self.shuffle:
            return np.arange(n)
        shuffle_seq, _ = np.random.SeedSequence([self.seed, epoch]).spawn(2)
        return np.random.default_rng(shuffle_seq).permutation(n)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        order = self.order(epoch)
        _, aug_seq = np.random.SeedSequence([self.seed, epoch]).spawn(2)
        aug_rng = np.random.default_rng(aug_seq)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            x, y = self.images[idx], self.labels[idx]
            if self.transform is not None:
                x = self.transform(x, aug_rng)
            yield x, y

    def __repr__(self):
        return (f"DataLoader({len(self.labels)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, "
                f"epoch={self.epoch})")
