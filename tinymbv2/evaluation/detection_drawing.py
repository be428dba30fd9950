"""Detections drawn on their image: a box and a "class score" tag per detection.

``draw_detections(image, detections, class_names)`` returns a Pillow RGB image (saved by
``tinymbv2 predict`` for a detector, shown by the detection chapter). Ground-truth boxes,
when given, are drawn thinner, in grey, under the detections.
"""
from __future__ import annotations

import numpy as np

COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def draw_detections(image, detections: dict, class_names, min_score: float = 0.5,
                    targets: dict | None = None, scale: int = 3):
    """The image with its detections (score >= ``min_score``) drawn on it.

    Args:
        image: (C, H, W) or (H, W) grey levels or RGB in [0, 1] (not normalised).
        detections: ``{"boxes": (D, 4), "scores": (D,), "labels": (D,)}`` in the image's pixels.
        class_names: The name of each class index (index 0, the background, is never drawn).
        min_score: The least score drawn.
        targets: The true ``{"boxes", "labels"}``, drawn in grey; None: not drawn.
        scale: Enlarge the image this many times first, so small boxes and tags stay legible.

    Returns:
        A ``PIL.Image.Image`` in RGB, ``scale`` times the image's size.

    Raises:
        ValueError: An image that is not (H, W), (1, H, W) or (3, H, W).
    """
    from PIL import Image, ImageDraw

    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)
    elif array.ndim != 2:
        raise ValueError(f"draw_detections: expected an image (H, W), (1, H, W) or (3, H, W), "
                         f"got shape {array.shape}")
    pixels = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels.squeeze(), "L" if pixels.ndim == 2 or pixels.shape[2] == 1 else "RGB")
    picture = picture.convert("RGB").resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    if targets is not None:
        for box in np.asarray(targets["boxes"]).reshape(-1, 4):
            draw.rectangle([float(v) * scale for v in box], outline=(150, 150, 150), width=1)
    for box, score, label in zip(detections["boxes"], detections["scores"], detections["labels"]):
        if score < min_score:
            continue
        colour = COLOURS[int(label) % len(COLOURS)]
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        draw.text((x1 + 2, max(0.0, y1 - 11)), f"{class_names[int(label)]} {score:.2f}", fill=colour)
    return picture
