"""Data augmentation, resizing and normalisation on NumPy batches ``(N, C, H, W)``.

Every transform is called as ``t(images, rng)`` and returns a new array (the input is
never modified; ``Resize`` to the size a batch already has returns the batch itself).
``rng`` is an ``np.random.Generator`` (or an int seed): the same generator state gives
the same output, so augmentation is reproducible. The
[DataLoader][tinymbv2.data.loader.DataLoader] hands each epoch its own generator derived
from ``(seed, epoch)``. Each random transform draws its random numbers per sample, so the
samples of a batch get different crops/flips/angles.

``Normalize`` should use statistics of the *training* split only
([channel_stats][tinymbv2.data.transforms.channel_stats] /
[Normalize.from_data][tinymbv2.data.transforms.Normalize.from_data]): computing them on
val/test lets information about the held-out data leak into training.
"""
from __future__ import annotations

import numpy as np


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)  # None: fresh entropy, not reproducible
    raise TypeError(f"transforms: rng must be a numpy Generator, an int seed or None, got "
                    f"{type(rng).__name__}")


def _check_batch(name: str, x) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        shape = getattr(x, "shape", None)
        raise ValueError(f"{name}: expected a NumPy batch (N, C, H, W), got "
                         f"{type(x).__name__} with shape {shape}")
    return x


def _pair(name: str, what: str, value, positive=True):
    v = (int(value), int(value)) if isinstance(value, (int, np.integer)) else value
    if (not isinstance(v, (tuple, list)) or len(v) != 2
            or not all(isinstance(s, (int, np.integer)) for s in v)
            or any(s <= 0 if positive else s < 0 for s in v)):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name}: {what} must be an int {bound} or a pair of them, got {value!r}")
    return int(v[0]), int(v[1])


