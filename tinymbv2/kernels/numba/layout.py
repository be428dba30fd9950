"""Channels-last memory for small planes: where the numba set keeps activations NHWC.

A tensor keeps its logical shape (N, C, H, W) everywhere in tinymbv2; only the
numba kernel set may store it *channels-last*, as PyTorch's
``memory_format=torch.channels_last`` does: the bytes are laid out (N, H, W, C)
and the array is the transposed view, so element [n, c, h, w] sits at
``((n*H + h)*W + w)*C + c``. NumPy, the autograd engine and every other kernel
see an ordinary (strided) array and need not care.

Why: on a plane of a few pixels (MobileNetV2's last stages, and all of it at
32 px) the work is over channels, not pixels:

* a 1x1 convolution over the whole batch is one GEMM,
  ``y (N*H*W, Co) = x (N*H*W, Ci) @ W.T``, instead of N thin ``(Co, Ci) @ (Ci, H*W)`` ones
  or a gather of images side by side;
* a depthwise 3x3 loop runs along the contiguous channels of a pixel, so the
  channels-last kernels of ``.depthwise.channels_last`` need no transposes (which
  took most of their time, measured);
* BatchNorm's per-channel sums run over rows of C contiguous values.

The rule (``channels_last_plane``): the depthwise, pointwise and BatchNorm
kernels of this set work channels-last on input planes of at most
``CHANNELS_LAST_MAX`` pixels, NCHW on larger ones, whatever layout their inputs
came in (an input in the other layout is copied once); their outputs come in the
layout they worked in. The dense convolution (MobileNetV2's stem) reads the image
in any layout and writes its output channels-last when the *output* plane is
small. The whole inverted residual block for inference (``.block_channels_last``) reads
either layout and writes channels-last outputs of up to 56x56 pixels, so at 224 px
MobileNetV2's inference is channels-last from block 2 on. A 1x1 plane is both layouts at
once, so nothing is ever copied there. Every other kernel and NumPy op accepts either layout.

``CHANNELS_LAST_MAX`` is read at each call; set to 0 it turns the layout off (the
tests use that to reach the NCHW kernels on small planes). In an A/B of the 224 px
batch 8 training step, 256 pixels (16x16) was level with 784 (28x28) and faster than
3136 (56x56) (figures: docs/kernels.md, "Channels-last layout").
"""
from __future__ import annotations

import math

import numpy as np

from .transpose import transpose_images

CHANNELS_LAST_MAX = 256
"""Planes of up to this many pixels (16x16) are kept channels-last."""


def channels_last_plane(h: int, w: int) -> bool:
    """Do this set's kernels work channels-last on an (h, w) input plane?

    They do on planes of at most ``CHANNELS_LAST_MAX`` pixels.

    Args:
        h: The plane's height.
        w: The plane's width.

    Returns:
        Whether they do.
    """
    return h * w <= CHANNELS_LAST_MAX


def is_channels_last(a: np.ndarray) -> bool:
    """Is the 4-D array ``a`` (N, C, H, W) stored as contiguous (N, H, W, C)?"""
    return a.ndim == 4 and a.transpose(0, 2, 3, 1).flags.c_contiguous


def _fast_copy(a: np.ndarray) -> bool:
    """Is ``a`` a non-empty float array that ``transpose_images`` can copy image by image?"""
    return a.dtype in (np.float32, np.float64) and a.size > 0


def as_channels_last(a: np.ndarray) -> np.ndarray:
    """``a`` itself if channels-last, else a channels-last copy (see ``.transpose``)."""
    if is_channels_last(a):
        return a
    if a.flags.c_contiguous and _fast_copy(a):
        n, c, h, w = a.shape
        out = empty_channels_last(a.shape, a.dtype)
        transpose_images(a.reshape(n, c, h * w), pixels(out))
        return out
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def as_nchw(a: np.ndarray) -> np.ndarray:
    """``a`` itself if C-contiguous (NCHW), else an NCHW copy (transposed image by image)."""
    if a.flags.c_contiguous:
        return a
    if a.ndim == 4 and is_channels_last(a) and _fast_copy(a):
        n, c, h, w = a.shape
        out = np.empty(a.shape, a.dtype)
        transpose_images(pixels(a), out.reshape(n, c, h * w))
        return out
    return np.ascontiguousarray(a)


ALIGNMENT = 64
"""Bytes: a cache line, and one AVX-512 vector."""


def aligned_empty(shape, dtype) -> np.ndarray:
    """``np.empty`` whose first value starts a cache line.

    With rows of a multiple of 64 bytes, every vector ``tile.product`` writes is aligned, so
    it can be streamed.

    Args:
        shape: The shape.
        dtype: The dtype.

    Returns:
        The uninitialised array.
    """
    dtype = np.dtype(dtype)
    # math.prod, not np.prod: on a short tuple np.prod's call overhead was about half of
    # this whole function's time (figures: docs/kernels.md, "Channels-last layout")
    size = math.prod(shape) * dtype.itemsize
    buffer = np.empty(size + ALIGNMENT, np.uint8)
    skip = -buffer.ctypes.data % ALIGNMENT
    return buffer[skip:skip + size].view(dtype).reshape(shape)


def empty_channels_last(shape, dtype) -> np.ndarray:
    """An uninitialised (N, C, H, W) array stored channels-last (and aligned).

    Args:
        shape: (N, C, H, W).
        dtype: The dtype.

    Returns:
        The array, an NCHW view of NHWC memory.
    """
    n, c, h, w = (int(d) for d in shape)
    return aligned_empty((n, h, w, c), dtype).transpose(0, 3, 1, 2)


def rows(a: np.ndarray) -> np.ndarray:
    """The ``(N*H*W, C)`` matrix under ``a``, a channels-last (N, C, H, W) array (a view)."""
    n, c, h, w = a.shape
    return a.transpose(0, 2, 3, 1).reshape(n * h * w, c)


def nhwc(a: np.ndarray) -> np.ndarray:
    """The (N, H, W, C) memory under a channels-last array, for kernels that index it so.

    Args:
        a: (N, C, H, W), in either layout (an NCHW one is copied channels-last first).

    Returns:
        The (N, H, W, C) C-contiguous view.
    """
    return as_channels_last(a).transpose(0, 2, 3, 1)


def pixels(a: np.ndarray) -> np.ndarray:
    """The ``(N, H*W, C)`` view under ``a``, a channels-last (N, C, H, W) array."""
    n, c, h, w = a.shape
    return a.transpose(0, 2, 3, 1).reshape(n, h * w, c)
