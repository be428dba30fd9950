"""Readers for a user's own data: MNIST IDX files, CIFAR-10 binary batches, image folders.

Every reader returns ``images`` float32 ``(N, C, H, W)`` scaled to [0, 1] and ``labels``
int64 ``(N,)`` (and the class names where the format has them), ready for
[split_dataset][tinymbv2.data.splits.split_dataset] and
[DataLoader][tinymbv2.data.loader.DataLoader]. A truncated or corrupt file raises
``ValueError`` naming the file and what is wrong.

Image files ([read_image][tinymbv2.data.readers.read_image],
[read_image_folder][tinymbv2.data.readers.read_image_folder], and ``tinymbv2 predict``)
are scaled by their bit depth: 8-bit pixels by 1/255, 16-bit ones (PNG's grey 16-bit,
Pillow mode ``"I;16"``) by 1/65535, so a 16-bit scan is not clipped to white. A file of
more than ``MAX_IMAGE_PIXELS`` pixels is refused before it is decoded: a few kilobytes of
PNG can claim 14000 x 14000 pixels (a "decompression bomb") and would take gigabytes as
float32. A size asked for is reached with [Resize][tinymbv2.data.transforms.Resize] on the
scaled pixels, as soon as each file is read: the way every dataset and ``predict``
resize, with only one file at its own size in memory at a time (a 12-megapixel RGB photo
is 144 MB as float32; a folder of a thousand, all decoded before resizing, would need
144 GB).
"""
from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import numpy as np

from .transforms import Resize

# The largest image file read, in pixels (width x height): Pillow's own default limit
# (Image.MAX_IMAGE_PIXELS, about 9459 x 9459). Set tinymbv2.data.readers.MAX_IMAGE_PIXELS
# to read larger files, or lower it to refuse smaller ones; it is read at each call.
MAX_IMAGE_PIXELS = 89_478_485

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# IDX type byte -> big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/, "the IDX file format")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path) -> bytes:
    """The file's bytes, un-gzipped when it starts with the gzip magic ``1f 8b``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: '{path}'")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"'{path}': corrupt or truncated gzip data ({err})") from None
    return raw


def read_idx(path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into an array of its native dtype and shape.

    Layout: 2 zero bytes, a type byte (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions d, then d big-endian uint32
    sizes, then the data, big-endian, row-major.

    Args:
        path: The file (``.gz`` is decompressed).

    Returns:
        The array.

    Raises:
        ValueError: A header or a size that is not an IDX file's, naming the file.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"'{path}': too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"'{path}': not an IDX file (magic bytes {data[:4].hex()}, expected "
                         f"00 00 <type in {sorted(hex(t) for t in _IDX_TYPES)}> <ndim>)")
    dtype, ndim = np.dtype(_IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"'{path}': truncated IDX header: {ndim} dimensions need {header} "
                         f"bytes, the file has {len(data)}")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"'{path}': {what}: shape {shape} of {dtype.name} needs {expected} "
                         f"bytes, the file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist_idx(images_path, labels_path):
    """An MNIST-style IDX pair (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``).

    Works for MNIST, Fashion-MNIST, KMNIST and EMNIST files alike.

    Args:
        images_path: The images file (N, H, W) of unsigned bytes.
        labels_path: The labels file (N,).

    Returns:
        ``(images, labels)``: float32 ``(N, 1, H, W)`` in [0, 1] (bytes / 255) and int64 ``(N,)``.

    Raises:
        ValueError: A corrupt file, arrays of other ranks, or counts that differ.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"'{images_path}': expected a 3-D ubyte image array (N, H, W), got "
                         f"shape {images.shape} dtype {images.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"'{labels_path}': expected a 1-D label array, got shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"'{images_path}' holds {len(images)} images but '{labels_path}' "
                         f"holds {len(labels)} labels")
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


_CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar10_batch(path):
    """One CIFAR-10 binary batch (``data_batch_1.bin`` ... ``test_batch.bin``).

    Each record is 3,073 bytes: the label (0..9), then 1,024 red, 1,024 green and
    1,024 blue bytes, each plane row-major 32x32.

    Args:
        path: The batch file.

    Returns:
        ``(images, labels)``: float32 ``(N, 3, 32, 32)`` in [0, 1] and int64 ``(N,)``.

    Raises:
        ValueError: A size that is not a whole number of records, or a label byte above 9.
    """
    data = _read_bytes(path)
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise ValueError(f"'{path}': size {len(data)} bytes is not a positive multiple of the "
                         f"{_CIFAR_RECORD}-byte CIFAR-10 record (truncated or not a CIFAR-10 batch)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise ValueError(f"'{path}': corrupt record {bad[0]}: label byte {labels[bad[0]]} is "
                         f"not a CIFAR-10 class (0..9)")
    images = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return images, labels


def load_cifar10(root, train: bool = True):
    """The CIFAR-10 binary version in ``root`` (the ``cifar-10-batches-bin`` folder).

    Args:
        root: The folder.
        train: Read ``data_batch_1.bin`` .. ``data_batch_5.bin`` (whichever exist, at least
            one); False: ``test_batch.bin``.

    Returns:
        ``(images, labels, class_names)``.

    Raises:
        FileNotFoundError: None of the batch files is there.
        ValueError: A corrupt batch.
    """
    root = Path(root)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    files = [root / n for n in names if (root / n).is_file()]
    if not files:
        raise FileNotFoundError(f"load_cifar10: none of {names} found in '{root}'")
    parts = [read_cifar10_batch(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, CIFAR10_CLASSES


def _parse_size(size, who="read_image_folder"):
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size)):
        raise ValueError(f"{who}: size must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


# Pillow modes of 16-bit grey images ("I" is how older Pillows open a 16-bit PNG)
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_image(path, mode: str = "RGB", size=None, who: str = "read_image") -> np.ndarray:
    """One image file as float32 ``(C, H, W)`` in [0, 1].

    Pixels are divided by the largest value of their bit depth: 255 for 8-bit files,
    65535 for 16-bit grey ones (Pillow mode ``"I;16"``; a 16-bit grey image asked for as
    RGB repeats its one channel). A size is reached with
    [Resize][tinymbv2.data.transforms.Resize] (bilinear, on the scaled float pixels), the
    resize every dataset and ``predict`` use. Errors name ``who`` and the file.

    Args:
        path: The image file.
        mode: ``"L"`` (grey, C = 1) or ``"RGB"`` (C = 3).
        size: Resize to this, an int or ``(height, width)``; None: keep.
        who: The caller, named in the errors.

    Returns:
        The image (C, H, W).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a readable image, or more than ``MAX_IMAGE_PIXELS`` pixels (checked
            from the header, before anything is decoded).
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in ("L", "RGB"):
        raise ValueError(f"{who}: mode must be 'L' or 'RGB', got {mode!r}")
    hw = _parse_size(size, who)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{who}: no image file at {path}")
    limit = int(MAX_IMAGE_PIXELS)
    try:
        with warnings.catch_warnings():  # the size is checked below, with our own message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > limit:
                    raise _TooLarge(f"{w}x{h} = {w * h:,} pixels")
                array = _decode(im, mode)
    except Image.DecompressionBombError:  # over twice Pillow's own limit, refused on opening
        pillow = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        if limit < pillow:
            raise _too_large(who, path, f"more than {pillow:,} pixels", limit) from None
        raise ValueError(f"{who}: {path} has more than {pillow:,} pixels, which Pillow refuses "
                         f"to open (twice PIL.Image.MAX_IMAGE_PIXELS); raise that too to read "
                         f"it") from None
    except _TooLarge as big:
        raise _too_large(who, path, str(big), limit) from None
    except _OutOfRange as bad:
        raise ValueError(f"{who}: {path}: {bad}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{who}: {path} is not a readable image: cannot read the image, "
                         f"corrupt or truncated ({type(err).__name__}: {err})") from None
    return array if hw is None else Resize(hw)(array[None])[0]


class _TooLarge(Exception):
    """The image's header claims more pixels than MAX_IMAGE_PIXELS."""


class _OutOfRange(Exception):
    """Pixels outside the range of their mode (a 32-bit image, say): no scale to [0, 1]."""


def _too_large(who, path, pixels, limit) -> ValueError:
    return ValueError(f"{who}: {path} is too large to read: {pixels}, over the limit of "
                      f"{limit:,} (tinymbv2.data.readers.MAX_IMAGE_PIXELS); a decompression "
                      f"bomb, or a picture to shrink first")


def _decode(im, mode: str) -> np.ndarray:
    """The pixels of an open Pillow image as float32 (C, H, W) in [0, 1]."""
    if im.mode in _SIXTEEN_BIT or im.mode == "F":
        grey = np.asarray(im).astype(np.float32)
        top = 1.0 if im.mode == "F" else 65535.0  # float pixels are taken as they are
        if grey.size and (grey.min() < 0 or grey.max() > top):
            raise _OutOfRange(f"its mode {im.mode} pixels span [{grey.min():g}, "
                              f"{grey.max():g}], expected [0, {top:g}]; convert it to 8 or "
                              f"16 bits")
        grey = grey / np.float32(top)
        channels = grey[None] if mode == "L" else np.repeat(grey[None], 3, axis=0)
        return np.ascontiguousarray(channels, dtype=np.float32)
    im = im.convert(mode)
    pixels = np.asarray(im, dtype=np.uint8)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return pixels.transpose(2, 0, 1).astype(np.float32) / 255.0


def image_folder_files(root, extensions=IMAGE_EXTENSIONS, who: str = "read_image_folder"):
    """The image files of ``root/<class_name>/``.

    Classes are the subfolder names in sorted order (label i = i-th name), the files of
    each sorted by name; other files (notes, ...) are skipped.

    Args:
        root: The folder of class subfolders.
        extensions: The file name endings read as images.
        who: The caller, named in the errors.

    Returns:
        ``(files, labels, class_names)``.

    Raises:
        FileNotFoundError: No such folder.
        ValueError: No class subfolders, or a class folder without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{who}: no such folder: '{root}'")
    class_names = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not class_names:
        raise ValueError(f"{who}: '{root}' has no class subfolders")
    exts = tuple(e.lower() for e in extensions)
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = sorted(f for f in (root / name).iterdir()
                       if f.is_file() and f.suffix.lower() in exts)
        if not found:
            raise ValueError(f"{who}: class folder '{root / name}' holds no images "
                             f"with extensions {exts}")
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, dtype=np.int64), tuple(class_names)


def read_image_folder(root, mode: str = "RGB", size=None, extensions=IMAGE_EXTENSIONS,
                      who: str = "read_image_folder"):
    """Images in ``root/<class_name>/*.png|jpg|...``, one subfolder per class (as ImageFolder).

    Classes are the subfolder names in sorted order (label i = i-th name). Each file is
    read by [read_image][tinymbv2.data.readers.read_image]: converted to ``mode``, scaled by
    its bit depth and, if ``size`` is given, resized right after it is read, so that only one
    file is ever held at its own size; without ``size`` all images must already share one
    size.

    Args:
        root: The folder of class subfolders.
        mode: ``"L"`` (grey, 1 channel) or ``"RGB"`` (3).
        size: Resize every image to this, an int or ``(height, width)``; None: keep.
        extensions: The file name endings read as images.
        who: The caller, named in the errors (``load_dataset`` reads folders here).

    Returns:
        ``(images, labels, class_names)``, images float32 ``(N, C, H, W)`` in [0, 1].

    Raises:
        FileNotFoundError: No such folder, or a file vanished.
        ValueError: A bad mode or size, a file that is not a readable image, or images of
            different sizes without ``size``.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"{who}: mode must be 'L' or 'RGB', got {mode!r}")
    hw = _parse_size(size, who)
    files, labels, class_names = image_folder_files(root, extensions, who)
    images = []
    for f in files:
        image = read_image(f, mode, hw, who=who)
        if images and image.shape != images[0].shape:
            raise ValueError(f"{who}: the images of {root} differ in size: {f} is "
                             f"{image.shape[2]}x{image.shape[1]}, {files[0]} "
                             f"{images[0].shape[2]}x{images[0].shape[1]}; give --image-size "
                             f"(image_size= to load_dataset, size= to read_image_folder) to "
                             f"resize them all")
        images.append(image)
    return np.stack(images), labels, class_names


__all__ = ["read_idx", "load_mnist_idx", "read_cifar10_batch", "load_cifar10", "read_image",
           "read_image_folder", "image_folder_files", "CIFAR10_CLASSES", "IMAGE_EXTENSIONS",
           "MAX_IMAGE_PIXELS"]
