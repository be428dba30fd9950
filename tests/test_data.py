"""tinymbv2.data: bundled datasets and split, readers, transforms, loader."""
import gzip
import struct

import numpy as np
import pytest

from tinymbv2.data import (CIFAR10_CLASSES, Compose, DataLoader, Normalize, RandomCrop,
                           RandomHorizontalFlip, RandomRotation, RandomShift, channel_stats,
                           load_cifar10, load_dataset, load_mnist_idx, read_cifar10_batch,
                           read_idx, read_image_folder, split_dataset)


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


def test_split_dataset_on_user_arrays():
    rng = np.random.default_rng(0)
    images = rng.random((60, 3, 4, 4), dtype=np.float32)
    labels = np.repeat(np.arange(3), 20)
    s = split_dataset(images, labels, n_val=6, n_test=12, class_names=("a", "b", "c"))
    assert (len(s.train), len(s.val), len(s.test)) == (42, 6, 12)
    assert np.all(np.bincount(s.test.labels) == 4) and np.all(np.bincount(s.val.labels) == 2)
    with pytest.raises(ValueError, match="leaves no training samples"):
        split_dataset(images, labels, n_val=30, n_test=30)


# -- readers -----------------------------------------------------------------------------------
def _write_idx(path, arr, type_byte=0x08, gz=False):
    header = bytes([0, 0, type_byte, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_reader(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(7, 5, 6), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7).astype(np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"im{suffix}", imgs, gz=gz)
    _write_idx(tmp_path / f"lb{suffix}", labels, gz=gz)
    x, y = load_mnist_idx(tmp_path / f"im{suffix}", tmp_path / f"lb{suffix}")
    assert x.shape == (7, 1, 5, 6) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0] * 255, imgs, atol=1e-4)
    np.testing.assert_array_equal(y, labels)


def test_idx_reader_other_dtypes(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    _write_idx(tmp_path / "f", a, type_byte=0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), a)
    b = np.array([-5, 300, 70000], dtype=np.int32)
    _write_idx(tmp_path / "i", b, type_byte=0x0C)
    np.testing.assert_array_equal(read_idx(tmp_path / "i"), b)


def test_idx_reader_errors_name_the_file(tmp_path):
    data = _write_idx(tmp_path / "ok", np.zeros((4, 3, 3), dtype=np.uint8))
    (tmp_path / "short.idx").write_bytes(data[:-5])
    with pytest.raises(ValueError, match=r"short\.idx.*truncated"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "head.idx").write_bytes(data[:9])
    with pytest.raises(ValueError, match=r"head\.idx.*truncated IDX header"):
        read_idx(tmp_path / "head.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x08\x08" + data[2:])
    with pytest.raises(ValueError, match=r"magic\.idx.*not an IDX file"):
        read_idx(tmp_path / "magic.idx")
    (tmp_path / "long.idx").write_bytes(data + b"xx")
    with pytest.raises(ValueError, match=r"long\.idx.*trailing bytes"):
        read_idx(tmp_path / "long.idx")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(data)[:-12])
    with pytest.raises(ValueError, match=r"bad\.gz.*gzip"):
        read_idx(tmp_path / "bad.gz")
    _write_idx(tmp_path / "lb", np.zeros(5, dtype=np.uint8))
    with pytest.raises(ValueError, match="holds 4 images but .* holds 5 labels"):
        load_mnist_idx(tmp_path / "ok", tmp_path / "lb")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_idx(tmp_path / "missing")


def _cifar_records(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    raw = b"".join(bytes([l]) + p.tobytes() for l, p in zip(labels, pixels))
    return raw, labels, pixels


def test_cifar10_reader(tmp_path):
    raw, labels, pixels = _cifar_records(5)
    (tmp_path / "data_batch_1.bin").write_bytes(raw)
    raw2, labels2, _ = _cifar_records(3, seed=1)
    (tmp_path / "data_batch_2.bin").write_bytes(raw2)
    (tmp_path / "test_batch.bin").write_bytes(raw[:3073 * 2])
    x, y = read_cifar10_batch(tmp_path / "data_batch_1.bin")
    assert x.shape == (5, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x * 255, pixels, atol=1e-4)  # plane order R, G, B kept
    np.testing.assert_array_equal(y, labels)
    x, y, names = load_cifar10(tmp_path)
    assert len(x) == 8 and names == CIFAR10_CLASSES
    np.testing.assert_array_equal(y, np.concatenate([labels, labels2]))
    assert len(load_cifar10(tmp_path, train=False)[0]) == 2


def test_cifar10_reader_errors_name_the_file(tmp_path):
    raw, _, _ = _cifar_records(2)
    (tmp_path / "cut.bin").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r"cut\.bin.*not a positive multiple of the 3073-byte"):
        read_cifar10_batch(tmp_path / "cut.bin")
    bad = bytearray(raw)
    bad[3073] = 200
    (tmp_path / "label.bin").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"label\.bin.*corrupt record 1: label byte 200"):
        read_cifar10_batch(tmp_path / "label.bin")
    with pytest.raises(FileNotFoundError, match="load_cifar10: none of"):
        load_cifar10(tmp_path / "nowhere")


