"""The dataset names the CLI accepts, on small files written here: IDX, CIFAR-10 binary, folders."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from tinymbv2.train.datasets import load_splits, resize_images


def write_idx(path, arr, gz=False):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_mnist_idx_folder_gives_train_val_and_the_t10k_test(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (40, 6, 6)), gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(40) % 4, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (12, 6, 6)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(12) % 4)
    s = load_splits("mnist-idx", tmp_path)
    assert (len(s.train), len(s.val), len(s.test)) == (36, 4, 12)
    assert s.image_shape == (1, 6, 6) and s.num_classes == 4
    assert s.test.images.max() <= 1.0 and s.test.labels.tolist() == (np.arange(12) % 4).tolist()


def test_cifar10_binary_and_image_folder(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar"
    root.mkdir()
    for name, n in (("data_batch_1.bin", 20), ("test_batch.bin", 10)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (root / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
    s = load_splits("cifar10", root, image_size=16)
    assert s.image_shape == (3, 16, 16) and len(s.test) == 10 and s.num_classes == 10

    from PIL import Image

    folder = tmp_path / "folder"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(
                folder / cls / f"{i}.png")
    s = load_splits("folder", folder)
    assert s.class_names == ("cat", "dog") and len(s.train) + len(s.val) + len(s.test) == 20


def test_missing_files_and_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_splits("mnist-idx", tmp_path)
    with pytest.raises(ValueError, match="expected one of"):
        load_splits("imagenet")


def test_bilinear_resize_keeps_constants_and_means():
    x = np.full((2, 1, 8, 8), 0.25, np.float32)
    np.testing.assert_allclose(resize_images(x, 28), 0.25, rtol=1e-6)
    ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (1, 1, 8, 1))
    up = resize_images(ramp, 16)
    assert up.shape == (1, 1, 16, 16) and np.all(np.diff(up[0, 0, 0]) >= 0)
