"""tinymbv2.data.readers: MNIST IDX, CIFAR-10 binary batches and image folders, on files written here."""
import gzip
import struct

import numpy as np
import pytest

from tinymbv2.data import (CIFAR10_CLASSES, load_cifar10, load_mnist_idx, read_cifar10_batch,
                           read_idx, read_image_folder)


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
    with pytest.raises(ValueError, match=r"read_image_folder: the images of .* differ in size: "
                                         r".*; give --image-size .*size= to read_image_folder"):
        read_image_folder(other)
    assert read_image_folder(other, size=6)[0].shape == (6, 3, 6, 6)
    with pytest.raises(ValueError, match="mode must be 'L' or 'RGB'"):
        read_image_folder(other, mode="CMYK")
