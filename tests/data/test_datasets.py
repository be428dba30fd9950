"""Datasets by name (tinymbv2.data.datasets): the bundled ones and their fixed split, and the
ones read from files (IDX, CIFAR-10 binary, image folders) written here."""
import gzip
import struct

import numpy as np
import pytest

from tinymbv2.data import BUNDLED, DATASETS, Resize, load_dataset


# -- bundled datasets ---------------------------------------------------------------------
@pytest.fixture(scope="module", params=["digits", "mnist5k"])
def ds(request):
    return load_dataset(request.param)


SIZES = {"digits": ((1, 8, 8), 1797, 359, 359), "mnist5k": ((1, 28, 28), 5000, 500, 1000)}


def test_bundled_shapes_dtypes_ranges(ds):
    shape, total, n_val, n_test = SIZES[ds.name]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (total - n_val - n_test, n_val, n_test)
    assert ds.num_classes == 10 and ds.class_names == tuple("0123456789")
    assert ds.image_shape == shape
    for part in (ds.train, ds.val, ds.test):
        assert part.images.dtype == np.float32 and part.labels.dtype == np.int64
        assert part.images.shape == (len(part),) + shape
        assert part.images.min() == 0.0 and part.images.max() == 1.0
        assert set(np.unique(part.labels)) == set(range(10))
    # real digits, not noise: the mean image is dark in the left/right border columns
    mean = ds.train.images.mean(axis=0)[0]
    mid = mean.shape[1] // 2
    assert mean[:, mid - 1:mid + 1].mean() > 0.1 > mean[:, [0, -1]].mean()


def test_split_is_stratified_disjoint_and_fixed(ds):
    again = load_dataset(ds.name)
    for a, b in [(ds.train, again.train), (ds.val, again.val), (ds.test, again.test)]:
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    # disjoint and covering: compare images as byte strings
    keys = [{im.tobytes() for im in part.images} for part in (ds.train, ds.val, ds.test)]
    all_images = np.concatenate([ds.train.images, ds.val.images, ds.test.images])
    assert len(all_images) == SIZES[ds.name][1]
    n_unique = len({im.tobytes() for im in all_images})
    assert len(keys[0] | keys[1] | keys[2]) == n_unique
    assert sum(len(k) for k in keys) - n_unique <= 2  # at most a stray duplicate image in the source
    # stratified: each class's share in every part within one sample of the whole's share
    counts = np.bincount(np.concatenate([ds.train.labels, ds.val.labels, ds.test.labels]))
    for part in (ds.train, ds.val, ds.test):
        expected = counts * len(part) / counts.sum()
        assert np.all(np.abs(np.bincount(part.labels, minlength=10) - expected) < 1.0 + 1e-9)
    if ds.name == "mnist5k":
        assert np.all(np.bincount(ds.test.labels) == 100) and np.all(np.bincount(ds.val.labels) == 50)


def test_load_dataset_returns_fresh_arrays_and_other_seed_other_split():
    a = load_dataset("digits")
    a.train.images[...] = -1
    b = load_dataset("digits")
    assert b.train.images.min() == 0.0
    c = load_dataset("digits", seed=7)
    assert not np.array_equal(b.test.labels, c.test.labels) or \
        not np.array_equal(b.test.images, c.test.images)
    with pytest.raises(ValueError, match="load_dataset: unknown dataset 'cifar'"):
        load_dataset("cifar")


# -- datasets read from files -------------------------------------------------------------
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
    s = load_dataset("mnist-idx", tmp_path)
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
    s = load_dataset("cifar10", root, image_size=16)
    assert s.image_shape == (3, 16, 16) and len(s.test) == 10 and s.num_classes == 10
    unresized = load_dataset("cifar10", root)  # image_size resizes every split with Resize
    np.testing.assert_array_equal(s.test.images, Resize(16)(unresized.test.images))
    np.testing.assert_array_equal(s.train.labels, unresized.train.labels)

    from PIL import Image

    folder = tmp_path / "folder"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(
                folder / cls / f"{i}.png")
    s = load_dataset("folder", folder)
    assert s.class_names == ("cat", "dog") and len(s.train) + len(s.val) + len(s.test) == 20


def test_missing_files_and_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("mnist-idx", tmp_path)
    with pytest.raises(ValueError, match="expected one of"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="load_dataset: dataset 'cifar10' reads files: give --data-dir"):
        load_dataset("cifar10")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("folder", tmp_path / "nowhere")


def test_one_list_of_names():
    assert DATASETS == ("digits", "mnist5k", "mnist-idx", "cifar10", "folder")
    assert set(BUNDLED) < set(DATASETS)
