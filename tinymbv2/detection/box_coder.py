r"""A box as offsets from its default box, and back (SSD's box encoding).

The network does not predict a box's corners: for each default box $d$ (centre
$d_x, d_y$, size $d_w, d_h$) it predicts how the ground-truth box $g$ differs from it,

$$
t_x = w_x \frac{g_x - d_x}{d_w}, \quad t_y = w_y \frac{g_y - d_y}{d_h}, \quad
t_w = w_w \log \frac{g_w}{d_w}, \quad t_h = w_h \log \frac{g_h}{d_h},
$$

offsets that are about the same size for a small box and a large one. SSD's weights
$(w_x, w_y, w_w, w_h) = (10, 10, 5, 5)$ are its "variances" $(0.1, 0.1, 0.2, 0.2)$ inverted:
they scale the offsets to about unit size. Decoding inverts the formulas, with $t_w, t_h$
clipped at $\log(1000/16)$ so that $e^{t}$ cannot overflow. The arithmetic is
torchvision's ``BoxCoder`` (``models/detection/_utils.py``), step for step.
"""
from __future__ import annotations

import math

import numpy as np

from .boxes import check_boxes

__all__ = ["BoxCoder"]


def _centre_size(b: np.ndarray):
    """Width, height and centre of (A, 4) boxes, in torchvision's order of operations."""
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return w, h, b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h


class BoxCoder:
    """Encode boxes as offsets from reference (default) boxes, and decode them.

    Args:
        weights: $(w_x, w_y, w_w, w_h)$; SSD uses (10, 10, 5, 5).
        bbox_xform_clip: The largest $t_w, t_h$ that decoding exponentiates.

    Raises:
        ValueError: Weights that are not four positive numbers.
    """

    def __init__(self, weights=(10.0, 10.0, 5.0, 5.0), bbox_xform_clip: float = math.log(1000.0 / 16)):
        if len(weights) != 4 or not all(float(w) > 0 for w in weights):
            raise ValueError(f"BoxCoder: expected weights as four positive numbers, got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def encode(self, boxes, reference_boxes) -> np.ndarray:
        """The offsets $t$ of each box from its reference box.

        Args:
            boxes: (A, 4) target boxes $g$ (e.g. the ground truth matched to each default box).
            reference_boxes: (A, 4) default boxes $d$, row for row; every width and height > 0.

        Returns:
            (A, 4) offsets $(t_x, t_y, t_w, t_h)$.

        Raises:
            ValueError: Arrays of other shapes.
        """
        g = check_boxes("BoxCoder.encode", boxes)
        d = check_boxes("BoxCoder.encode", reference_boxes, "reference_boxes")
        if g.shape != d.shape:
            raise ValueError(f"BoxCoder.encode: boxes {g.shape} and reference_boxes {d.shape} "
                             f"must pair row for row")
        wx, wy, ww, wh = self.weights
        d_w, d_h, d_x, d_y = _centre_size(d)
        g_w, g_h, g_x, g_y = _centre_size(g)
        return np.stack([wx * (g_x - d_x) / d_w, wy * (g_y - d_y) / d_h,
                         ww * np.log(g_w / d_w), wh * np.log(g_h / d_h)], axis=1)

    def decode(self, offsets, reference_boxes) -> np.ndarray:
        """The boxes that ``offsets`` describe relative to ``reference_boxes``.

        Args:
            offsets: (A, 4) offsets $(t_x, t_y, t_w, t_h)$ (e.g. the network's box outputs).
            reference_boxes: (A, 4) default boxes, row for row.

        Returns:
            (A, 4) boxes ``(x1, y1, x2, y2)``.

        Raises:
            ValueError: Arrays of other shapes.
        """
        t = check_boxes("BoxCoder.decode", offsets, "offsets")
        d = check_boxes("BoxCoder.decode", reference_boxes, "reference_boxes").astype(t.dtype)
        if t.shape != d.shape:
            raise ValueError(f"BoxCoder.decode: offsets {t.shape} and reference_boxes {d.shape} "
                             f"must pair row for row")
        wx, wy, ww, wh = self.weights
        d_w, d_h, d_x, d_y = _centre_size(d)
        t_x, t_y = t[:, 0] / wx, t[:, 1] / wy
        t_w = np.minimum(t[:, 2] / ww, self.bbox_xform_clip)
        t_h = np.minimum(t[:, 3] / wh, self.bbox_xform_clip)
        x, y = t_x * d_w + d_x, t_y * d_h + d_y
        w, h = np.exp(t_w) * d_w, np.exp(t_h) * d_h
        return np.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], axis=1)