def channel_stats(images):
    """Per-channel mean and (population) std of ``(N, C, H, W)`` images, computed in float64.

    Args:
        images: The *training* images (N, C, H, W).

    Returns:
        ``(mean, std)``, two float32 arrays of shape ``(C,)``.
    """
    x = _check_batch("channel_stats", np.asarray(images))
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    return mean.astype(np.float32), std.astype(np.float32)


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel; deterministic (``rng`` is ignored).

    Args:
        mean: One mean per channel.
        std: One standard deviation per channel, each finite and > 0.

    Raises:
        ValueError: ``mean`` and ``std`` of different lengths, or a std that is not > 0.
    """

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(f"Normalize: mean has {self.mean.size} values, std {self.std.size}")
        if np.any(self.std <= 0) or not np.all(np.isfinite(self.std)):
            raise ValueError(f"Normalize: std must be finite and > 0, got {self.std.tolist()}")

    @classmethod
    def from_data(cls, train_images) -> "Normalize":
        """A Normalize with the per-channel statistics of ``train_images``.

        They are [channel_stats][tinymbv2.data.transforms.channel_stats]'s, computed in float64.

        Args:
            train_images: The *training* images (N, C, H, W).

        Returns:
            The [Normalize][tinymbv2.data.transforms.Normalize].
        """
        return cls(*channel_stats(train_images))

    def __call__(self, x, rng=None):
        x = _check_batch("Normalize", x)
        if x.shape[1] != self.mean.size:
            raise ValueError(f"Normalize: built for {self.mean.size} channels, got images with "
                             f"{x.shape[1]} (shape {x.shape})")
        shape = (1, -1, 1, 1)
        return ((x - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Resize:
    r"""Bilinear resize of a batch ``(N, C, H, W)`` to ``(N, C, h, w)``; deterministic.

    ``rng`` is ignored.

    ``Resize(28)`` makes every image 28x28, ``Resize((h, w))`` h x w. Output pixel $(i, j)$
    sits, in input coordinates, at

    $$y = (i + 0.5)\,H / h - 0.5, \qquad x = (j + 0.5)\,W / w - 0.5$$

    (pixel centres line up, as in PyTorch's ``F.interpolate(mode="bilinear",
    align_corners=False)``), and mixes the four input pixels around it by its distance
    to them, $w_y = y - y_0$ and $w_x = x - x_0$:

    $$
    \text{out} = (1 - w_y) [(1 - w_x)\, x_{y_0,x_0} + w_x\, x_{y_0,x_1}]
               + w_y [(1 - w_x)\, x_{y_1,x_0} + w_x\, x_{y_1,x_1}]
    $$

    with the border pixels repeated beyond the edge. The sums run in float64 and the result
    has the input's dtype. A batch already of that size comes back as it is (the same
    array: nothing to compute, and no copy of a large dataset).

    Args:
        size: (h, w), an int or a pair of ints > 0.

    Raises:
        ValueError: A size that is not an int > 0 or a pair of them.
    """

    def __init__(self, size):
        self.size = _pair("Resize", "size", size)

    def __call__(self, x, rng=None):
        x = _check_batch("Resize", x)
        if x.dtype.kind != "f":
            raise TypeError(f"Resize: expected floating-point images, got dtype {x.dtype} "
                            f"(convert first, e.g. images.astype(np.float32) / 255)")
        n, c, h, w = x.shape
        out_h, out_w = self.size
        if (h, w) == (out_h, out_w):
            return x
        ys = (np.arange(out_h) + 0.5) * h / out_h - 0.5
        xs = (np.arange(out_w) + 0.5) * w / out_w - 0.5
        y0 = np.clip(np.floor(ys).astype(int), 0, h - 1)
        x0 = np.clip(np.floor(xs).astype(int), 0, w - 1)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        wy = np.clip(ys - y0, 0, 1)[:, None]
        wx = np.clip(xs - x0, 0, 1)[None, :]
        top = x[:, :, y0][:, :, :, x0] * (1 - wx) + x[:, :, y0][:, :, :, x1] * wx
        bottom = x[:, :, y1][:, :, :, x0] * (1 - wx) + x[:, :, y1][:, :, :, x1] * wx
        return (top * (1 - wy) + bottom * wy).astype(x.dtype)

    def __repr__(self):
        return f"Resize(size={self.size})"


class Grayscale:
    r"""Grey images of ``num_output_channels`` (1, or 3 equal channels); deterministic.

    RGB input becomes its luma (ITU-R 601-2, what Pillow's ``convert("L")`` computes;
    torchvision's ``Grayscale`` uses 0.2989 for red):

    $$\text{grey} = 0.299 R + 0.587 G + 0.114 B$$

    A 1-channel batch is already grey: ``Grayscale(3)`` repeats its channel, which is how
    a grey dataset feeds a network built for RGB. ``(N, 1 or 3, H, W) -> (N,
    num_output_channels, H, W)``, in the input's dtype; a batch that is already what is
    asked for comes back as it is.

    Args:
        num_output_channels: 1 or 3.

    Raises:
        ValueError: Another number of channels.
    """

    LUMA = (0.299, 0.587, 0.114)

    def __init__(self, num_output_channels: int = 1):
        if num_output_channels not in (1, 3) or isinstance(num_output_channels, bool):
            raise ValueError(f"Grayscale: num_output_channels must be 1 or 3, got "
                             f"{num_output_channels!r}")
        self.num_output_channels = int(num_output_channels)

    def __call__(self, x, rng=None):
        x = _check_batch("Grayscale", x)
        c = x.shape[1]
        if c not in (1, 3):
            raise ValueError(f"Grayscale: expected 1 (grey) or 3 (RGB) channels, got {c} "
                             f"(shape {x.shape})")
        if c == 1 and self.num_output_channels == 1:
            return x
        if c == 3:
            luma = np.asarray(self.LUMA, dtype=np.float64).reshape(1, 3, 1, 1)
            x = (x * luma).sum(axis=1, keepdims=True, dtype=np.float64).astype(x.dtype)
        return np.repeat(x, self.num_output_channels, axis=1)

    def __repr__(self):
        return f"Grayscale(num_output_channels={self.num_output_channels})"


def _pad_crop(x, pad, tops, lefts, out_h, out_w, fill):
    """Zero-pad (by ``pad`` = (py, px)) then cut ``out_h x out_w`` at per-sample offsets."""
    py, px = pad
    padded = np.pad(x, ((0, 0), (0, 0), (py, py), (px, px)), constant_values=fill)
    out = np.empty(x.shape[:2] + (out_h, out_w), dtype=x.dtype)
    for i, (t, l) in enumerate(zip(tops, lefts)):
        out[i] = padded[i, :, t:t + out_h, l:l + out_w]
    return out


class RandomCrop:
    """Pad each side by ``padding`` (with ``fill``), then cut a random ``size`` window per sample.

    ``RandomCrop(32, padding=4)`` is the classic CIFAR augmentation: the image moves by up
    to 4 pixels in each direction, keeping its shape.

    Args:
        size: The window (h, w), an int or a pair of ints > 0.
        padding: Added on each side, an int or a pair of ints >= 0.
        fill: The value of the padding.

    Raises:
        ValueError: A size or padding out of its range.
    """

    def __init__(self, size, padding=0, fill: float = 0.0):
        self.size = _pair("RandomCrop", "size", size)
        self.padding = _pair("RandomCrop", "padding", padding, positive=False)
        self.fill = fill

    def __call__(self, x, rng=None):
        x = _check_batch("RandomCrop", x)
        rng = _as_rng(rng)
        (h, w), (py, px) = self.size, self.padding
        room_h, room_w = x.shape[2] + 2 * py - h, x.shape[3] + 2 * px - w
        if room_h < 0 or room_w < 0:
            raise ValueError(f"RandomCrop: crop {h}x{w} is larger than the padded image "
                             f"{x.shape[2] + 2 * py}x{x.shape[3] + 2 * px}")
        tops = rng.integers(0, room_h + 1, size=len(x))
        lefts = rng.integers(0, room_w + 1, size=len(x))
        return _pad_crop(x, (py, px), tops, lefts, h, w, self.fill)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomShift:
    """Translate each image by a random whole number of pixels, up to ``max_px`` each way.

    The shift is drawn from ``[-max_px, max_px]`` on each axis.

    Uncovered pixels get ``fill``; the shape is kept. Equivalent in distribution to
    ``RandomCrop(size=(H, W), padding=max_px)``, spelled as what it does.

    Args:
        max_px: The largest shift, an int >= 0.
        fill: The value of the uncovered pixels.

    Raises:
        ValueError: ``max_px`` is not an int >= 0.
    """

    def __init__(self, max_px: int, fill: float = 0.0):
        if not isinstance(max_px, (int, np.integer)) or max_px < 0:
            raise ValueError(f"RandomShift: max_px must be an int >= 0, got {max_px!r}")
        self.max_px, self.fill = int(max_px), fill

    def __call__(self, x, rng=None):
        x = _check_batch("RandomShift", x)
        rng = _as_rng(rng)
        m = self.max_px
        dy = rng.integers(-m, m + 1, size=len(x))
        dx = rng.integers(-m, m + 1, size=len(x))
        # the content moves by (dy, dx): the window starts at m - dy in the padded image
        return _pad_crop(x, (m, m), m - dy, m - dx, x.shape[2], x.shape[3], self.fill)

    def __repr__(self):
        return f"RandomShift(max_px={self.max_px})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``.

    Args:
        p: The probability, in [0, 1].

    Raises:
        ValueError: ``p`` outside [0, 1].
    """

    def __init__(self, p: float = 0.5):
        if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, x, rng=None):
        x = _check_batch("RandomHorizontalFlip", x)
        flip = _as_rng(rng).random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class RandomRotation:
    r"""Rotate each image about its centre by an angle drawn uniformly from ``[-degrees, degrees]``.

    Positive angles turn the picture counter-clockwise as displayed (torchvision's
    convention), so ``degrees=(90, 90)`` equals ``np.rot90`` on square images. Each output
    pixel $(r, c)$ is pulled from the input by the inverse rotation about the centre
    $(c_y, c_x) = ((H - 1)/2, (W - 1)/2)$:

    $$
    x_{src} = c_x + (c - c_x) \cos a - (r - c_y) \sin a, \qquad
    y_{src} = c_y + (c - c_x) \sin a + (r - c_y) \cos a
    $$

    and sampled with **bilinear** interpolation (smoother, the right choice for small
    angles on 28x28 digits) or the nearest pixel; points falling outside the image take
    ``fill``.

    Args:
        degrees: The largest angle, a number >= 0 (the range is ``[-degrees, degrees]``), or
            ``(min, max)``.
        interpolation: ``"bilinear"`` or ``"nearest"``.
        fill: The value of the points from outside the image.

    Raises:
        ValueError: A bad range or interpolation.
    """

    def __init__(self, degrees, interpolation: str = "bilinear", fill: float = 0.0):
        if isinstance(degrees, (int, float)):
            if degrees < 0:
                raise ValueError(f"RandomRotation: degrees must be >= 0, got {degrees}")
            degrees = (-float(degrees), float(degrees))
        if (not isinstance(degrees, (tuple, list)) or len(degrees) != 2
                or not degrees[0] <= degrees[1]):
            raise ValueError(f"RandomRotation: degrees must be a number or (min, max), got {degrees!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"RandomRotation: interpolation must be 'bilinear' or 'nearest', "
                             f"got {interpolation!r}")
        self.degrees = (float(degrees[0]), float(degrees[1]))
        self.interpolation, self.fill = interpolation, fill

    def __call__(self, x, rng=None):
        x = _check_batch("RandomRotation", x)
        n, _, h, w = x.shape
        angles = np.deg2rad(_as_rng(rng).uniform(*self.degrees, size=n))
        cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        r, c = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
        src_x = cx + c * cos - r * sin          # (N, H, W)
        src_y = cy + c * sin + r * cos
        if self.interpolation == "nearest":
            return _sample_nearest(x, src_y, src_x, self.fill)
        return _sample_bilinear(x, src_y, src_x, self.fill)

    def __repr__(self):
        return f"RandomRotation(degrees={self.degrees}, interpolation={self.interpolation!r})"