def _write_folder(root, sizes=((6, 5), (6, 5), (6, 5))):
    from PIL import Image

    rng = np.random.default_rng(0)
    expected = []
    for cls, (h, w) in zip(["cat", "ant", "bee"], sizes):
        (root / cls).mkdir()
        for i in range(2):
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
            expected.append((cls, i, arr))
    return expected


def test_image_folder_reader(tmp_path):
    expected = _write_folder(tmp_path)
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    x, y, names = read_image_folder(tmp_path, mode="RGB")
    assert names == ("ant", "bee", "cat")
    assert x.shape == (6, 3, 6, 5) and x.dtype == np.float32
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 2, 2])
    ant0 = next(a for c, i, a in expected if c == "ant" and i == 0)
    np.testing.assert_allclose(x[0] * 255, ant0.transpose(2, 0, 1), atol=1e-4)
    g, _, _ = read_image_folder(tmp_path, mode="L", size=(4, 3))
    assert g.shape == (6, 1, 4, 3) and 0 <= g.min() and g.max() <= 1


def test_image_folder_errors(tmp_path):
    _write_folder(tmp_path)
    good = (tmp_path / "bee" / "0.png").read_bytes()
    (tmp_path / "bee" / "1.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"1\.png.*corrupt or truncated"):
        read_image_folder(tmp_path)
    (tmp_path / "bee" / "1.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"1\.png.*cannot read the image"):
        read_image_folder(tmp_path)
    other = tmp_path / "sizes"
    other.mkdir()
    _write_folder(other, sizes=((6, 5), (7, 5), (6, 5)))
    with pytest.raises(ValueError, match="differs from .* pass size="):
        read_image_folder(other)
    assert read_image_folder(other, size=6)[0].shape == (6, 3, 6, 6)
    with pytest.raises(ValueError, match="mode must be 'L' or 'RGB'"):
        read_image_folder(other, mode="CMYK")


# -- transforms --------------------------------------------------------------------------------
def _batch(n=8, c=3, h=10, w=12, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def test_flip_twice_is_identity_and_p_extremes():
    x = _batch()
    flip = RandomHorizontalFlip(p=1.0)
    np.testing.assert_array_equal(flip(x, 0), x[..., ::-1])
    np.testing.assert_array_equal(flip(flip(x, 0), 0), x)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x, 0), x)
    half = RandomHorizontalFlip(0.5)
    once, twice = half(x, 3), half(half(x, 3), 3)  # same seed -> same samples flipped
    np.testing.assert_array_equal(twice, x)
    flipped = [not np.array_equal(once[i], x[i]) for i in range(len(x))]
    assert 0 < sum(flipped) < len(x)


def test_crop_and_shift_keep_shape_and_content():
    x = _batch()
    out = RandomCrop((10, 12), padding=2)(x, 0)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(RandomCrop((10, 12), padding=0)(x, 0), x)
    small = RandomCrop(6)(x, 1)
    assert small.shape == (8, 3, 6, 6)
    shifted = RandomShift(3)(x, 0)
    assert shifted.shape == x.shape
    for i in range(len(x)):  # every shifted image is a translated copy, zeros elsewhere
        found = False
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                ref = np.zeros_like(x[i])
                src = x[i][:, max(0, -dy):10 - max(0, dy), max(0, -dx):12 - max(0, dx)]
                ref[:, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
                found |= np.array_equal(ref, shifted[i])
        assert found
    with pytest.raises(ValueError, match="RandomCrop: crop 20x20 is larger"):
        RandomCrop(20, padding=2)(x, 0)


@pytest.mark.parametrize("interp", ["bilinear", "nearest"])
def test_rotation(interp):
    x = _batch(h=9, w=9)
    np.testing.assert_allclose(RandomRotation(0, interp)(x, 0), x, atol=1e-6)
    np.testing.assert_allclose(RandomRotation((90, 90), interp)(x, 0),
                               np.rot90(x, 1, axes=(2, 3)), atol=1e-6)
    np.testing.assert_allclose(RandomRotation((180, 180), interp)(x, 0),
                               x[..., ::-1, ::-1], atol=1e-6)
    small = RandomRotation(10, interp)(x, 0)
    assert small.shape == x.shape and small.dtype == np.float32
    assert not np.allclose(small, x)
    # a small rotation barely moves the centre pixel
    np.testing.assert_allclose(small[:, :, 4, 4], x[:, :, 4, 4], atol=0.5)


def test_normalize_on_train_split():
    ds = load_dataset("digits")
    norm = Normalize.from_data(ds.train.images)
    z = norm(ds.train.images)
    assert z.dtype == np.float32
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1.0) < 1e-4
    mean, std = channel_stats(ds.train.images)
    assert mean.shape == (1,) and std.shape == (1,)
    x = _batch()
    z = Normalize.from_data(x)(x)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    with pytest.raises(ValueError, match="Normalize: built for 3 channels, got images with 1"):
        Normalize.from_data(x)(x[:, :1])
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        Normalize([0.5], [0.0])


def test_same_seed_same_output_different_seed_different():
    x = _batch()
    aug = Compose([RandomRotation(15), RandomShift(2), RandomHorizontalFlip(), RandomCrop(8, 1)])
    a, b, c = aug(x, 5), aug(x, np.random.default_rng(5)), aug(x, 6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (8, 3, 8, 8)
    with pytest.raises(ValueError, match="RandomShift: expected a NumPy batch"):
        RandomShift(1)(x[0], 0)


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
