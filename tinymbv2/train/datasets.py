"""Dataset names the training job and the CLI accept, mapped to loaders and splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import (load_cifar10, load_dataset, load_mnist_idx, read_image_folder,
                    split_dataset)
from ..data.datasets import DatasetSplits, Split

DATASET_CHOICES = ("digits", "mnist5k", "mnist-idx", "cifar10", "folder")


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an (N, C, H, W) batch to (N, C, size, size)."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    ys = (np.arange(size) + 0.5) * h / size - 0.5
    xs = (np.arange(size) + 0.5) * w / size - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 1)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy = np.clip(ys - y0, 0, 1)[:, None]
    wx = np.clip(xs - x0, 0, 1)[None, :]
    top = images[:, :, y0][:, :, :, x0] * (1 - wx) + images[:, :, y0][:, :, :, x1] * wx
    bottom = images[:, :, y1][:, :, :, x0] * (1 - wx) + images[:, :, y1][:, :, :, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(images.dtype)


def _find(root: Path, *names) -> Path:
    for name in names:
        for candidate in (root / name, root / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no {names[0]}[.gz] in {root}")


def load_splits(name: str, data_dir=None, image_size: int | None = None) -> DatasetSplits:
    """Train/val/test splits for a dataset name (see DATASET_CHOICES)."""
    if name not in DATASET_CHOICES:
        raise ValueError(f"dataset: expected one of {DATASET_CHOICES}, got {name!r}")
    if name in ("digits", "mnist5k"):
        splits = load_dataset(name)
    else:
        if data_dir is None:
            raise ValueError(f"dataset {name!r} reads files: give --data-dir")
        root = Path(data_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"data directory {root} does not exist")
        if name == "mnist-idx":
            x, y = load_mnist_idx(_find(root, "train-images-idx3-ubyte", "train-images.idx3-ubyte"),
                                  _find(root, "train-labels-idx1-ubyte", "train-labels.idx1-ubyte"))
            xt, yt = load_mnist_idx(_find(root, "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
                                    _find(root, "t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"))
            classes = tuple(str(i) for i in range(int(max(y.max(), yt.max())) + 1))
        elif name == "cifar10":
            x, y, classes = load_cifar10(root, train=True)
            xt, yt, _ = load_cifar10(root, train=False)
        else:
            images, labels, classes = read_image_folder(root, mode="RGB")
            n_hold = max(1, len(labels) // 10)
            splits = split_dataset(images, labels, n_hold, n_hold, name="folder",
                                   class_names=tuple(classes))
            return _resized(splits, image_size)
        n_val = max(1, len(y) // 10)
        part = split_dataset(x, y, n_val, 0, name=name, class_names=tuple(classes))
        splits = DatasetSplits(name, part.train, part.val, Split(xt, yt), len(classes),
                               tuple(classes))
    return _resized(splits, image_size)


def _resized(splits: DatasetSplits, size):
    if size is None:
        return splits
    r = [Split(resize_images(s.images, size), s.labels) for s in (splits.train, splits.val, splits.test)]
    return DatasetSplits(splits.name, *r, splits.num_classes, splits.class_names)