def _gather(x, yi, xi, fill):
    """``x[n, :, yi, xi]`` for integer maps ``(N, H, W)``; ``fill`` where out of bounds -> (N, C, H, W)."""
    n, _, h, w = x.shape
    inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    batch = np.arange(n)[:, None, None]
    vals = x[batch, :, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]  # (N, H, W, C)
    vals = np.where(inside[..., None], vals, fill)
    return vals.transpose(0, 3, 1, 2)


def _sample_nearest(x, sy, sx, fill):
    # round half up, then snap tiny float errors (1e-15 off an integer) to that integer
    yi = np.floor(np.round(sy, 9) + 0.5).astype(np.int64)
    xi = np.floor(np.round(sx, 9) + 0.5).astype(np.int64)
    return _gather(x, yi, xi, fill).astype(x.dtype)


def _sample_bilinear(x, sy, sx, fill):
    sy, sx = np.round(sy, 9), np.round(sx, 9)  # exact grid points stay exact (0/90/180 degrees)
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    wy, wx = (sy - y0)[:, None], (sx - x0)[:, None]
    out = ((1 - wy) * (1 - wx) * _gather(x, y0, x0, fill)
           + (1 - wy) * wx * _gather(x, y0, x0 + 1, fill)
           + wy * (1 - wx) * _gather(x, y0 + 1, x0, fill)
           + wy * wx * _gather(x, y0 + 1, x0 + 1, fill))
    return out.astype(x.dtype)


class Compose:
    """Apply transforms in order, all drawing from the same generator.

    Args:
        transforms: The transforms, callables ``t(images, rng)``.

    Raises:
        TypeError: A transform is not callable.
    """

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] is not callable: {t!r}")

    def __call__(self, x, rng=None):
        rng = _as_rng(rng)
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


__all__ = ["Normalize", "channel_stats", "Resize", "Grayscale", "RandomCrop", "RandomShift",
           "RandomHorizontalFlip", "RandomRotation", "Compose"]
