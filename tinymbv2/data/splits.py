"""A dataset cut into train, validation and test parts: the containers and a fixed stratified split.

The split is stratified (each class keeps its share in every part, up to rounding by
largest remainders) and fixed: the generator is ``np.random.default_rng(SPLIT_SEED)``
with ``SPLIT_SEED = 1801`` (after the paper's arXiv number, 1801.04381), so every call,
on every machine, gives the same images in the same parts. Pass ``seed=`` only to study
how much a result depends on the split.

Images are float32 ``(N, C, H, W)`` (NCHW), labels int64 ``(N,)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_SEED = 1801


@dataclass(frozen=True)
class Split:
    """One part of a dataset: ``images`` float32 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(f"Split: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset cut into ``train``, ``val`` and ``test`` [Split][tinymbv2.data.splits.Split]s."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)`` of one image."""
        return tuple(self.train.images.shape[1:])

    def __repr__(self) -> str:
        return (f"DatasetSplits({self.name!r}, image {self.image_shape}, {self.num_classes} classes,"
                f" train={len(self.train)}, val={len(self.val)}, test={len(self.test)})")


def _allocate(total: int, counts: np.ndarray) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder, exact sum)."""
    exact = total * counts / counts.sum()
    base = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: total - base.sum()]] += 1
    return base


def stratified_split(labels, n_val: int, n_test: int, seed: int = SPLIT_SEED):
    """Indices ``(train, val, test)``: disjoint, covering all samples, each class in proportion.

    Per class the indices are permuted with ``np.random.default_rng(seed)`` and cut into
    test, val, train; each part's indices come back sorted.

    Args:
        labels: The integer labels (N,).
        n_val: The size of the validation part.
        n_test: The size of the test part.
        seed: The split's seed.

    Returns:
        ``(train, val, test)``, sorted index arrays.

    Raises:
        ValueError: Labels that are not a 1-D integer array, a negative size, or sizes that
            leave no training sample.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"stratified_split: labels must be a 1-D integer array, got "
                         f"shape {labels.shape} dtype {labels.dtype}")
    n = len(labels)
    for name, v in (("n_val", n_val), ("n_test", n_test)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"stratified_split: {name} must be an integer >= 0, got {v!r}")
    if n_val + n_test >= n:
        raise ValueError(f"stratified_split: n_val + n_test = {n_val + n_test} leaves no training "
                         f"samples out of {n}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    test_per, val_per = _allocate(n_test, counts), _allocate(n_val, counts)
    parts = ([], [], [])
    for c, nt, nv in zip(classes, test_per, val_per):
        idx = rng.permutation(np.flatnonzero(labels == c))
        parts[2].append(idx[:nt])
        parts[1].append(idx[nt:nt + nv])
        parts[0].append(idx[nt + nv:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def split_dataset(images, labels, n_val: int, n_test: int, seed: int = SPLIT_SEED,
                  name: str = "custom", class_names=None) -> DatasetSplits:
    """Cut ``(images, labels)`` (e.g. from a reader) into train, validation and test parts.

    Args:
        images: float32 (N, C, H, W).
        labels: int64 (N,).
        n_val: The size of the validation part.
        n_test: The size of the test part.
        seed: The split's seed.
        name: The dataset's name.
        class_names: One name per class; None: ``"0"``, ``"1"``, ...

    Returns:
        The splits.

    Raises:
        ValueError: Images that are not 4-d, as many labels as images, or class names of
            another number.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"split_dataset: images must be (N, C, H, W), got shape {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"split_dataset: {len(images)} images but {len(labels)} labels")
    labels = labels.astype(np.int64)
    tr, va, te = stratified_split(labels, n_val, n_test, seed)
    num_classes = int(labels.max()) + 1
    if class_names is None:
        class_names = tuple(str(i) for i in range(num_classes))
    elif len(class_names) != num_classes:
        raise ValueError(f"split_dataset: {len(class_names)} class names for {num_classes} classes")
    return DatasetSplits(
        name=name,
        train=Split(images[tr], labels[tr]), val=Split(images[va], labels[va]),
        test=Split(images[te], labels[te]),
        num_classes=num_classes, class_names=tuple(class_names),
    )
