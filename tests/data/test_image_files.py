"""Image files read as the network needs them: bit depth, channels, sizes, and a size limit
(issue 20, item 7)."""
from __future__ import annotations

import numpy as np
import pytest

from tinymbv2.data import (Grayscale, Resize, load_dataset, read_image, read_image_folder,
                           readers)


def _save(path, array, mode=None):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array, mode=mode)
    image.save(path)
    return path


def _ramp16(h=16, w=16):
    """A 16-bit grey ramp over the whole range, 0 .. 65535."""
    return np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)


def test_a_16_bit_png_is_scaled_to_0_1_not_clipped(tmp_path):
    from PIL import Image

    pixels = _ramp16()
    path = _save(tmp_path / "scan16.png", pixels)
    with Image.open(path) as im:
        assert im.mode == "I;16"  # what Pillow makes of a 16-bit grey PNG
        clipped = np.asarray(im.convert("L"))
    assert (clipped == 255).mean() > 0.95  # what reading it as 8 bits used to give
    grey = read_image(path, "L")
    assert grey.shape == (1, 16, 16) and grey.dtype == np.float32
    np.testing.assert_allclose(grey[0], pixels / 65535.0, rtol=1e-6, atol=1e-7)
    assert grey.min() == 0.0 and grey.max() == 1.0 and (grey == 1.0).mean() < 0.01
    rgb = read_image(path, "RGB")  # one grey channel, repeated
    assert rgb.shape == (3, 16, 16) and all(np.array_equal(rgb[c], grey[0]) for c in range(3))


def test_16_bit_files_in_a_folder_and_resized(tmp_path):
    for cls in ("a", "b"):
        for i in range(2):
            _save(tmp_path / cls / f"{i}.png", _ramp16())
    x, y, names = read_image_folder(tmp_path, mode="L")
    assert x.shape == (4, 1, 16, 16) and names == ("a", "b") and y.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(x[3, 0], _ramp16() / 65535.0, rtol=1e-6, atol=1e-7)
    small, _, _ = read_image_folder(tmp_path, mode="L", size=8)  # bilinear on the scaled values
    assert small.shape == (4, 1, 8, 8) and 0.0 <= small.min() and small.max() <= 1.0
    assert abs(float(small.mean()) - float(x.mean())) < 0.01
    ds = load_dataset("folder", tmp_path, channels=1)
    assert ds.image_shape == (1, 16, 16) and float(ds.train.images.max()) == 1.0


def test_32_bit_pixels_outside_16_bits_are_refused_by_name(tmp_path):
    path = _save(tmp_path / "deep.tif", np.full((4, 4), 70000, dtype=np.int32), mode="I")
    with pytest.raises(ValueError, match=r"deep\.tif: its mode I pixels span \[70000, 70000\], "
                                         r"expected \[0, 65535\]"):
        read_image(path, "L")


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    path = _save(tmp_path / "a" / "wide.png", np.zeros((10, 300), dtype=np.uint8))
    _save(tmp_path / "b" / "small.png", np.zeros((10, 10), dtype=np.uint8))
    assert readers.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own default
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 2999)
    with pytest.raises(ValueError, match=r"read_image: .*wide\.png is too large to read: "
                                         r"300x10 = 3,000 pixels, over the limit of 2,999"):
        read_image(path)
    with pytest.raises(ValueError, match=r"read_image_folder: .*wide\.png is too large"):
        read_image_folder(tmp_path)
    with pytest.raises(ValueError, match=r"load_dataset: .*wide\.png is too large"):
        load_dataset("folder", tmp_path)
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 3000)
    assert read_image(path).shape == (3, 10, 300)


def test_a_decompression_bomb_gets_the_same_message(tmp_path):
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(path)  # over twice Pillow's limit: refused on opening
    with pytest.raises(ValueError, match=r"bomb\.png is too large to read: more than "
                                         r"178,956,970 pixels, over the limit of 89,478,485"):
        read_image(path, "L")


