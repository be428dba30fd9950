r"""SSD's default boxes (anchors): a fixed set of boxes, tiled over every feature map.

Feature map $k$ of $m$ (an $f_h \times f_w$ grid) gets boxes of scale

$$
s_k = s_\text{min} + \frac{s_\text{max} - s_\text{min}}{m - 1} k, \qquad k = 0, \dots, m - 1,
\qquad s_m = 1,
$$

as fractions of the image (SSD paper, section 2.2; SSDLite uses $s_\text{min} = 0.2$,
$s_\text{max} = 0.95$), so the early, fine maps hold small boxes and the late, coarse ones
large boxes. At every cell centre $((j + \frac12) / f_w, (i + \frac12) / f_h)$ there are:
a square of side $s_k$, a square of side $\sqrt{s_k s_{k+1}}$, and for each aspect ratio
$r$ a box $s_k\sqrt r \times s_k/\sqrt r$ and its transpose. With ratios $[2, 3]$ that is
6 boxes per cell. Sizes are clipped to [0, 1] (``clip``), then the boxes are scaled to
pixels. Same boxes, in the same order, as torchvision's ``DefaultBoxGenerator``.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DefaultBoxGenerator", "default_boxes_for"]


class DefaultBoxGenerator:
    """The default boxes of an SSD for given feature-map sizes.

    Args:
        aspect_ratios: For each feature map, its extra aspect ratios (SSDLite: ``[[2, 3]] * 6``).
        min_ratio: $s_\\text{min}$, the first map's scale.
        max_ratio: $s_\\text{max}$, the last map's scale.
        scales: The $m + 1$ scales, instead of spacing them from ``min_ratio`` to ``max_ratio``.
        steps: The stride in pixels of each map, instead of ``image size / map size``.
        clip: Clip each box's width and height (as fractions of the image) to [0, 1].

    Raises:
        ValueError: ``steps`` or ``scales`` of a length that does not fit ``aspect_ratios``.
    """

    def __init__(self, aspect_ratios, min_ratio: float = 0.15, max_ratio: float = 0.9,
                 scales=None, steps=None, clip: bool = True):
        m = len(aspect_ratios)
        if m == 0:
            raise ValueError("DefaultBoxGenerator: expected aspect ratios for at least one feature map")
        if steps is not None and len(steps) != m:
            raise ValueError(f"DefaultBoxGenerator: {len(steps)} steps for {m} feature maps")
        if scales is None:
            scales = ([min_ratio + (max_ratio - min_ratio) * k / (m - 1.0) for k in range(m)] + [1.0]
                      if m > 1 else [min_ratio, max_ratio])
        elif len(scales) != m + 1:
            raise ValueError(f"DefaultBoxGenerator: expected {m + 1} scales for {m} feature maps "
                             f"(one more, for the last map's second square), got {len(scales)}")
        self.aspect_ratios = [list(r) for r in aspect_ratios]
        self.scales = [float(s) for s in scales]
        self.steps = steps
        self.clip = clip

    def num_anchors_per_location(self) -> list[int]:
        """Default boxes per cell of each map: two squares and two per aspect ratio.

        Returns:
            One count per feature map.
        """
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def box_sizes(self, k: int) -> np.ndarray:
        """The (width, height) pairs of map ``k``'s boxes, as fractions of the image.

        Args:
            k: The feature map's index.

        Returns:
            A (boxes per cell, 2) array, in the order the boxes are laid out.
        """
        s, s_next = self.scales[k], self.scales[k + 1]
        sizes = [[s, s], [math.sqrt(s * s_next)] * 2]
        for ratio in self.aspect_ratios[k]:
            w, h = s * math.sqrt(ratio), s / math.sqrt(ratio)
            sizes += [[w, h], [h, w]]
        sizes = np.array(sizes)
        return np.clip(sizes, 0, 1) if self.clip else sizes

    def cxcywh(self, image_size, grid_sizes) -> np.ndarray:
        """Every default box as (cx, cy, w, h), fractions of the image.

        Args:
            image_size: The input image's (height, width) in pixels.
            grid_sizes: Each feature map's (height, width), as many as ``aspect_ratios``.

        Returns:
            An (A, 4) array, A = sum over maps of cells x boxes per cell; map by map, cell by
            cell in row-major order, the cell's boxes in ``box_sizes`` order.

        Raises:
            ValueError: A number of grid sizes other than the number of maps.
        """
        if len(grid_sizes) != len(self.aspect_ratios):
            raise ValueError(f"DefaultBoxGenerator: expected {len(self.aspect_ratios)} feature-map "
                             f"sizes, got {len(grid_sizes)}")
        boxes = []
        for k, (f_h, f_w) in enumerate(grid_sizes):
            if self.steps is not None:
                cells_y, cells_x = image_size[0] / self.steps[k], image_size[1] / self.steps[k]
            else:
                cells_y, cells_x = f_h, f_w
            cy, cx = np.meshgrid((np.arange(f_h) + 0.5) / cells_y, (np.arange(f_w) + 0.5) / cells_x,
                                 indexing="ij")
            sizes = self.box_sizes(k)
            centres = np.repeat(np.stack([cx.ravel(), cy.ravel()], axis=1), len(sizes), axis=0)
            boxes.append(np.concatenate([centres, np.tile(sizes, (f_h * f_w, 1))], axis=1))
        return np.concatenate(boxes, axis=0)

    def __call__(self, image_size, grid_sizes) -> np.ndarray:
        """Every default box as ``(x1, y1, x2, y2)`` in pixels.

        Args:
            image_size: The input image's (height, width) in pixels.
            grid_sizes: Each feature map's (height, width).

        Returns:
            An (A, 4) array, in the order of [cxcywh][tinymbv2.detection.default_boxes.DefaultBoxGenerator.cxcywh].
        """
        b = self.cxcywh(image_size, grid_sizes)
        scale = np.array([image_size[1], image_size[0]], dtype=b.dtype)
        return np.concatenate([(b[:, :2] - 0.5 * b[:, 2:]) * scale, (b[:, :2] + 0.5 * b[:, 2:]) * scale], axis=1)

    def __repr__(self) -> str:
        return (f"DefaultBoxGenerator(aspect_ratios={self.aspect_ratios}, scales={self.scales}, "
                f"steps={self.steps}, clip={self.clip})")


def default_boxes_for(model, image_size) -> np.ndarray:
    """The default boxes of a detector (an [SSDLite][tinymbv2.models.ssdlite.SSDLite]) for
    its input size, in the order of its outputs' rows.

    Args:
        model: The detector: its ``aspect_ratios``, ``min_ratio``, ``max_ratio`` and
            ``feature_map_sizes`` lay the boxes out.
        image_size: The input's (height, width) in pixels.

    Returns:
        An (A, 4) array of ``(x1, y1, x2, y2)`` in pixels.
    """
    generator = DefaultBoxGenerator(model.aspect_ratios, model.min_ratio, model.max_ratio)
    return generator(tuple(image_size), model.feature_map_sizes(*image_size))
