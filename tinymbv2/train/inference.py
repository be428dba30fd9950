"""Prediction on image files with a trained checkpoint (``tinymbv2 predict``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from .datasets import resize_images
from .job import load_trained


def load_image(path, in_channels: int, size, invert: bool = False) -> np.ndarray:
    """One image file as a float32 (C, H, W) array in [0, 1], resized to ``size`` (h, w).

    MNIST-style models expect a light digit on a dark background; ``invert``
    turns a dark-on-light scan into that.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predict: no image file at {path}")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if in_channels == 1 else "RGB")
            array = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"predict: {path} is not a readable image ({exc})") from exc
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if invert:
        array = 1.0 - array
    if size is not None:
        array = resize_images(array[None], int(size[0]))[0]
    return array


def predict(checkpoint, paths, top_k: int = 3, invert: bool = False) -> list[dict]:
    """Top-k classes with softmax probabilities for each image file."""
    model, cfg = load_trained(checkpoint)
    mean = np.asarray(cfg["norm_mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg["norm_std"], dtype=np.float32).reshape(1, -1, 1, 1)
    batch = np.stack([load_image(p, cfg["in_channels"], cfg.get("input_size"), invert)
                      for p in paths])
    with no_grad():
        probs = F.softmax(model(Tensor((batch - mean) / std)), axis=-1).numpy()
    names = cfg.get("class_names") or [str(i) for i in range(probs.shape[1])]
    results = []
    for path, p in zip(paths, probs):
        order = np.argsort(-p)[:top_k]
        results.append({"path": str(path),
                        "top": [(names[i], float(p[i])) for i in order]})
    return results
