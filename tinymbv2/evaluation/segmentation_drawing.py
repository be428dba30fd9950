r"""Masks drawn in colour: one fixed palette, and a mask blended over its image.

Class 0, the background, is black in ``colour_mask`` and left as it is (transparent) in
``overlay_mask``; class $c \ge 1$ takes ``PALETTE[c]``, the detection drawings' colours in
the same order (an MNIST scene's digit $d$ is class $d + 1$, drawn in the colour its boxes
have), repeating past 10 classes. ``tinymbv2 predict`` saves ``overlay_mask`` of a segmenter's
masks; a run's ``masks.png`` shows test scenes beside their true and predicted masks.
"""
from __future__ import annotations

import numpy as np

from .detection_drawing import COLOURS

PALETTE = ((0, 0, 0),) + COLOURS   # index: class; the background black


def colour_mask(mask, palette=PALETTE) -> np.ndarray:
    r"""Each pixel's class as its colour.

    Args:
        mask: The classes (H, W), integers >= 0.
        palette: RGB triples; class 0 takes the first, class $c \ge 1$ the entry
            $1 + (c - 1) \bmod (P - 1)$ (classes past the palette repeat its colours, never
            the background's).

    Returns:
        uint8 (H, W, 3) RGB.

    Raises:
        ValueError: A mask that is not (H, W) integers >= 0, or a palette of fewer than 2 colours.
    """
    mask = np.asarray(mask)
    colours = np.asarray(palette, dtype=np.uint8)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) < 2:
        raise ValueError(f"colour_mask: expected a palette of at least 2 RGB triples, got shape "
                         f"{colours.shape}")
    if mask.ndim != 2 or (mask.size and not np.issubdtype(mask.dtype, np.integer)):
        raise ValueError(f"colour_mask: expected a mask (H, W) of integer classes, got shape "
                         f"{mask.shape} and dtype {mask.dtype}")
    if mask.size and mask.min() < 0:
        raise ValueError(f"colour_mask: expected classes >= 0, got {int(mask.min())}")
    index = np.where(mask > 0, 1 + (mask.astype(np.int64) - 1) % (len(colours) - 1), 0)
    return colours[index]


def overlay_mask(image, mask, alpha: float = 0.5, palette=PALETTE) -> np.ndarray:
    r"""The mask's colours blended over the image; background pixels keep the image's.

    $\text{out} = \text{round}((1 - \alpha)\, 255\, x + \alpha\, \text{colour})$ where the
    class is not 0, $\text{round}(255\, x)$ where it is.

    Args:
        image: (C, H, W) with C 1 or 3, or (H, W): grey levels or RGB in [0, 1] (not
            normalised; clipped to it).
        mask: The classes (H, W), integers >= 0.
        alpha: The colour's weight $\alpha$ in [0, 1].
        palette: The colours ([colour_mask][tinymbv2.evaluation.segmentation_drawing.colour_mask]).

    Returns:
        uint8 (H, W, 3) RGB.

    Raises:
        ValueError: An image of another shape, one whose size is not the mask's, or an
            ``alpha`` outside [0, 1].
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)
    elif array.ndim == 2:
        array = array[:, :, None]
    else:
        raise ValueError(f"overlay_mask: expected an image (H, W), (1, H, W) or (3, H, W), got "
                         f"shape {np.shape(image)}")
    if array.shape[:2] != np.shape(mask):
        raise ValueError(f"overlay_mask: expected a mask of the image's size {array.shape[:2]}, "
                         f"got {np.shape(mask)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay_mask: expected alpha in [0, 1], got {alpha!r}")
    base = np.broadcast_to(np.clip(array, 0.0, 1.0) * 255.0, array.shape[:2] + (3,))
    blend = (1.0 - alpha) * base + alpha * colour_mask(mask, palette)
    out = np.where((np.asarray(mask) > 0)[:, :, None], blend, base)
    return np.round(out).astype(np.uint8)
