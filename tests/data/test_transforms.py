"""tinymbv2.data.transforms: augmentation, resizing and normalisation of NumPy batches."""
import numpy as np
import pytest

from tinymbv2.data import (Compose, Normalize, RandomCrop, RandomHorizontalFlip, RandomRotation,
                           RandomShift, Resize, channel_stats, load_dataset)


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


# -- Resize ----------------------------------------------------------------------------------
def test_bilinear_resize_keeps_constants_and_means():
    x = np.full((2, 1, 8, 8), 0.25, np.float32)
    np.testing.assert_allclose(Resize(28)(x), 0.25, rtol=1e-6)
    ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (1, 1, 8, 1))
    up = Resize(16)(ramp)
    assert up.shape == (1, 1, 16, 16) and np.all(np.diff(up[0, 0, 0]) >= 0)


def _resize_images(images, size):
    """tinymbv2.train.datasets.resize_images as it was before it became Resize: the reference."""
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


@pytest.mark.parametrize("shape, size", [((2, 1, 8, 8), 28), ((1, 3, 32, 32), 16),
                                         ((3, 2, 5, 7), 9), ((2, 3, 10, 6), 4),
                                         ((1, 1, 28, 28), 224)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resize_gives_the_numbers_of_the_function_it_replaced(shape, size, dtype):
    x = np.random.default_rng(0).random(shape).astype(dtype)
    out = Resize(size)(x)
    assert out.shape == shape[:2] + (size, size) and out.dtype == dtype
    np.testing.assert_array_equal(out, _resize_images(x, size))
    assert Resize(size)(x, np.random.default_rng(5)) is not x  # rng is ignored
    np.testing.assert_array_equal(Resize(size)(x, 3), out)


def test_resize_to_the_same_size_returns_the_batch_and_pairs_give_rectangles():
    x = _batch(n=2, c=1, h=6, w=6)
    assert Resize(6)(x) is x and Resize((6, 6))(x) is x
    rect = Resize((4, 9))(x)
    assert rect.shape == (2, 1, 4, 9)
    # each axis on its own: a (4, 9) resize equals (4, 6) then (4, 9), since bilinear separates
    np.testing.assert_allclose(rect, Resize((4, 9))(Resize((4, 6))(x)), rtol=1e-6)
    assert repr(Resize(28)) == "Resize(size=(28, 28))"


def test_resize_matches_pytorch_bilinear():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).random((2, 3, 10, 6))
    for size in ((4, 4), (17, 17), (5, 13)):
        expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                                   align_corners=False).numpy()
        np.testing.assert_allclose(Resize(size)(x), expected, rtol=0, atol=1e-12)


def test_resize_errors_name_the_transform():
    with pytest.raises(ValueError, match=r"Resize: size must be an int > 0 or a pair of them, got 0"):
        Resize(0)
    with pytest.raises(ValueError, match=r"Resize: size must be an int > 0 or a pair of them, got \(3, 4, 5\)"):
        Resize((3, 4, 5))
    with pytest.raises(ValueError, match="Resize: size must be"):
        Resize(2.5)
    with pytest.raises(ValueError, match=r"Resize: expected a NumPy batch \(N, C, H, W\), got ndarray with shape \(8, 8\)"):
        Resize(4)(np.zeros((8, 8), np.float32))
    with pytest.raises(TypeError, match="Resize: expected floating-point images, got dtype uint8"):
        Resize(4)(np.zeros((1, 1, 8, 8), np.uint8))