def _mixed_folder(root):
    rng = np.random.default_rng(0)
    sizes = [(6, 6), (7, 9), (10, 5)]
    for cls in ("a", "b"):
        for i, (h, w) in enumerate(sizes * 2):
            _save(root / cls / f"{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_image_size_resizes_a_folder_of_mixed_sizes(tmp_path):
    _mixed_folder(tmp_path)
    with pytest.raises(ValueError, match=r"load_dataset: the images of .* differ in size: .*1\.png "
                                         r"is 9x7, .*0\.png 6x6; give --image-size"):
        load_dataset("folder", tmp_path)
    ds = load_dataset("folder", tmp_path, image_size=8)
    assert ds.image_shape == (3, 8, 8) and len(ds.train) + len(ds.val) + len(ds.test) == 12
    # each image resized on its own with Resize, as load_dataset resizes every dataset
    everything = np.concatenate([ds.train.images, ds.val.images, ds.test.images])
    files = sorted(tmp_path.glob("*/*.png"))
    expected = np.stack([Resize(8)(read_image(f)[None])[0] for f in files])
    for image in expected:  # the split reorders them: find each one
        assert np.any(np.all(everything == image, axis=(1, 2, 3)))


def test_a_folder_of_one_size_gives_the_numbers_it_gave(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    for cls in ("a", "b"):
        for i in range(5):
            _save(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    plain, resized = load_dataset("folder", tmp_path), load_dataset("folder", tmp_path, image_size=5)
    for a, b in ((plain.train, resized.train), (plain.test, resized.test)):
        np.testing.assert_array_equal(Resize(5)(a.images), b.images)  # resizing the batch
        np.testing.assert_array_equal(a.labels, b.labels)
    x, _, _ = read_image_folder(tmp_path)
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB"))
                       for f in sorted(tmp_path.glob("*/*.png"))])
    np.testing.assert_array_equal(x, pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def test_a_folder_is_read_in_the_channels_asked_for(tmp_path):
    from PIL import Image

    _mixed_folder(tmp_path)
    grey = load_dataset("folder", tmp_path, image_size=6, channels=1)
    rgb = load_dataset("folder", tmp_path, image_size=6)  # RGB by default, as before
    assert grey.image_shape == (1, 6, 6) and rgb.image_shape == (3, 6, 6)
    first = sorted(tmp_path.glob("*/*.png"))[0]  # 6x6: not resized
    with Image.open(first) as im:
        luma = np.asarray(im.convert("L"), dtype=np.float32) / 255.0  # Pillow's grey
    np.testing.assert_array_equal(read_image(first, "L")[0], luma)
    with pytest.raises(ValueError, match=r"load_dataset: channels must be 1 \(grey\), 3 \(RGB\) "
                                         r"or None"):
        load_dataset("folder", tmp_path, channels=2)


def test_array_datasets_take_the_channels_asked_for(tmp_path):
    digits = load_dataset("digits")
    as_rgb = load_dataset("digits", channels=3)
    assert as_rgb.image_shape == (3, 8, 8)
    for c in range(3):
        np.testing.assert_array_equal(as_rgb.test.images[:, c], digits.test.images[:, 0])
    assert load_dataset("digits", channels=1).test.images.shape == digits.test.images.shape
    root = tmp_path / "cifar"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1.bin", 20), ("test_batch.bin", 10)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (root / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
    colour, grey = load_dataset("cifar10", root), load_dataset("cifar10", root, channels=1)
    assert grey.image_shape == (1, 32, 32)
    luma = (0.299 * colour.test.images[:, 0] + 0.587 * colour.test.images[:, 1]
            + 0.114 * colour.test.images[:, 2])
    np.testing.assert_allclose(grey.test.images[:, 0], luma, rtol=1e-6, atol=1e-7)


def test_grayscale_transform():
    rgb = np.random.default_rng(0).random((2, 3, 4, 5)).astype(np.float32)
    grey = Grayscale(1)(rgb)
    assert grey.shape == (2, 1, 4, 5) and grey.dtype == np.float32
    np.testing.assert_allclose(grey[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2],
                               rtol=1e-6)
    three = Grayscale(3)(rgb)  # torchvision's Grayscale(3): grey, in three equal channels
    assert three.shape == (2, 3, 4, 5) and np.array_equal(three[:, 1], grey[:, 0])
    assert Grayscale(1)(grey) is grey
    assert np.array_equal(Grayscale(3)(grey), np.repeat(grey, 3, axis=1))
    with pytest.raises(ValueError, match="Grayscale: num_output_channels must be 1 or 3, got 2"):
        Grayscale(2)
    with pytest.raises(ValueError, match=r"Grayscale: expected 1 \(grey\) or 3 \(RGB\) channels, got 4"):
        Grayscale(1)(np.zeros((1, 4, 2, 2), dtype=np.float32))


def test_a_limit_above_pillows_own_says_to_raise_pillows_too(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(path)
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 10**9)
    with pytest.raises(ValueError, match=r"bomb\.png has more than 178,956,970 pixels, which "
                                         r"Pillow refuses to open .*PIL\.Image\.MAX_IMAGE_PIXELS"):
        read_image(path, "L")


def test_a_folder_is_resized_image_by_image_as_it_is_read(tmp_path, monkeypatch):
    """Only one image is ever held at its own size: a thousand 12-megapixel photos, all
    decoded before resizing, would need 144 GB."""
    import weakref

    _mixed_folder(tmp_path)  # 12 files of 6x6, 9x7 and 5x10 pixels
    decode, alive, most = readers._decode, set(), []

    def counting_decode(*args):
        array = decode(*args)  # a file at its own size
        alive.add(id(array))
        weakref.finalize(array, alive.discard, id(array))
        most.append(len(alive))
        return array

    monkeypatch.setattr(readers, "_decode", counting_decode)
    ds = load_dataset("folder", tmp_path, image_size=8)
    assert len(most) == 12 and max(most) == 1  # each freed before the next is read
    assert ds.image_shape == (3, 8, 8)
    most.clear()
    read_image_folder(tmp_path, size=8)
    assert len(most) == 12 and max(most) == 1


def test_folders_and_predict_resize_the_same_way(tmp_path):
    """read_image(size=), read_image_folder(size=), load_dataset(image_size=) and predict's
    load_image give the same pixels: Resize on the scaled pixels (read_image_folder's size
    used to be Pillow's bilinear, on the 8-bit pixels, unlike the others)."""
    from tinymbv2.evaluation import load_image

    _mixed_folder(tmp_path)
    files = sorted(tmp_path.glob("*/*.png"))
    x, _, _ = read_image_folder(tmp_path, size=8)
    for f, image in zip(files, x):
        np.testing.assert_array_equal(image, Resize(8)(read_image(f)[None])[0])
        np.testing.assert_array_equal(image, read_image(f, size=8))
        np.testing.assert_array_equal(image, load_image(f, 3, [8, 8]))
    grey, _, _ = read_image_folder(tmp_path, mode="L", size=(5, 7))
    np.testing.assert_array_equal(grey[0], load_image(files[0], 1, [5, 7]))
    scan = _save(tmp_path / "scan16.png", _ramp16())  # 16-bit: the same resize
    np.testing.assert_array_equal(read_image(scan, "L", size=8),
                                  Resize(8)(read_image(scan, "L")[None])[0])
